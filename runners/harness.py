#!/usr/bin/env python3
"""edgekit on-device harness: load a model with its runtime, time it, measure memory/energy/thermal, print JSON.

Runs ON THE DEVICE. One self-contained file: standard library + numpy + the runtime only; Python >= 3.6
(Jetson Nano / JetPack 4). It never imports edgekit. The host imports it in-process too (its runtime adapters
serve fidelity checks) via edgekit.core.registry.harness_module().

Usage:
    python3 harness.py SPEC.json      (or `-` to read the spec from stdin)  -> one JSON BenchmarkResult on stdout
    python3 harness.py --probe                                              -> one JSON probe document on stdout

Progress goes to stderr as `EDGEKIT-PROGRESS {json}` lines; a failure as one `EDGEKIT-ERROR {json}` line
(kind, message, hint). Exit codes: 0 ok, 2 bad spec/inputs, 3 runtime missing, 4 model load failed, 1 other.

Measurement rules (documented here because users trust these numbers):
  * load_ms: session creation only (runtime import time is reported in runtime.options.import_ms).
  * first_inference_ms: the first call of the same bound inference callable the timed loop uses.
  * warm-up runs until BOTH warmup_runs and warmup_seconds are satisfied.
  * timed runs until BOTH min_runs and min_seconds are satisfied, capped at max_seconds (warning if cut short).
  * each sample is the wall time (time.perf_counter) of one bare runtime call, inputs bound once beforehand
    (ORT: sess.run; OpenVINO: InferRequest.infer; TFLite: invoke; TensorRT: H2D copy + execute + D2H + sync).
  * stats via numpy: mean, median, p90/p99 by linear interpolation between closest ranks (numpy's default
    percentile method), min, max, std with ddof=1 (sample std; 0 for a single run).
  * throughput_ips = runs / timed duration (first timed call start to last timed call end).
  * peak RSS: max of getrusage(RUSAGE_SELF).ru_maxrss and /proc/self/status VmHWM (whole process: interpreter,
    numpy and runtime included). RSS before/after load from /proc/self/status VmRSS.
  * energy: sampled in a background thread; the idle baseline is measured first (idle_seconds, no inference),
    then power is averaged over exactly the timed window. Never estimated: if no sensor, available=false + reason.
"""

import glob
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time

HARNESS_VERSION = 1
SCHEMA_VERSION = 1

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_SPEC = 2
EXIT_RUNTIME_MISSING = 3
EXIT_MODEL_LOAD = 4

RUNTIMES = ("onnxruntime", "openvino", "tflite", "tensorrt")
ENERGY_SOURCES = ("none", "tegrastats", "ina3221", "vcgencmd_pmic", "android_battery", "rapl")

_np = None  # numpy, imported lazily so `--probe` and error reporting work even without it


# ----------------------------------------------------------------------------------------------------------
# Errors


class HarnessError(Exception):
    """A failure the host turns into a typed error: kind, message, hint and exit code."""

    exit_code = EXIT_OTHER
    kind = "error"

    def __init__(self, message, hint=None):
        Exception.__init__(self, message)
        self.message = message
        self.hint = hint

    def to_dict(self):
        return {"kind": self.kind, "message": self.message, "hint": self.hint, "exit_code": self.exit_code}


class SpecError(HarnessError):
    """The spec (or the inputs it names) is malformed or does not match the model."""

    exit_code = EXIT_SPEC
    kind = "spec"


class RuntimeMissing(HarnessError):
    """The requested runtime (or numpy) cannot be imported on this device."""

    exit_code = EXIT_RUNTIME_MISSING
    kind = "runtime_missing"


class ModelLoadFailed(HarnessError):
    """The model file is missing or the runtime refused to load it."""

    exit_code = EXIT_MODEL_LOAD
    kind = "model_load"


class Interrupted(HarnessError):
    """Ctrl-C, SIGTERM or SIGHUP (e.g. the SSH session dropped) stopped the run."""

    exit_code = 130
    kind = "interrupted"


class InferenceFailed(HarnessError):
    """The runtime loaded the model but an inference call failed."""

    exit_code = EXIT_OTHER
    kind = "inference"


def numpy():
    """Import numpy once; missing numpy is a missing-runtime error with the pip hint."""
    global _np
    if _np is None:
        try:
            import numpy as np
        except ImportError as exc:
            raise RuntimeMissing("numpy is not importable with %s (%s)" % (sys.executable, exc),
                                 hint="pip install numpy")
        _np = np
    return _np


def _progress(phase, **fields):
    """One machine-readable progress line on stderr."""
    doc = {"phase": phase}
    doc.update(fields)
    try:
        sys.stderr.write("EDGEKIT-PROGRESS " + json.dumps(doc) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed by the parent: progress is optional
        pass


# ----------------------------------------------------------------------------------------------------------
# Small file helpers


def _read_text(path, default=None):
    try:
        with open(path, "r") as fh:
            return fh.read().strip()
    except (OSError, IOError, UnicodeDecodeError):
        return default


def _read_number(path):
    text = _read_text(path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _proc_status_kib(field):
    """A `VmRSS:   1234 kB` style value from /proc/self/status, in KiB (None off Linux)."""
    text = _read_text("/proc/self/status")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            try:
                return int(parts[1])
            except (IndexError, ValueError):
                return None
    return None


def _which(name):
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _run_cmd(argv, timeout=5.0):
    """Run a short command; return (rc, stdout, stderr) or (None, '', reason) if it cannot run."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)
    except OSError as exc:
        return None, "", str(exc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, "", "timed out after %.0f s" % timeout
    return proc.returncode, out, err


def model_files(model_path, model_format=None):
    """Files that make up the model on disk (OpenVINO: .xml + .bin; a directory: every file in it)."""
    if os.path.isdir(model_path):
        out = []
        for root, _dirs, files in os.walk(model_path):
            for f in files:
                out.append(os.path.join(root, f))
        return sorted(out)
    files = [model_path]
    if model_path.endswith(".xml") or model_format == "openvino":
        bin_path = os.path.splitext(model_path)[0] + ".bin"
        if os.path.isfile(bin_path):
            files.append(bin_path)
    return files


def model_size_bytes(model_path, model_format=None):
    total = 0
    for f in model_files(model_path, model_format):
        try:
            total += os.path.getsize(f)
        except OSError:
            pass
    return total


# ----------------------------------------------------------------------------------------------------------
# Runtime adapters: open_session(runtime, model_path, threads, options) -> session
#
# A session has .input_names, .output_names, .input_details ([{name, shape, dtype}]), .run(feeds) -> list of
# arrays in output order, .bind(feeds) -> zero-argument callable doing one bare inference (used by the timed
# loop), .version, .providers, .options (what was actually configured), .warnings.

_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "bool_": "bool"}


def _norm_dtype(dt):
    """A numpy dtype name from numpy dtypes, ORT's 'tensor(float)', OpenVINO element types and strings."""
    np = numpy()
    s = str(dt)
    m = re.match(r"tensor\((\w+)\)", s)
    if m:
        s = m.group(1)
    s = _DTYPE_ALIASES.get(s, s)
    try:
        return np.dtype(s).name
    except TypeError:
        pass
    ov_map = {"f32": "float32", "f16": "float16", "f64": "float64", "i8": "int8", "u8": "uint8", "i16": "int16",
              "u16": "uint16", "i32": "int32", "u32": "uint32", "i64": "int64", "u64": "uint64", "boolean": "bool"}
    key = s.replace("<Type: '", "").replace("'>", "").strip().lower()
    for k, v in ov_map.items():
        if key == k or key.startswith(k + " ") or key.endswith("'" + k):
            return v
    for v in ov_map.values():
        if v in key:
            return v
    return s


class Session(object):
    """Base of the runtime adapters; subclasses fill the fields and implement run/bind."""

    runtime = "?"

    def __init__(self):
        self.input_names = []
        self.output_names = []
        self.input_details = []
        self.output_details = []
        self.version = "unknown"
        self.providers = []
        self.options = {}
        self.warnings = []

    def run(self, feeds):
        raise NotImplementedError

    def bind(self, feeds):
        """Return a callable doing one inference on these feeds with no per-call conversion."""
        return lambda: self.run(feeds)

    def close(self):
        pass


def _import_error_hint(runtime):
    return {
        "onnxruntime": "pip install onnxruntime (on Jetson: the onnxruntime-gpu wheel for your JetPack)",
        "openvino": "pip install openvino",
        "tflite": "pip install ai-edge-litert (or tflite-runtime on older devices)",
        "tensorrt": "TensorRT comes with JetPack: use the system python3 (/usr/bin/python3) that has the tensorrt "
                    "module, and pip install cuda-python (or pycuda)",
    }.get(runtime, "install the runtime's Python package")


class OnnxRuntimeSession(Session):
    """ONNX Runtime: intra-op threads, inter-op 1, all graph optimizations, sequential; CPU EP by default."""

    runtime = "onnxruntime"

    def __init__(self, model_path, threads, options):
        Session.__init__(self)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeMissing("onnxruntime is not importable with %s (%s)" % (sys.executable, exc),
                                 hint=_import_error_hint("onnxruntime"))
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
            self.input_details.append({"name": i.name, "shape": list(i.shape), "dtype": _norm_dtype(i.type)})
        for o in self.sess.get_outputs():
            self.output_details.append({"name": o.name, "shape": list(o.shape), "dtype": _norm_dtype(o.type)})
        self.input_names = [d["name"] for d in self.input_details]
        self.output_names = [d["name"] for d in self.output_details]

    def run(self, feeds):
        return list(self.sess.run(self.output_names, feeds))

    def bind(self, feeds):
        # Exactly what a bare benchmark loop does: sess.run(None, feeds) with a prepared dict.
        run = self.sess.run
        return lambda: run(None, feeds)


def _import_openvino():
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
                             hint=_import_error_hint("openvino"))


class OpenVinoSession(Session):
    """OpenVINO: LATENCY hint, INFERENCE_NUM_THREADS=threads, NUM_STREAMS=1, one InferRequest."""

    runtime = "openvino"

    def __init__(self, model_path, threads, options):
        Session.__init__(self)
        _ov, Core, Tensor, version = _import_openvino()
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
                                       "dtype": _norm_dtype(p.get_element_type())})
        for p in self._out_ports:
            self.output_details.append({"name": p.get_any_name(), "shape": _ov_shape(p.get_partial_shape()),
                                        "dtype": _norm_dtype(p.get_element_type())})
        self.input_names = [d["name"] for d in self.input_details]
        self.output_names = [d["name"] for d in self.output_details]

    def _set_inputs(self, feeds):
        np = numpy()
        for port, name in zip(self._in_ports, self.input_names):
            if name not in feeds:
                raise SpecError("missing feed for openvino input '%s'" % name)
            arr = np.asarray(feeds[name], order="C")  # not ascontiguousarray: it turns a rank-0 scalar into shape (1,)
            self.request.set_tensor(port, self._Tensor(arr))

    def run(self, feeds):
        self._set_inputs(feeds)
        self.request.infer()
        return [self.request.get_tensor(p).data.copy() for p in self._out_ports]

    def bind(self, feeds):
        self._set_inputs(feeds)
        return self.request.infer


def _ov_shape(ps):
    out = []
    for d in ps:
        out.append(d.get_length() if d.is_static else None)
    return out


def _import_tflite():
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
                         hint=_import_error_hint("tflite"))


class TfliteSession(Session):
    """TFLite (LiteRT): num_threads=threads, default delegates (XNNPACK); resizes inputs; (de)quantizes int8/uint8."""

    runtime = "tflite"

    def __init__(self, model_path, threads, options):
        Session.__init__(self)
        Interpreter, module, version = _import_tflite()
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
            self.interp.set_tensor(d["index"], np.asarray(arr, order="C"))

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
        self._prepare(feeds)
        return self.interp.invoke


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


def _import_cuda():
    """(name, module) of the CUDA binding: cuda-python's runtime API or pycuda."""
    errors = []
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return "cuda-python", cudart
    except ImportError as exc:
        errors.append("cuda.bindings: %s" % exc)
    try:
        from cuda import cudart  # older cuda-python
        return "cuda-python", cudart
    except ImportError as exc:
        errors.append("cuda.cudart: %s" % exc)
    try:
        import pycuda.driver as pycuda_driver
        import pycuda.autoinit  # noqa: F401  (creates the context)
        return "pycuda", pycuda_driver
    except ImportError as exc:
        errors.append("pycuda: %s" % exc)
    raise RuntimeMissing("TensorRT needs a CUDA binding, none importable with %s (%s)"
                         % (sys.executable, "; ".join(errors)),
                         hint="pip install cuda-python (matching your CUDA version) or pycuda")


class _Cuda(object):
    """Minimal device memory + stream helper over cuda-python's cudart or pycuda."""

    def __init__(self):
        self.kind, self.mod = _import_cuda()
        if self.kind == "cuda-python":
            self.stream = self._check(self.mod.cudaStreamCreate())
        else:
            self.stream = self.mod.Stream()

    def _check(self, result):
        err = result[0]
        if int(err) != 0:
            raise InferenceFailed("CUDA call failed: %s" % (err,))
        return result[1] if len(result) == 2 else result[1:]

    @property
    def stream_handle(self):
        return int(self.stream) if self.kind == "cuda-python" else self.stream.handle

    def malloc(self, nbytes):
        if self.kind == "cuda-python":
            return int(self._check(self.mod.cudaMalloc(max(int(nbytes), 1))))
        return self.mod.mem_alloc(max(int(nbytes), 1))

    def ptr(self, mem):
        return int(mem)

    def htod(self, mem, arr):
        if self.kind == "cuda-python":
            self._check(self.mod.cudaMemcpyAsync(int(mem), arr.ctypes.data, arr.nbytes,
                                                 self.mod.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        else:
            self.mod.memcpy_htod_async(mem, arr, self.stream)

    def dtoh(self, arr, mem):
        if self.kind == "cuda-python":
            self._check(self.mod.cudaMemcpyAsync(arr.ctypes.data, int(mem), arr.nbytes,
                                                 self.mod.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        else:
            self.mod.memcpy_dtoh_async(arr, mem, self.stream)

    def sync(self):
        if self.kind == "cuda-python":
            self._check(self.mod.cudaStreamSynchronize(self.stream))
        else:
            self.stream.synchronize()

    def free(self, mem):
        if self.kind == "cuda-python":
            self.mod.cudaFree(int(mem))
        else:
            mem.free()


class TensorRtSession(Session):
    """TensorRT engine: execute_async_v3 + set_tensor_address (TRT >= 8.5), else execute_v2 with bindings."""

    runtime = "tensorrt"

    def __init__(self, model_path, threads, options):
        Session.__init__(self)
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise RuntimeMissing("the tensorrt Python module is not importable with %s (%s)" % (sys.executable, exc),
                                 hint=_import_error_hint("tensorrt"))
        np = numpy()
        self.trt = trt
        self.version = trt.__version__
        self.cuda = _Cuda()
        self.providers = ["TensorRT", self.cuda.kind]
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")
        if not os.path.isfile(model_path):
            raise ModelLoadFailed("engine file not found: %s" % model_path)
        with open(model_path, "rb") as fh:
            blob = fh.read()
        self.runtime_obj = trt.Runtime(self.logger)
        try:
            self.engine = self.runtime_obj.deserialize_cuda_engine(blob)
        except Exception as exc:  # TensorRT raises its own types on some versions, returns None on others
            raise ModelLoadFailed("TensorRT %s could not deserialize %s: %s" % (self.version, model_path, exc),
                                  hint="a TensorRT engine only loads with the TensorRT version and GPU it was "
                                       "built for; rebuild it on this device")
        if self.engine is None:
            raise ModelLoadFailed("TensorRT %s could not deserialize %s" % (self.version, model_path),
                                  hint="a TensorRT engine only loads with the TensorRT version and GPU it was built "
                                       "for; rebuild it on this device")
        self.context = self.engine.create_execution_context()
        self.v3 = hasattr(self.engine, "num_io_tensors") and hasattr(self.context, "execute_async_v3")
        self.options = {"api": "execute_async_v3" if self.v3 else "execute_v2", "cuda_binding": self.cuda.kind,
                        "timing_includes": "host-to-device copy, execute, device-to-host copy, stream sync"}
        shapes = options.get("input_shapes") or {}
        self._io = []  # (name, is_input, shape, np dtype, binding index)
        if self.v3:
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                shape = list(self.engine.get_tensor_shape(name))
                if is_in and name in shapes and any(d < 0 for d in shape):
                    self.context.set_input_shape(name, tuple(shapes[name]))
                self._io.append([name, is_in, shape, dtype, i])
            for io in self._io:
                io[2] = list(self.context.get_tensor_shape(io[0]))
        else:
            for i in range(self.engine.num_bindings):
                name = self.engine.get_binding_name(i)
                is_in = self.engine.binding_is_input(i)
                dtype = np.dtype(trt.nptype(self.engine.get_binding_dtype(i)))
                shape = list(self.engine.get_binding_shape(i))
                if is_in and name in shapes and any(d < 0 for d in shape):
                    self.context.set_binding_shape(i, tuple(shapes[name]))
                self._io.append([name, is_in, shape, dtype, i])
            for io in self._io:
                io[2] = list(self.context.get_binding_shape(io[4]))
        self._dev = {}
        self._host_out = {}
        for name, is_in, shape, dtype, _i in self._io:
            if any(d < 0 for d in shape):
                raise SpecError("TensorRT tensor '%s' has dynamic shape %s; give its shape in spec.inputs"
                                % (name, shape))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self._dev[name] = self.cuda.malloc(nbytes)
            if not is_in:
                self._host_out[name] = np.empty(shape, dtype=dtype)
            if self.v3:
                self.context.set_tensor_address(name, self.cuda.ptr(self._dev[name]))
            (self.input_details if is_in else self.output_details).append(
                {"name": name, "shape": shape, "dtype": dtype.name})
        self._bindings = [self.cuda.ptr(self._dev[io[0]]) for io in sorted(self._io, key=lambda x: x[4])]
        self.input_names = [d["name"] for d in self.input_details]
        self.output_names = [d["name"] for d in self.output_details]

    def _execute(self):
        if self.v3:
            if not self.context.execute_async_v3(self.cuda.stream_handle):
                raise InferenceFailed("TensorRT execute_async_v3 returned False")
        else:
            if not self.context.execute_v2(self._bindings):
                raise InferenceFailed("TensorRT execute_v2 returned False")

    def bind(self, feeds):
        np = numpy()
        host_in = []
        for d in self.input_details:
            if d["name"] not in feeds:
                raise SpecError("missing feed for TensorRT input '%s'" % d["name"])
            arr = np.asarray(feeds[d["name"]], dtype=d["dtype"], order="C")
            if list(arr.shape) != list(d["shape"]):  # the device buffer has exactly this size
                raise SpecError("TensorRT input '%s' is %s in the engine but the feed is %s"
                                % (d["name"], d["shape"], list(arr.shape)))
            host_in.append((self._dev[d["name"]], arr))
        host_out = [(self._host_out[d["name"]], self._dev[d["name"]]) for d in self.output_details]
        cuda = self.cuda
        execute = self._execute

        v3 = self.v3

        def step():
            for mem, arr in host_in:
                cuda.htod(mem, arr)
            if not v3:
                cuda.sync()  # execute_v2 is synchronous and not on our stream: inputs must have landed
            execute()
            for arr, mem in host_out:
                cuda.dtoh(arr, mem)
            cuda.sync()
        return step

    def run(self, feeds):
        self.bind(feeds)()
        return [self._host_out[n].copy() for n in self.output_names]

    def close(self):
        for mem in self._dev.values():
            self.cuda.free(mem)
        self._dev = {}


_ADAPTERS = {"onnxruntime": OnnxRuntimeSession, "openvino": OpenVinoSession, "tflite": TfliteSession,
             "tensorrt": TensorRtSession}


def open_session(runtime, model_path, threads, options=None):
    """Open `model_path` with `runtime`; raises RuntimeMissing / ModelLoadFailed / SpecError on failure."""
    if runtime not in _ADAPTERS:
        raise SpecError("unknown runtime '%s'; expected one of %s" % (runtime, ", ".join(RUNTIMES)))
    if not os.path.exists(model_path):
        raise ModelLoadFailed("model file not found: %s" % model_path,
                              hint="push the artifact to the device first (the runner's push step)")
    numpy()
    return _ADAPTERS[runtime](model_path, int(threads), dict(options or {}))


# ----------------------------------------------------------------------------------------------------------
# Spec validation (mirrors edgekit/core/runner_interface.py HarnessSpec; no pydantic on the device)

_SPEC_FIELDS = {
    "model_path": (str, None), "model_format": (str, None), "runtime": (str, None),
    "sha256": ((str, type(None)), None), "precision": ((str, type(None)), None), "threads": (int, 1),
    "inputs": (list, []), "inputs_file": ((str, type(None)), None), "seed": (int, 0),
    "warmup_runs": (int, 10), "warmup_seconds": ((int, float), 1.0), "min_runs": (int, 50),
    "min_seconds": ((int, float), 5.0), "max_seconds": ((int, float), 120.0), "energy_source": (str, "none"),
    "energy_rails": (list, []), "energy_interval_ms": (int, 100), "idle_seconds": ((int, float), 2.0),
    "thermal_zones": (list, []), "runtime_options": (dict, {}),
    # Not (yet) in HarnessSpec: sensor overrides (sysfs root, sensor command) so tests can use captured layouts.
    "energy_options": (dict, {}),
}
_REQUIRED = ("model_path", "model_format", "runtime")
_INPUT_FIELDS = ("name", "shape", "dtype", "low", "high")


def validate_spec(doc):
    """Check types and fill defaults; raise SpecError naming the field."""
    if not isinstance(doc, dict):
        raise SpecError("the spec must be a JSON object, got %s" % type(doc).__name__)
    unknown = sorted(set(doc) - set(_SPEC_FIELDS))
    if unknown:
        raise SpecError("unknown spec field(s): %s" % ", ".join(unknown),
                        hint="the host's edgekit and this harness disagree; push the harness again")
    spec = {}
    for key, (types, default) in _SPEC_FIELDS.items():
        if key not in doc:
            if key in _REQUIRED:
                raise SpecError("spec field '%s' is required" % key)
            spec[key] = json.loads(json.dumps(default))
            continue
        val = doc[key]
        if isinstance(val, bool) and types in (int, (int, float)):
            raise SpecError("spec field '%s' must be a number, got %r" % (key, val))
        if not isinstance(val, types):
            raise SpecError("spec field '%s' has the wrong type (%s)" % (key, type(val).__name__))
        spec[key] = val
    if spec["runtime"] not in RUNTIMES:
        raise SpecError("spec field 'runtime' is '%s'; expected one of %s" % (spec["runtime"], ", ".join(RUNTIMES)))
    if spec["energy_source"] not in ENERGY_SOURCES:
        raise SpecError("spec field 'energy_source' is '%s'; expected one of %s"
                        % (spec["energy_source"], ", ".join(ENERGY_SOURCES)))
    for key in ("threads", "energy_interval_ms"):
        if spec[key] < 1:
            raise SpecError("spec field '%s' must be >= 1, got %s" % (key, spec[key]))
    for key in ("warmup_runs", "min_runs"):
        if spec[key] < 0:
            raise SpecError("spec field '%s' must be >= 0, got %s" % (key, spec[key]))
    for key in ("warmup_seconds", "min_seconds", "idle_seconds"):
        if spec[key] < 0:
            raise SpecError("spec field '%s' must be >= 0, got %s" % (key, spec[key]))
    if spec["max_seconds"] <= 0:
        raise SpecError("spec field 'max_seconds' must be > 0")
    if spec["min_runs"] < 1 and spec["min_seconds"] <= 0:
        raise SpecError("min_runs and min_seconds are both 0: nothing would be timed")
    inputs = []
    for i, item in enumerate(spec["inputs"]):
        if not isinstance(item, dict):
            raise SpecError("spec.inputs[%d] must be an object" % i)
        bad = sorted(set(item) - set(_INPUT_FIELDS))
        if bad:
            raise SpecError("spec.inputs[%d] has unknown field(s): %s" % (i, ", ".join(bad)))
        for k in ("name", "shape", "dtype"):
            if k not in item:
                raise SpecError("spec.inputs[%d] needs '%s'" % (i, k))
        shape = item["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise SpecError("spec.inputs[%d] ('%s') shape must be a list of non-negative ints, got %r"
                            % (i, item["name"], shape))
        inputs.append({"name": str(item["name"]), "shape": list(shape), "dtype": str(item["dtype"]),
                       "low": item.get("low"), "high": item.get("high")})
    spec["inputs"] = inputs
    return spec


# ----------------------------------------------------------------------------------------------------------
# Inputs


def _random_array(rng, shape, dtype, low, high):
    np = numpy()
    dt = np.dtype(dtype)
    if dt.kind == "f":
        lo = 0.0 if low is None else float(low)
        hi = 1.0 if high is None else float(high)
        return rng.uniform(lo, hi, size=shape).astype(dt)
    if dt.kind in "iu":
        lo = 0 if low is None else int(low)
        hi = 100 if high is None else int(high)
        if hi <= lo:
            raise SpecError("input range [%s, %s) is empty" % (lo, hi))
        return rng.randint(lo, hi, size=shape).astype(dt)
    if dt.kind == "b":
        return rng.randint(0, 2, size=shape).astype(dt)
    raise SpecError("cannot make random data of dtype %s" % dt.name)


def _shape_matches(shape, model_shape):
    if model_shape is None:
        return True
    if len(shape) != len(model_shape):
        return False
    for got, want in zip(shape, model_shape):
        if isinstance(want, int) and want >= 0 and got != want:
            return False
    return True


def make_inputs(spec, details):
    """Feeds keyed by model input name, plus the `inputs` records (name, shape, dtype, source) for the result."""
    np = numpy()
    by_name = dict((d["name"], d) for d in details)
    spec_inputs = dict((i["name"], i) for i in spec["inputs"])
    extra = sorted(set(spec_inputs) - set(by_name))
    if extra:
        raise SpecError("spec.inputs names %s, which the model does not have (model inputs: %s)"
                        % (", ".join(extra), ", ".join(by_name)))
    feeds, records = {}, []
    if spec.get("inputs_file"):
        path = spec["inputs_file"]
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, IOError, ValueError) as exc:
            raise SpecError("cannot read inputs_file %s: %s" % (path, exc))
        keys = list(getattr(data, "files", []))
        if not keys:
            raise SpecError("inputs_file %s is not an .npz archive keyed by input name" % path)
        missing = [n for n in by_name if n not in keys]
        unknown = [k for k in keys if k not in by_name]
        if missing or unknown:
            raise SpecError("inputs_file %s does not match the model inputs: missing %s; unexpected %s"
                            % (path, ", ".join(missing) or "none", ", ".join(unknown) or "none"),
                            hint="save the .npz with np.savez(path, **{input_name: array})")
        for name, d in by_name.items():
            arr = data[name]
            want_shape = spec_inputs[name]["shape"] if name in spec_inputs else d["shape"]
            if not _shape_matches(list(arr.shape), want_shape):
                raise SpecError("inputs_file %s: input '%s' has shape %s but the %s expects %s"
                                % (path, name, list(arr.shape), "spec" if name in spec_inputs else "model",
                                   want_shape))
            want_dtype = spec_inputs[name]["dtype"] if name in spec_inputs else d["dtype"]
            if arr.dtype.name != np.dtype(want_dtype).name and not (
                    d.get("quantization") and arr.dtype.kind == "f"):
                raise SpecError("inputs_file %s: input '%s' has dtype %s but %s is expected"
                                % (path, name, arr.dtype.name, want_dtype))
            feeds[name] = np.asarray(arr, order="C")
            records.append({"name": name, "shape": list(arr.shape), "dtype": arr.dtype.name, "source": "file",
                            "file": path})
        return feeds, records
    rng = np.random.RandomState(spec["seed"])
    for name, d in by_name.items():
        s = spec_inputs.get(name)
        if s is not None:
            shape, dtype, low, high = s["shape"], s["dtype"], s["low"], s["high"]
            if not _shape_matches(shape, d["shape"]):
                raise SpecError("spec.inputs '%s' shape %s does not fit the model's %s" % (name, shape, d["shape"]))
        else:
            shape = d["shape"]
            if any(not isinstance(x, int) or x < 0 for x in shape):
                raise SpecError("model input '%s' has dynamic shape %s; give a concrete shape in spec.inputs"
                                % (name, shape))
            dtype, low, high = d["dtype"], None, None
            if d.get("quantization"):
                dtype = "float32"  # quantized by the adapter with the model's own scale/zero point
        try:
            numpy().dtype(dtype)
        except TypeError:
            raise SpecError("spec.inputs '%s' dtype '%s' is not a numpy dtype" % (name, dtype))
        feeds[name] = _random_array(rng, shape, dtype, low, high)
        rec = {"name": name, "shape": list(shape), "dtype": numpy().dtype(dtype).name, "source": "random",
               "seed": spec["seed"]}
        if low is not None or high is not None:
            rec["low"], rec["high"] = low, high
        records.append(rec)
    return feeds, records


# ----------------------------------------------------------------------------------------------------------
# Energy: pure parsers (text -> readings) and sampled sources

_RAIL_RE = re.compile(r"(?:(?<=\s)|^)([A-Za-z][A-Za-z0-9_]*) (\d+(?:\.\d+)?)(mW)?/(\d+(?:\.\d+)?)(mW)?"
                      r"(?:/(\d+(?:\.\d+)?)(mW)?)?(?=\s|$)")
_TOTAL_RAILS = ("POM_5V_IN", "VDD_IN")


def parse_tegrastats_line(line):
    """Rails of one tegrastats line: {rail: current mW}. First value of `x/y` or `x/y/z` is the current one."""
    rails = {}
    for m in _RAIL_RE.finditer(line):
        name = m.group(1)
        if name == "NC" or name.startswith("NC_"):
            continue
        rails[name] = float(m.group(2))
    return rails


def select_power_mw(rails, wanted=None):
    """Total power (mW) from rails: the requested rails summed, else the input rail, else all rails summed."""
    if not rails:
        return None, []
    if wanted:
        missing = [r for r in wanted if r not in rails]
        if missing:
            return None, missing
        return sum(rails[r] for r in wanted), list(wanted)
    for total in _TOTAL_RAILS:
        if total in rails:
            return rails[total], [total]
    names = sorted(rails)
    return sum(rails[r] for r in names), names


def parse_vcgencmd_pmic(text):
    """Pi 5 `vcgencmd pmic_read_adc` -> {rail: watts} for rails with both _A and _V, paired by name; nan skipped."""
    amps, volts = {}, {}
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z0-9_]+)_([AV])\s+\w+\(\d+\)=([-+0-9.eEnaN]+)[AV]\s*$", line)
        if not m:
            continue
        try:
            val = float(m.group(3))
        except ValueError:
            continue
        if val != val:  # nan
            continue
        (amps if m.group(2) == "A" else volts)[m.group(1)] = val
    return dict((r, amps[r] * volts[r]) for r in amps if r in volts)


def android_battery_power(current_raw, voltage_raw):
    """(watts, notes) from current_now / voltage_now. Current in uA unless |value| < 10000 (then mA)."""
    notes = []
    cur = abs(float(current_raw))
    if float(current_raw) < 0:
        notes.append("current_now is negative on this device (vendor sign convention); absolute value used")
    if 0 < cur < 10000:
        amps = cur / 1e3
        notes.append("current_now looks like mA (|%d| < 10000), not uA" % cur)
    else:
        amps = cur / 1e6
    volts = float(voltage_raw) / 1e6
    if volts < 1.0:  # some kernels report mV
        volts = float(voltage_raw) / 1e3
        notes.append("voltage_now looks like mV")
    return amps * volts, notes


def parse_dumpsys_battery(text):
    """`dumpsys battery` -> dict of its `key: value` fields (status 2 = charging)."""
    out = {}
    for line in text.splitlines():
        if ":" in line and line.startswith("  "):
            k, _, v = line.strip().partition(":")
            out[k.strip()] = v.strip()
    return out


def rapl_delta_uj(start, end, max_range):
    """Energy between two energy_uj counter readings, handling one wrap at max_energy_range_uj."""
    if end >= start:
        return end - start
    return (max_range - start) + end


class EnergyUnavailable(Exception):
    """The configured energy source cannot be read here; the message is the precise reason."""


class _Source(object):
    """A power source: read() -> (watts, rails dict) for pull sources; push sources feed a collector."""

    name = "?"
    push = False
    min_interval_s = 0.0
    notes = ()

    def read(self):
        raise NotImplementedError

    def stop(self):
        pass


def _die_with_parent():
    """In a sensor child: ask Linux to SIGTERM it when the harness dies, even by SIGKILL (never left running)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, ImportError):
        pass  # not Linux/glibc: the harness's own finally still stops the child


class TegrastatsSource(_Source):
    """`tegrastats --interval N` as a subprocess; lines parsed as they arrive."""

    name = "tegrastats"
    push = True

    def __init__(self, interval_ms, rails, options):
        self.command = options.get("command") or _which("tegrastats") or (
            "/usr/bin/tegrastats" if os.path.exists("/usr/bin/tegrastats") else None)
        if not self.command:
            raise EnergyUnavailable("tegrastats not found on PATH or /usr/bin (not a Jetson, or L4T tools absent)")
        self.interval_ms = int(interval_ms)
        self.rails = list(rails)
        self.proc = None
        self.notes = []
        self._stopping = False

    def start(self, sink):
        argv = [self.command, "--interval", str(self.interval_ms)]
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         universal_newlines=True, bufsize=1, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise EnergyUnavailable("cannot start %s: %s" % (" ".join(argv), exc))
        thread = threading.Thread(target=self._reader, args=(sink,))
        thread.daemon = True
        thread.start()
        self._thread = thread

    def _reader(self, sink):
        for line in iter(self.proc.stdout.readline, ""):
            t = time.perf_counter()
            rails = parse_tegrastats_line(line)
            if not rails:
                sink.fail("tegrastats prints no power rails (%r); on some images the rails need root"
                          % line.strip()[:120])
                continue
            mw, used = select_power_mw(rails, self.rails)
            if mw is None:
                sink.fail("tegrastats has no rail(s) %s (rails: %s)" % (", ".join(used), ", ".join(sorted(rails))))
                continue
            sink.add(t, mw / 1000.0, used)
        rc = self.proc.wait()
        if rc not in (0, None) and not self._stopping:
            err = self.proc.stderr.read().strip()[-300:] if self.proc.stderr else ""
            sink.fail("%s exited with code %s: %s" % (self.command, rc, err or "(no stderr)"))

    def stop(self):
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Ina3221Source(_Source):
    """Jetson INA3221 sysfs: JetPack <= 4 iio (mW) or JetPack 5+ hwmon (mV x mA); root overridable."""

    name = "ina3221"

    def __init__(self, rails, options):
        root = options.get("sysfs_root", "/")
        self.rails = list(rails)
        self.channels = []  # (rail, kind, path_a, path_b)
        iio = sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221x/*/iio:device*")))
        for dev in iio:
            for name_file in sorted(glob.glob(os.path.join(dev, "rail_name_*"))):
                k = name_file.rsplit("_", 1)[-1]
                rail = _read_text(name_file)
                pw = os.path.join(dev, "in_power%s_input" % k)
                if rail and os.path.exists(pw):
                    self.channels.append((rail, "mw", pw, None))
        hw = sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")))
        for dev in hw:
            for label_file in sorted(glob.glob(os.path.join(dev, "in*_label"))):
                k = re.match(r"in(\d+)_label", os.path.basename(label_file)).group(1)
                if k == "7":  # channel 7 is the sum of shunt voltages, not a rail
                    continue
                rail = _read_text(label_file)
                v = os.path.join(dev, "in%s_input" % k)
                c = os.path.join(dev, "curr%s_input" % k)
                if rail and os.path.exists(v) and os.path.exists(c):
                    self.channels.append((rail, "mv_ma", v, c))
        if not self.channels:
            raise EnergyUnavailable("no INA3221 rails under %s (looked for ina3221x iio:device*/rail_name_* and "
                                    "ina3221/*/hwmon/hwmon*/in*_label)"
                                    % os.path.join(root, "sys/bus/i2c/drivers"))
        if self.read() is None:
            raise EnergyUnavailable("INA3221 rails found but not readable (%s); permissions?"
                                    % ", ".join(c[2] for c in self.channels[:3]))

    def read_rails(self):
        rails = {}
        for rail, kind, a, b in self.channels:
            va = _read_number(a)
            if va is None:
                continue
            if kind == "mw":
                rails[rail] = va
            else:
                vb = _read_number(b)
                if vb is None:
                    continue
                rails[rail] = va * vb / 1000.0  # mV * mA = uW -> mW
        return rails

    def read(self):
        rails = self.read_rails()
        mw, used = select_power_mw(rails, self.rails)
        if mw is None:
            return None
        return mw / 1000.0, used


class VcgencmdPmicSource(_Source):
    """Raspberry Pi 5 PMIC ADC via `vcgencmd pmic_read_adc` (~23 ms per read, so at most ~10 Hz)."""

    name = "vcgencmd_pmic"
    min_interval_s = 0.1

    def __init__(self, rails, options):
        self.command = options.get("command") or _which("vcgencmd")
        if not self.command:
            raise EnergyUnavailable("vcgencmd not found on PATH (not a Raspberry Pi OS image)")
        self.rails = list(rails)
        if self.read() is None:
            raise EnergyUnavailable("`vcgencmd pmic_read_adc` gave no rail with both current and voltage "
                                    "(Raspberry Pi 4 and older have no PMIC current sensing)")

    def read(self):
        rc, out, _err = _run_cmd([self.command, "pmic_read_adc"], timeout=2.0)
        if rc != 0:
            return None
        rails = parse_vcgencmd_pmic(out)
        if not rails:
            return None
        if self.rails:
            if any(r not in rails for r in self.rails):
                return None
            return sum(rails[r] for r in self.rails), list(self.rails)
        return sum(rails.values()), sorted(rails)


class AndroidBatterySource(_Source):
    """Android battery fuel gauge: current_now x voltage_now (net of charging when USB powers the phone)."""

    name = "android_battery"

    def __init__(self, options):
        root = options.get("sysfs_root", "/")
        base = os.path.join(root, "sys/class/power_supply/battery")
        self.cur = os.path.join(base, "current_now")
        self.volt = os.path.join(base, "voltage_now")
        self.status = os.path.join(base, "status")
        if not os.path.exists(self.cur) or not os.path.exists(self.volt):
            raise EnergyUnavailable("%s has no current_now/voltage_now" % base)
        self.notes = ["sign of current_now differs by vendor; absolute value used"]
        status = _read_text(self.status)
        if status == "Charging":
            self.notes.append("battery status is Charging: current_now is net of the charger, so power is "
                              "underestimated; disconnect USB (adb over Wi-Fi) for real figures")
        if self.read() is None:
            raise EnergyUnavailable("%s/current_now is not readable" % base)

    def read(self):
        c = _read_number(self.cur)
        v = _read_number(self.volt)
        if c is None or v is None:
            return None
        watts, notes = android_battery_power(c, v)
        for n in notes:
            if n not in self.notes:
                self.notes.append(n)
        return watts, ["battery"]


class RaplSource(_Source):
    """Linux powercap RAPL package counters (Intel and AMD): energy_uj deltas, wrap-aware."""

    name = "rapl"

    def __init__(self, rails, options):
        root = os.path.join(options.get("sysfs_root", "/"), "sys/class/powercap")
        if not os.path.isdir(root):
            raise EnergyUnavailable("%s absent: kernel without powercap (RAPL) support" % root)
        zones = sorted(p for p in glob.glob(os.path.join(root, "intel-rapl:*"))
                       if re.match(r"intel-rapl:\d+$", os.path.basename(p)))
        if not zones:
            raise EnergyUnavailable("%s has no intel-rapl:N package zones (no RAPL driver for this CPU)" % root)
        self.zones = []
        for z in zones:
            name = _read_text(os.path.join(z, "name"), os.path.basename(z))
            if rails and name not in rails:
                continue
            path = os.path.join(z, "energy_uj")
            if not os.access(path, os.R_OK) or _read_number(path) is None:
                raise EnergyUnavailable("%s is not readable (root only since Linux 5.10)" % path)
            self.zones.append((name, path, _read_number(os.path.join(z, "max_energy_range_uj")) or 2.0 ** 32))
        if not self.zones:
            raise EnergyUnavailable("none of the RAPL zones %s found" % ", ".join(rails))
        self._last = None

    def counters(self):
        return [_read_number(p) for _n, p, _m in self.zones]

    def energy_j(self, c0, c1):
        return sum(rapl_delta_uj(a, b, m) for a, b, (_n, _p, m) in zip(c0, c1, self.zones)) / 1e6

    def read(self):
        t = time.perf_counter()
        c = self.counters()
        last, self._last = self._last, (t, c)
        if last is None or t <= last[0]:
            return None
        return self.energy_j(last[1], c) / (t - last[0]), [n for n, _p, _m in self.zones]


def open_energy_source(name, interval_ms, rails, options):
    """The configured source, or raise EnergyUnavailable with the precise reason."""
    if name == "none":
        raise EnergyUnavailable("no energy source configured (energy_source: none)")
    if name == "tegrastats":
        return TegrastatsSource(interval_ms, rails, options)
    if name == "ina3221":
        return Ina3221Source(rails, options)
    if name == "vcgencmd_pmic":
        return VcgencmdPmicSource(rails, options)
    if name == "android_battery":
        return AndroidBatterySource(options)
    if name == "rapl":
        return RaplSource(rails, options)
    raise EnergyUnavailable("unknown energy source '%s'" % name)


class EnergyCollector(object):
    """Collects (time, watts) samples in a background thread; windows are marked by perf_counter times."""

    def __init__(self, source, interval_ms):
        self.source = source
        self.interval_s = max(interval_ms / 1000.0, source.min_interval_s)
        self.samples = []  # (t, watts)
        self.rails = []
        self.errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def add(self, t, watts, rails):
        with self._lock:
            self.samples.append((t, watts))
            self.rails = rails

    def fail(self, reason):
        with self._lock:
            if reason not in self.errors:
                self.errors.append(reason)

    def start(self):
        if self.source.push:
            self.source.start(self)
            return
        self._thread = threading.Thread(target=self._loop)
        self._thread.daemon = True
        self._thread.start()

    def _loop(self):
        next_t = time.perf_counter()
        while not self._stop.is_set():
            r = self.source.read()
            t = time.perf_counter()
            if r is not None:
                self.add(t, r[0], r[1])
            next_t += self.interval_s
            delay = next_t - time.perf_counter()
            if delay < 0:
                next_t = time.perf_counter()
                delay = 0
            self._stop.wait(delay)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.source.stop()

    def window(self, t0, t1):
        with self._lock:
            return [w for t, w in self.samples if t0 <= t <= t1]


def summarize_energy(idle_watts, timed_watts, window_s, runs, source_name, rails, idle_energy_j=None,
                     timed_energy_j=None, idle_s=None):
    """Energy record from samples (or counter energies for RAPL). Pure: unit-tested with hand-computed values."""
    out = {"available": True, "reason": None, "source": source_name, "rails": list(rails),
           "samples": len(timed_watts), "idle_samples": len(idle_watts), "window_s": window_s}
    if timed_energy_j is not None:
        avg = timed_energy_j / window_s if window_s > 0 else None
        idle = idle_energy_j / idle_s if (idle_energy_j is not None and idle_s) else None
    else:
        if not timed_watts:
            return {"available": False, "source": source_name, "rails": list(rails), "samples": 0,
                    "idle_samples": len(idle_watts), "window_s": window_s,
                    "reason": "no power sample fell inside the %.3f s timed window; raise min_seconds above the "
                              "sampling interval" % window_s}
        avg = sum(timed_watts) / len(timed_watts)
        idle = sum(idle_watts) / len(idle_watts) if idle_watts else None
    out["avg_power_w"] = avg
    out["idle_power_w"] = idle
    out["sample_rate_hz"] = (len(timed_watts) / window_s) if window_s > 0 else None
    if avg is not None and runs > 0:
        out["energy_per_inference_mj"] = avg * window_s / runs * 1000.0
        if idle is not None:
            out["energy_above_idle_per_inference_mj"] = (avg - idle) * window_s / runs * 1000.0
    return out


# ----------------------------------------------------------------------------------------------------------
# Device facts: thermal, clocks, device info


def thermal_snapshot(zones=None):
    """Temperatures (C), CPU clocks (MHz), governor(s) and Pi throttle state, as far as readable."""
    temps = {}
    wanted = list(zones or [])
    for z in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        ztype = _read_text(os.path.join(z, "type"), os.path.basename(z))
        if wanted and ztype not in wanted and z not in wanted and os.path.basename(z) not in wanted:
            continue
        t = _read_number(os.path.join(z, "temp"))
        if t is not None:
            key = ztype if ztype not in temps else "%s(%s)" % (ztype, os.path.basename(z))
            temps[key] = t / 1000.0 if abs(t) > 200 else t
    for w in wanted:
        if w.startswith("/") and os.path.isfile(w):
            t = _read_number(w)
            if t is not None:
                temps[w] = t / 1000.0 if abs(t) > 200 else t
    freqs = {}
    governors = []
    for cpu in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq"),
                      key=lambda p: int(re.search(r"cpu(\d+)/", p).group(1))):
        name = cpu.split("/")[-2]
        f = _read_number(os.path.join(cpu, "scaling_cur_freq"))
        if f is not None:
            freqs[name] = f / 1000.0
        g = _read_text(os.path.join(cpu, "scaling_governor"))
        if g and g not in governors:
            governors.append(g)
    snap = {"temps_c": temps, "cpu_freq_mhz": freqs, "governor": ",".join(governors) if governors else None,
            "throttled_raw": None}
    if _which("vcgencmd"):
        rc, out, _err = _run_cmd(["vcgencmd", "get_throttled"], timeout=2.0)
        if rc == 0 and out.strip():
            snap["throttled_raw"] = out.strip()
    return snap


def throttle_bits(raw):
    """Integer from `throttled=0x50005`, or None."""
    if not raw:
        return None
    m = re.search(r"0x([0-9a-fA-F]+)", raw)
    return int(m.group(1), 16) if m else None


def throttled_during(before_raw, after_raw):
    """Pi get_throttled: current bits 0-3 set after the run, or sticky bits 16-19 newly set during it."""
    b, a = throttle_bits(before_raw), throttle_bits(after_raw)
    if a is None:
        return None
    if a & 0xF:
        return True
    if b is not None and (a & 0xF0000) & ~(b & 0xF0000):
        return True
    return False


def _cpu_model():
    text = _read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        for line in text.splitlines():
            if line.lower().startswith(key.lower()) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_mb():
    text = _read_text("/proc/meminfo") or ""
    m = re.search(r"MemTotal:\s+(\d+) kB", text)
    return int(m.group(1)) // 1024 if m else None


def _device_model():
    text = _read_text("/proc/device-tree/model")
    return text.replace("\x00", "").strip() if text else None


def device_info():
    u = platform.uname()
    return {"hostname": socket.gethostname(), "arch": u.machine, "os": "%s %s" % (u.system, _os_release()),
            "kernel": u.release, "python": platform.python_version(), "cpu_model": _cpu_model(),
            "cores": os.cpu_count(), "memory_mb": _memory_mb(), "device_model": _device_model()}


def _cpu_flags():
    """The CPU's feature flags as /proc/cpuinfo spells them (x86 'flags', ARM 'Features'); None if unknown."""
    text = _read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            return sorted(set(line.split(":", 1)[1].split()))
    return None


def _os_release():
    text = _read_text("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else platform.release()


# ----------------------------------------------------------------------------------------------------------
# Memory


def _rss_mb():
    kib = _proc_status_kib("VmRSS")
    return kib / 1024.0 if kib is not None else None


def peak_rss():
    """(peak MB, source): /proc/self/status VmHWM, else getrusage ru_maxrss.

    VmHWM belongs to this process image. Linux keeps ru_maxrss across execve, so a harness started by a
    large parent (e.g. `edgekit deploy` after loading torch) would report the parent's peak instead.
    """
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024.0, "VmHWM"
    try:
        import resource
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0), "getrusage"  # bytes on macOS
    except (ImportError, OSError):
        return None, "unavailable"


# ----------------------------------------------------------------------------------------------------------
# The benchmark


def _stats(samples_ms):
    np = numpy()
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"mean_ms": float(a.mean()), "median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "min_ms": float(a.min()), "max_ms": float(a.max()),
            "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def timed_loop(step, min_runs, min_seconds, max_seconds, progress_every_s=1.0):
    """Run `step` until min_runs AND min_seconds are met (cap max_seconds). Returns (samples s, t0, t1, capped)."""
    perf = time.perf_counter
    samples = []
    append = samples.append
    n = 0
    t_start = perf()
    next_report = t_start + progress_every_s
    capped = False
    t1 = t_start
    while True:
        t0 = perf()
        step()
        t1 = perf()
        append(t1 - t0)
        n += 1
        elapsed = t1 - t_start
        if n >= min_runs and elapsed >= min_seconds:
            break
        if elapsed >= max_seconds:
            capped = True
            break
        if t1 >= next_report:
            _progress("timed", runs=n, elapsed_s=round(elapsed, 3))
            next_report = t1 + progress_every_s
    return samples, t_start, t1, capped


def _idle_and_timed(step, spec, collector):
    """Idle baseline (if measuring energy), then the timed loop; returns samples, window, capped, energy or None."""
    source = collector.source if collector is not None else None
    rapl = isinstance(source, RaplSource)
    idle_t0 = idle_t1 = idle_c0 = idle_c1 = None
    if collector is not None:
        time.sleep(min(collector.interval_s, 1.0))  # let a push source deliver its first line
        _progress("idle", seconds=spec["idle_seconds"])
        idle_t0 = time.perf_counter()
        idle_c0 = source.counters() if rapl else None
        time.sleep(spec["idle_seconds"])
        idle_c1 = source.counters() if rapl else None
        idle_t1 = time.perf_counter()
    _progress("timed", runs=0, elapsed_s=0.0)
    rapl_c0 = source.counters() if rapl else None
    try:
        samples, t0, t1, capped = timed_loop(step, spec["min_runs"], spec["min_seconds"], spec["max_seconds"])
    except HarnessError:
        raise
    except Exception as exc:  # runtime-specific exception types; reported with the runtime's message
        raise InferenceFailed("%s inference failed during timed runs: %s" % (spec["runtime"], str(exc)[:2000]))
    rapl_c1 = source.counters() if rapl else None
    duration, runs = t1 - t0, len(samples)
    _progress("timed", runs=runs, elapsed_s=round(duration, 3), state="done")
    if collector is None:
        return samples, t0, t1, capped, None
    if source.push:  # the line stamped just before t1 may still be in the pipe
        time.sleep(min(collector.interval_s, 1.0) * 0.2)
    collector.stop()
    idle_w = collector.window(idle_t0, idle_t1)
    timed_w = collector.window(t0, t1)
    if collector.errors and not timed_w:
        energy = {"available": False, "source": source.name, "reason": "; ".join(collector.errors)}
    elif rapl:
        energy = summarize_energy(idle_w, timed_w, duration, runs, source.name, [z[0] for z in source.zones],
                                  idle_energy_j=source.energy_j(idle_c0, idle_c1),
                                  timed_energy_j=source.energy_j(rapl_c0, rapl_c1), idle_s=idle_t1 - idle_t0)
    else:
        energy = summarize_energy(idle_w, timed_w, duration, runs, source.name, collector.rails)
    return samples, t0, t1, capped, energy


def run_benchmark(spec):
    """Run one spec; return the BenchmarkResult dict. Raises HarnessError subclasses."""
    np = numpy()
    warnings = []
    thermal_before = thermal_snapshot(spec["thermal_zones"])
    dev = device_info()
    if not os.path.exists(spec["model_path"]):
        raise ModelLoadFailed("model file not found: %s" % spec["model_path"],
                              hint="push the artifact to the device first")
    options = dict(spec["runtime_options"])
    if spec["inputs"]:
        options.setdefault("input_shapes", dict((i["name"], i["shape"]) for i in spec["inputs"]))

    _progress("load", state="start", runtime=spec["runtime"])
    rss_before = _rss_mb()
    t_imp = time.perf_counter()
    if spec["runtime"] == "onnxruntime":  # import separately so load_ms is session creation only
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            pass  # the adapter raises RuntimeMissing with the hint
    elif spec["runtime"] == "openvino":
        try:
            _import_openvino()
        except RuntimeMissing:
            pass
    elif spec["runtime"] == "tflite":
        try:
            _import_tflite()
        except RuntimeMissing:
            pass
    import_ms = (time.perf_counter() - t_imp) * 1000.0
    t_load = time.perf_counter()
    session = open_session(spec["runtime"], spec["model_path"], spec["threads"], options)
    load_ms = (time.perf_counter() - t_load) * 1000.0
    rss_after = _rss_mb()
    warnings.extend(session.warnings)
    _progress("load", state="done", load_ms=round(load_ms, 3))

    feeds, input_records = make_inputs(spec, session.input_details)
    try:
        step = session.bind(feeds)
        t = time.perf_counter()
        step()
        first_ms = (time.perf_counter() - t) * 1000.0
    except HarnessError:
        raise
    except Exception as exc:  # runtime-specific exception types; reported with the runtime's message
        raise InferenceFailed("%s inference failed on %s: %s" % (spec["runtime"], spec["model_path"],
                                                                   str(exc).strip()[:2000]))

    # Warm-up: both count and time.
    w_start = time.perf_counter()
    w_runs = 0
    while True:
        now = time.perf_counter()
        if w_runs >= spec["warmup_runs"] and now - w_start >= spec["warmup_seconds"]:
            break
        if now - w_start >= spec["max_seconds"]:
            warnings.append("warm-up stopped at max_seconds=%s after %d runs" % (spec["max_seconds"], w_runs))
            break
        step()
        w_runs += 1
    warmup_s = time.perf_counter() - w_start
    _progress("warmup", runs=w_runs, elapsed_s=round(warmup_s, 3))

    # Energy: idle baseline first, then the collector keeps running over the timed window.
    collector, energy, source = None, None, None
    try:
        source = open_energy_source(spec["energy_source"], spec["energy_interval_ms"], spec["energy_rails"],
                                    spec["energy_options"])
    except EnergyUnavailable as exc:
        energy = {"available": False, "reason": str(exc), "source": spec["energy_source"]}
    collector = None
    if source is not None:
        collector = EnergyCollector(source, spec["energy_interval_ms"])
        try:
            collector.start()
        except EnergyUnavailable as exc:
            energy = {"available": False, "reason": str(exc), "source": source.name}
            collector.stop()
            collector = None
    try:  # the sensor (e.g. a tegrastats child) is always stopped, also on errors and SIGTERM
        samples, t0, t1, capped, measured = _idle_and_timed(step, spec, collector)
    finally:
        if collector is not None:
            collector.stop()
    if measured is not None:
        energy = measured
    duration = t1 - t0
    runs = len(samples)
    if capped:
        warnings.append("timed runs stopped at max_seconds=%s after %d runs (min_runs=%d, min_seconds=%s not both "
                        "met)" % (spec["max_seconds"], runs, spec["min_runs"], spec["min_seconds"]))
    if collector is not None:
        for n in getattr(source, "notes", ()) or ():
            warnings.append("energy: " + n)
        if energy.get("available") and energy.get("samples", 0) < 5 and not isinstance(source, RaplSource):
            warnings.append("energy: only %d power samples in the timed window; raise min_seconds for a stable "
                            "average" % energy["samples"])

    thermal_after = thermal_snapshot(spec["thermal_zones"])
    peak, mem_source = peak_rss()
    notes = []
    throttled = throttled_during(thermal_before["throttled_raw"], thermal_after["throttled_raw"])
    if throttled is None:
        notes.append("throttling cannot be read on this device (no vcgencmd get_throttled)")
    if throttled:
        warnings.append("the device reported throttling during the run (%s)" % thermal_after["throttled_raw"])
    if not thermal_before["governor"]:
        notes.append("CPU governor/frequency not readable (no /sys/devices/system/cpu/cpu*/cpufreq)")
    if not thermal_before["temps_c"]:
        notes.append("no readable thermal zone (/sys/class/thermal)")
    if thermal_before["governor"] and thermal_before["governor"] not in ("performance",):
        notes.append("CPU governor is '%s' (not 'performance'): clocks may change during the run"
                     % thermal_before["governor"])
    runtime_options = dict(session.options)
    runtime_options["import_ms"] = round(import_ms, 3)
    runtime_options["harness_version"] = HARNESS_VERSION
    session.close()

    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runner": "local",
        "host": None,
        "model": {"path": spec["model_path"], "format": spec["model_format"], "sha256": spec["sha256"],
                  "size_bytes": model_size_bytes(spec["model_path"], spec["model_format"]),
                  "precision": spec["precision"]},
        "runtime": {"name": spec["runtime"], "version": session.version, "threads": spec["threads"],
                    "providers": list(session.providers), "options": _jsonable(runtime_options)},
        "device": dev,
        "inputs": input_records,
        "timing": {"load_ms": load_ms, "first_inference_ms": first_ms, "warmup_runs": w_runs, "warmup_s": warmup_s,
                   "runs": runs, "duration_s": duration, "samples_ms": [s * 1000.0 for s in samples],
                   "stats": _stats([s * 1000.0 for s in samples]),
                   "throughput_ips": runs / duration if duration > 0 else 0.0},
        "memory": {"peak_rss_mb": peak, "rss_before_load_mb": rss_before, "rss_after_load_mb": rss_after,
                   "source": mem_source},
        "energy": energy if energy is not None else {"available": False, "reason": "energy not measured"},
        "thermal": {"before": thermal_before, "after": thermal_after, "throttled": throttled, "notes": notes},
        "warnings": warnings,
    }


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


# ----------------------------------------------------------------------------------------------------------
# Probe


def _runtime_versions():
    out = {}
    for mod in ("onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime", "tensorrt", "numpy"):
        try:
            m = __import__(mod)
            ver = getattr(m, "__version__", None)
            if ver is None and mod == "openvino":
                try:
                    from openvino.runtime import get_version
                    ver = get_version()
                except ImportError:
                    ver = "unknown"
            entry = {"available": True, "version": str(ver)}
            if mod == "onnxruntime":
                entry["providers"] = list(m.get_available_providers())
            out[mod] = entry
        except Exception as exc:  # broken installs raise more than ImportError (e.g. numpy ABI errors)
            out[mod] = {"available": False, "error": "%s: %s" % (type(exc).__name__, str(exc)[:300])}
    trtexec = _which("trtexec") or ("/usr/src/tensorrt/bin/trtexec"
                                    if os.path.isfile("/usr/src/tensorrt/bin/trtexec") else None)
    out["trtexec"] = {"available": trtexec is not None, "path": trtexec}
    # CUDA bindings the TensorRT adapter can use; found without importing (pycuda.autoinit would create a context).
    import importlib.util
    found = {}
    for name in ("cuda", "pycuda"):
        try:
            found[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found[name] = False
    out["cuda_bindings"] = {"cuda-python": found["cuda"], "pycuda": found["pycuda"]}
    return out


def _energy_probe():
    out = {}
    for name in ENERGY_SOURCES:
        if name == "none":
            continue
        try:
            src = open_energy_source(name, 100, [], {})
            r = src.read() if not src.push else None
            out[name] = {"readable": True, "reason": None}
            if r is not None:
                out[name]["sample_w"] = r[0]
                out[name]["rails"] = r[1]
            src.stop()
        except EnergyUnavailable as exc:
            out[name] = {"readable": False, "reason": str(exc)}
    return out


def probe(workdir=None):
    """Everything `edgekit doctor` wants to know about this device, as a dict."""
    info = device_info()
    info["cpu_flags"] = _cpu_flags()  # probe only: benchmark results keep the compact device record
    thermal = thermal_snapshot()
    zones = {}
    for z in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        zones[os.path.basename(z)] = _read_text(os.path.join(z, "type"))
    wd = workdir or os.getcwd()
    try:
        st = os.statvfs(wd)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    info.update({
        "harness_version": HARNESS_VERSION,
        "python_executable": sys.executable,
        "runtimes": _runtime_versions(),
        "energy": _energy_probe(),
        "thermal_zones": zones,
        "temps_c": thermal["temps_c"],
        "cpu_freq_mhz": thermal["cpu_freq_mhz"],
        "governor": thermal["governor"],
        "throttled_raw": thermal["throttled_raw"],
        "workdir": wd,
        "free_disk_bytes": free,
    })
    return info


# ----------------------------------------------------------------------------------------------------------
# CLI


def _emit_error(err):
    sys.stderr.write("EDGEKIT-ERROR " + json.dumps(err.to_dict()) + "\n")
    sys.stderr.flush()


def _read_spec(arg):
    try:
        if arg == "-":
            text = sys.stdin.read()
        else:
            with open(arg, "r") as fh:
                text = fh.read()
    except (OSError, IOError) as exc:
        raise SpecError("cannot read spec %s: %s" % (arg, exc))
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SpecError("spec %s is not valid JSON: %s" % (arg, exc))
    return validate_spec(doc)


def _on_signal(signum, _frame):
    raise Interrupted("stopped by signal %d" % signum)


def main(argv=None):
    """CLI entry; returns the exit code. stdout carries exactly one JSON document."""
    argv = list(sys.argv[1:] if argv is None else argv)
    import signal
    for name in ("SIGTERM", "SIGHUP"):  # unwind through `finally` so sensor children are stopped
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), _on_signal)
            except (ValueError, OSError):  # not the main thread (in-process use)
                pass
    # Runtimes may print to fd 1 (C++ logging): send fd 1 to stderr while working, restore it for our JSON.
    saved_fd = None
    try:
        sys.stdout.flush()
        saved_fd = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):
        saved_fd = None
    code = EXIT_OK
    doc = None
    try:
        if argv and argv[0] in ("-h", "--help"):
            sys.stderr.write(__doc__)
        elif argv and argv[0] == "--probe":
            doc = probe(argv[1] if len(argv) > 1 else None)
        else:
            if len(argv) != 1:
                raise SpecError("usage: harness.py SPEC.json | - | --probe [WORKDIR]")
            doc = run_benchmark(_read_spec(argv[0]))
    except HarnessError as err:
        _emit_error(err)
        code = err.exit_code
    except KeyboardInterrupt:
        _emit_error(Interrupted("interrupted (Ctrl-C)"))
        code = 130
    except Exception as exc:  # last resort: still one parseable error line, plus the traceback for debugging
        import traceback
        traceback.print_exc()
        _emit_error(HarnessError("%s: %s" % (type(exc).__name__, exc), hint="this is a harness bug; please report it"))
        code = EXIT_OTHER
    finally:
        if saved_fd is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
    if doc is not None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
