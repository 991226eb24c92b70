"""TFLite/LiteRT adapter (runtime "tflite"): ai-edge-litert, tflite-runtime or tensorflow.lite, first found."""

import os
import sys

from . import Session, module_version
from ..common import numpy
from ..errors import ModelLoadFailed, RuntimeMissing, SpecError

INSTALL_HINT = 'pip install ai-edge-litert (or tflite-runtime on older devices)'


def import_runtime():
    errors = []
    try:
        from ai_edge_litert.interpreter import Interpreter
        import ai_edge_litert
        return Interpreter, "ai_edge_litert", getattr(ai_edge_litert, "__version__", "unknown")
    except ImportError as exc:
        errors.append("ai_edge_litert: %s" % exc)
    try:
        from tflite_runtime.interpreter import Interpreter
        import tflite_runtime
        return Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "unknown")
    except ImportError as exc:
        errors.append("tflite_runtime: %s" % exc)
    try:
        import tensorflow as tf
        return tf.lite.Interpreter, "tensorflow.lite", tf.__version__
    except ImportError as exc:
        errors.append("tensorflow: %s" % exc)
    raise RuntimeMissing("no TFLite interpreter is importable with %s (%s)" % (sys.executable, "; ".join(errors)),
                         hint=INSTALL_HINT)


class TfliteSession(Session):
    """TFLite (LiteRT): num_threads=threads, default delegates (XNNPACK); resizes inputs; (de)quantizes int8/uint8."""

    runtime = "tflite"

    def __init__(self, model_path, threads, options):
        Session.__init__(self)
        Interpreter, module, version = import_runtime()
        self.version = str(version)
        self.providers = ["XNNPACK (default delegate)"]
        if not os.path.isfile(model_path):
            raise ModelLoadFailed("model file not found: %s" % model_path)
        try:
            self.interp = Interpreter(model_path=model_path, num_threads=int(threads))
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadFailed("%s could not load %s: %s" % (module, model_path, str(exc).strip()[:2000]))
        self.options = {"interpreter_module": module, "num_threads": int(threads)}
        shapes = options.get("input_shapes") or {}
        resized = {}
        for d in self.interp.get_input_details():
            want = shapes.get(d["name"])
            if want is not None and list(want) != [int(x) for x in d["shape"]]:
                self.interp.resize_tensor_input(d["index"], [int(x) for x in want])
                resized[d["name"]] = list(want)
        if resized:
            self.options["resized_inputs"] = resized
        try:
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadFailed("%s could not allocate tensors for %s: %s" % (module, model_path, exc))
        self._in = self.interp.get_input_details()
        self._out = self.interp.get_output_details()
        self._quantized_in = {}
        self._quantized_out = {}
        for d in self._in:
            sig = d.get("shape_signature")
            shape = [int(x) for x in d["shape"]]
            if sig is not None and d["name"] not in resized:
                shape = [int(s) if int(s) >= 0 else None for s in sig]
            dtype = numpy().dtype(d["dtype"]).name
            q = _tflite_qparams(d)
            if q and dtype in ("int8", "uint8", "int16"):
                self._quantized_in[d["name"]] = q
            self.input_details.append({"name": d["name"], "shape": shape, "dtype": dtype,
                                       "quantization": list(q) if q else None})
        for d in self._out:
            dtype = numpy().dtype(d["dtype"]).name
            q = _tflite_qparams(d)
            if q and dtype in ("int8", "uint8", "int16"):
                self._quantized_out[d["name"]] = q
            self.output_details.append({"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": dtype})
        self.input_names = [d["name"] for d in self.input_details]
        self.output_names = [d["name"] for d in self.output_details]
        if self._quantized_out:
            self.options["dequantized_outputs"] = sorted(self._quantized_out)
        self._quantized_feeds = set()

    def _resize_to(self, feeds):
        """Resize inputs whose feed shape differs from the allocated one (e.g. fidelity feeds), then re-allocate."""
        changed = False
        for d in self._in:
            arr = feeds.get(d["name"])
            if arr is not None and list(arr.shape) != [int(x) for x in d["shape"]]:
                self.interp.resize_tensor_input(d["index"], list(arr.shape))
                self.options.setdefault("resized_inputs", {})[d["name"]] = list(arr.shape)
                changed = True
        if changed:
            try:
                self.interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise SpecError("TFLite cannot run with input shapes %s: %s"
                                % (self.options["resized_inputs"], exc))
            self._in = self.interp.get_input_details()
            self._out = self.interp.get_output_details()

    def _prepare(self, feeds):
        np = numpy()
        self._resize_to(feeds)
        for d in self._in:
            name = d["name"]
            if name not in feeds:
                raise SpecError("missing feed for tflite input '%s'" % name)
            arr = feeds[name]
            want = np.dtype(d["dtype"])
            if name in self._quantized_in and arr.dtype.kind == "f":
                arr = quantize_array(arr, self._quantized_in[name], want)
                self._quantized_feeds.add(name)
                self.options["quantized_inputs"] = sorted(self._quantized_feeds)
            elif arr.dtype != want:
                arr = arr.astype(want)
            self.interp.set_tensor(d["index"], np.require(arr, requirements="C"))

    def _outputs(self):
        out = []
        for d in self._out:
            arr = self.interp.get_tensor(d["index"])
            if d["name"] in self._quantized_out:
                arr = dequantize_array(arr, self._quantized_out[d["name"]])
            else:
                arr = arr.copy()  # get_tensor returns a view the next invoke overwrites
            out.append(arr)
        return out

    def run(self, feeds):
        self._prepare(feeds)
        self.interp.invoke()
        return self._outputs()

    def bind(self, feeds):
        """The timed call: Interpreter.invoke() after set_tensor once; outputs are not read per call."""
        self._prepare(feeds)
        self.options["timed_region"] = TIMED_INVOKE
        return self.interp.invoke


TIMED_INVOKE = "tflite Interpreter.invoke(): inputs set once with set_tensor, outputs not read per call"


def quantize_array(arr, qparams, dtype):
    """TFLite affine quantization: q = clip(round(x / scale) + zero_point) in the integer dtype's range."""
    np = numpy()
    scale, zp = qparams
    dt = np.dtype(dtype)
    info = np.iinfo(dt)
    return np.clip(np.round(np.asarray(arr, dtype=np.float64) / scale) + zp, info.min, info.max).astype(dt)


def dequantize_array(arr, qparams):
    """x = (q - zero_point) * scale, as float32."""
    np = numpy()
    scale, zp = qparams
    return ((arr.astype(np.float32) - np.float32(zp)) * np.float32(scale)).astype(np.float32)


def _tflite_qparams(detail):
    """(scale, zero_point) of a per-tensor quantized TFLite tensor, else None."""
    q = detail.get("quantization")
    if q and len(q) == 2 and q[0]:
        return float(q[0]), int(q[1])
    qp = detail.get("quantization_parameters") or {}
    scales = qp.get("scales")
    if scales is not None and len(scales) == 1 and scales[0]:
        return float(scales[0]), int(qp["zero_points"][0])
    return None


SESSION = TfliteSession


def probe():
    return {"ai_edge_litert": module_version("ai_edge_litert"), "tflite_runtime": module_version("tflite_runtime")}
