"""OpenVINO adapter (runtime "openvino"): an IR (.xml + .bin) compiled for the CPU plugin."""

import sys

from . import Session, module_version, norm_dtype
from ..common import numpy
from ..errors import ModelLoadFailed, RuntimeMissing, SpecError

INSTALL_HINT = 'pip install openvino'


def import_runtime():
    try:
        import openvino as ov
        if hasattr(ov, "Core"):
            return ov, ov.Core, ov.Tensor, getattr(ov, "__version__", None) or ov.get_version()
    except ImportError:
        pass
    try:  # OpenVINO 2022.1 - 2023.0
        from openvino.runtime import Core, Tensor, get_version
        return None, Core, Tensor, get_version()
    except ImportError as exc:
        raise RuntimeMissing("openvino is not importable with %s (%s)" % (sys.executable, exc),
                             hint=INSTALL_HINT)


class OpenVinoSession(Session):
    """OpenVINO: LATENCY hint, INFERENCE_NUM_THREADS=threads, NUM_STREAMS=1, one InferRequest."""

    runtime = "openvino"

    def __init__(self, model_path, threads, options):
        Session.__init__(self)
        _ov, Core, Tensor, version = import_runtime()
        self._Tensor = Tensor
        self.version = str(version)
        device = str(options.get("device", "CPU"))
        core = Core()
        try:
            model = core.read_model(model_path)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with the parser message
            raise ModelLoadFailed("openvino could not read %s: %s" % (model_path, str(exc).strip()[:2000]),
                                  hint="an IR needs both the .xml and its .bin next to it")
        shapes = options.get("input_shapes") or {}
        if shapes:
            reshape = {}
            for port in model.inputs:
                names = set(port.get_names())
                for name, shape in shapes.items():
                    if name in names:
                        ps = port.get_partial_shape()
                        if ps.is_dynamic or [d.get_length() for d in ps] != list(shape):
                            reshape[port.get_any_name()] = list(shape)
            if reshape:
                try:
                    model.reshape(reshape)
                except Exception as exc:
                    raise SpecError("openvino cannot reshape %s to %s: %s" % (model_path, reshape, exc))
                self.options["reshaped"] = reshape
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1}
        if options.get("inference_precision_hint"):
            config["INFERENCE_PRECISION_HINT"] = str(options["inference_precision_hint"])
        for k, v in (options.get("config") or {}).items():
            config[str(k)] = v
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise ModelLoadFailed("openvino could not compile %s for %s: %s"
                                  % (model_path, device, str(exc).strip()[:2000]))
        self.request = self.compiled.create_infer_request()
        self.providers = [device]
        self.options.update({"device": device, "config": dict((k, str(v)) for k, v in config.items())})
        for key in ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT"):
            try:
                self.options.setdefault("compiled", {})[key] = str(self.compiled.get_property(key))
            except Exception:  # property not exposed by this device plugin/version: simply not reported
                self.options.setdefault("compiled", {})[key] = None
        self._in_ports = list(self.compiled.inputs)
        self._out_ports = list(self.compiled.outputs)
        for p in self._in_ports:
            self.input_details.append({"name": p.get_any_name(), "shape": _ov_shape(p.get_partial_shape()),
                                       "dtype": norm_dtype(p.get_element_type())})
        for p in self._out_ports:
            self.output_details.append({"name": p.get_any_name(), "shape": _ov_shape(p.get_partial_shape()),
                                        "dtype": norm_dtype(p.get_element_type())})
        self.input_names = [d["name"] for d in self.input_details]
        self.output_names = [d["name"] for d in self.output_details]

    def _set_inputs(self, feeds):
        np = numpy()
        for port, name in zip(self._in_ports, self.input_names):
            if name not in feeds:
                raise SpecError("missing feed for openvino input '%s'" % name)
            arr = np.require(feeds[name], requirements="C")  # not ascontiguousarray: it makes a rank-0 input 1-d
            self.request.set_tensor(port, self._Tensor(arr))

    def run(self, feeds):
        self._set_inputs(feeds)
        self.request.infer()
        return [self.request.get_tensor(p).data.copy() for p in self._out_ports]

    def bind(self, feeds):
        """The timed call: start_async() + wait() on the one InferRequest with its input tensors set once. Not
        infer(): its Python wrapper copies every output into a new numpy array per call (share_outputs=False)."""
        return bind_timed(self, feeds)


TIMED_ASYNC = ("openvino InferRequest.start_async() + wait(): input tensors set once, outputs stay in the request's "
               "tensors (no per-call copy)")


def bind_timed(session, feeds):
    """(Kept apart from run(): evaluation paths use run().) See OpenVinoSession.bind."""
    session._set_inputs(feeds)
    request = session.request
    start, wait = request.start_async, request.wait
    session.options["timed_region"] = TIMED_ASYNC

    def step():
        start()
        wait()
    return step


def _ov_shape(ps):
    out = []
    for d in ps:
        out.append(d.get_length() if d.is_static else None)
    return out


SESSION = OpenVinoSession


def probe():
    entry = module_version("openvino")
    if entry["available"] and entry["version"] == "None":
        try:
            from openvino.runtime import get_version
            entry["version"] = str(get_version())
        except ImportError:
            entry["version"] = "unknown"
    return {"openvino": entry}
