"""ONNX Runtime adapter (runtime "onnxruntime"): CPU execution provider by default."""

import sys

from . import Session, module_version, norm_dtype
from ..errors import ModelLoadFailed, RuntimeMissing, SpecError

INSTALL_HINT = 'pip install onnxruntime (on Jetson: the onnxruntime-gpu wheel for your JetPack)'


class OnnxRuntimeSession(Session):
    """ONNX Runtime: intra-op threads, inter-op 1, all graph optimizations, sequential; CPU EP by default."""

    runtime = "onnxruntime"

    def __init__(self, model_path, threads, options):
        Session.__init__(self)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeMissing("onnxruntime is not importable with %s (%s)" % (sys.executable, exc),
                                 hint=INSTALL_HINT)
        self.version = ort.__version__
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        level = str(options.get("graph_optimization_level", "all"))
        if level not in levels:
            raise SpecError("runtime_options.graph_optimization_level '%s' is not one of %s"
                            % (level, ", ".join(sorted(levels))))
        so.graph_optimization_level = levels[level]
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # graph-cleanup warnings (e.g. unused initializers of old model-zoo graphs) are noise here
        requested = list(options.get("providers") or ["CPUExecutionProvider"])
        available = list(ort.get_available_providers())
        missing = [p for p in requested if p not in available]
        if missing:
            raise SpecError("onnxruntime %s on this device has no %s (available: %s)"
                            % (self.version, ", ".join(missing), ", ".join(available)),
                            hint="install the onnxruntime build with that execution provider, or drop it from "
                                 "runtime_options.providers")
        provider_options = options.get("provider_options")
        try:
            if provider_options:
                self.sess = ort.InferenceSession(model_path, sess_options=so, providers=requested,
                                                 provider_options=provider_options)
            else:
                self.sess = ort.InferenceSession(model_path, sess_options=so, providers=requested)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidProtobuf, ...)
            raise ModelLoadFailed("onnxruntime could not load %s: %s" % (model_path, str(exc).strip()[:2000]),
                                  hint="check that the file is a complete ONNX model (sha256) and that its opset "
                                       "is supported by onnxruntime %s" % self.version)
        self.providers = list(self.sess.get_providers())
        if self.providers and requested and self.providers[0] != requested[0]:
            self.warnings.append("onnxruntime used %s first although %s was requested"
                                 % (self.providers[0], requested[0]))
        self.options = {"graph_optimization_level": level, "inter_op_num_threads": 1,
                        "execution_mode": "sequential", "requested_providers": requested}
        for i in self.sess.get_inputs():
            self.input_details.append({"name": i.name, "shape": list(i.shape), "dtype": norm_dtype(i.type)})
        for o in self.sess.get_outputs():
            self.output_details.append({"name": o.name, "shape": list(o.shape), "dtype": norm_dtype(o.type)})
        self.input_names = [d["name"] for d in self.input_details]
        self.output_names = [d["name"] for d in self.output_details]

    def run(self, feeds):
        return list(self.sess.run(self.output_names, feeds))

    def bind(self, feeds):
        """The timed call: run_with_iobinding with inputs bound once and outputs bound to buffers allocated once,
        so no output allocation or numpy conversion happens per call (as OpenVINO's and TFLite's timed calls).
        Outputs whose shape changes from run to run are bound to ORT-allocated CPU memory instead (said in
        options.timed_region); an onnxruntime without io_binding times plain sess.run (said too)."""
        return bind_timed(self, feeds)


TIMED_IOBINDING = ("onnxruntime run_with_iobinding: inputs bound once, outputs written into OrtValues allocated "
                   "once (no per-call output allocation or numpy conversion)")
TIMED_IOBINDING_ORT_OUT = ("onnxruntime run_with_iobinding: inputs bound once, outputs allocated by ORT on the CPU "
                           "each call (shapes vary per run), not converted to numpy")
TIMED_PLAIN = "onnxruntime sess.run(None, feeds): includes allocating outputs and converting them to numpy"


def bind_timed(session, feeds):
    """(Kept apart from run(): evaluation paths use run().) See OnnxRuntimeSession.bind."""
    from ..common import numpy
    np = numpy()
    sess = session.sess
    for name in session.input_names:
        if name not in feeds:
            raise SpecError("missing feed for onnxruntime input '%s'" % name)
    held = dict((n, np.require(feeds[n], requirements="C")) for n in session.input_names)
    try:
        import onnxruntime as ort
        binding = sess.io_binding()
        run_bound = sess.run_with_iobinding
        OrtValue = ort.OrtValue
        OrtValue.ortvalue_from_numpy  # noqa: B018  (ORT >= 1.8; older: AttributeError -> plain run)
    except AttributeError as exc:
        return _plain(session, held, "onnxruntime %s has no io_binding API (%s)" % (session.version, exc))
    # one plain run gives the output shapes and dtypes; a second tells whether they are stable
    first = sess.run(None, held)
    second = sess.run(None, held)
    if not all(isinstance(a, np.ndarray) and a.dtype.kind not in "OUS" for a in first):
        return _plain(session, held, "an output is not a numeric tensor (sequence, map or string)")
    stable = all(a.shape == b.shape for a, b in zip(first, second))
    keep = [held]
    try:
        for name in session.input_names:
            binding.bind_cpu_input(name, held[name])
        if stable:
            for name, arr in zip(session.output_names, first):
                buf = np.empty(arr.shape, dtype=arr.dtype)
                value = OrtValue.ortvalue_from_numpy(buf)
                keep.append((buf, value))
                binding.bind_ortvalue_output(name, value)
        else:
            for name in session.output_names:
                binding.bind_output(name, "cpu")
    except (RuntimeError, ValueError, TypeError) as exc:  # e.g. an input type io_binding cannot take
        return _plain(session, held, "io_binding refused this model's tensors (%s)" % str(exc).strip()[:300])
    session.options["timed_region"] = TIMED_IOBINDING if stable else TIMED_IOBINDING_ORT_OUT
    session.options["io_binding"] = {"inputs": list(session.input_names),
                                     "outputs_preallocated": bool(stable)}
    session._timed_binding = (binding, keep)  # the bound buffers live as long as the session

    def step():
        run_bound(binding)
    return step


def _plain(session, held, why):
    """The timed call without io_binding: plain sess.run, said in options.timed_region and in a warning."""
    session.options["timed_region"] = TIMED_PLAIN
    session.warnings.append("onnxruntime: %s; timing plain sess.run, which includes output allocation and conversion"
                            % why)
    run = session.sess.run
    return lambda: run(None, held)


def bound_outputs(session):
    """The outputs the last timed call wrote (numpy copies), for checking the io_binding path; None if not bound."""
    bound = getattr(session, "_timed_binding", None)
    if bound is None:
        return None
    return [v.numpy().copy() for v in bound[0].get_outputs()]


SESSION = OnnxRuntimeSession


def import_runtime():
    """Import onnxruntime (timed apart from session creation)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeMissing("onnxruntime is not importable with %s (%s)" % (sys.executable, exc), hint=INSTALL_HINT)
    return onnxruntime


def probe():
    entry = module_version("onnxruntime")
    if entry["available"]:
        import onnxruntime
        entry["providers"] = list(onnxruntime.get_available_providers())
    return {"onnxruntime": entry}
