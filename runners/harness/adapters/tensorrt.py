"""TensorRT adapter (runtime "tensorrt"): a serialized engine built on this device, run through CUDA."""

import glob
import os
import re
import sys

from . import Session, module_version
from ..common import numpy, which
from ..errors import InferenceFailed, ModelLoadFailed, RuntimeMissing, SpecError

INSTALL_HINT = 'TensorRT comes with JetPack: use the system python3 (/usr/bin/python3) that has the tensorrt module, and pip install cuda-python (or pycuda)'


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

    def pinned_empty(self, shape, dtype):
        """A numpy array in page-locked (pinned) host memory, allocated once: async copies from/to it are true DMA
        (pageable memory is staged through a driver buffer, which trtexec does not time). cuda-python:
        cudaMallocHost wrapped as numpy (as TensorRT's samples/python/common_runtime.py does); pycuda:
        pagelocked_empty."""
        np = numpy()
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) if len(shape) else 1
        if self.kind == "pycuda":
            return self.mod.pagelocked_empty(tuple(shape), dtype)
        import ctypes
        ptr = self._check(self.mod.cudaMallocHost(max(size * dtype.itemsize, 1)))
        raw = (ctypes.c_uint8 * max(size * dtype.itemsize, 1)).from_address(int(ptr))
        arr = np.frombuffer(raw, dtype=np.uint8)[:size * dtype.itemsize].view(dtype).reshape(tuple(shape))
        self._pinned = getattr(self, "_pinned", [])
        self._pinned.append(int(ptr))
        return arr

    def free_pinned(self):
        """Free what pinned_empty allocated with cuda-python (pycuda frees its arrays with them)."""
        for ptr in getattr(self, "_pinned", []):
            self.mod.cudaFreeHost(ptr)
        self._pinned = []

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
                                 hint=INSTALL_HINT)
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
                        "host_buffers": "pinned (page-locked), allocated once", "device_buffers": "allocated once",
                        "timing_includes": "host-to-device copy, execute, device-to-host copy, stream sync",
                        "timed_region": TIMED_TRT % ("execute_async_v3" if self.v3 else "execute_v2")}
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
        self._host = {}
        self._host_out = {}
        for name, is_in, shape, dtype, _i in self._io:
            if any(d < 0 for d in shape):
                raise SpecError("TensorRT tensor '%s' has dynamic shape %s; give its shape in spec.inputs"
                                % (name, shape))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self._dev[name] = self.cuda.malloc(nbytes)
            # host buffers: pinned, allocated once (inputs are filled once in bind(), outputs reused per call)
            self._host[name] = self.cuda.pinned_empty(shape, dtype)
            if not is_in:
                self._host_out[name] = self._host[name]
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
            arr = np.require(feeds[d["name"]], dtype=d["dtype"], requirements="C")
            if list(arr.shape) != list(d["shape"]):  # the device buffer has exactly this size
                raise SpecError("TensorRT input '%s' is %s in the engine but the feed is %s"
                                % (d["name"], d["shape"], list(arr.shape)))
            pinned = self._host[d["name"]]
            np.copyto(pinned, arr)  # once, outside the timed region: every call copies from page-locked memory
            host_in.append((self._dev[d["name"]], pinned))
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
        self._host = {}
        self._host_out = {}
        self.cuda.free_pinned()


TIMED_TRT = ("tensorrt: host-to-device copy from pinned buffers, %s, device-to-host copy into pinned buffers, "
             "stream sync (buffers allocated once); trtexec's GPU compute time is execute only")


SESSION = TensorRtSession


def import_runtime():
    """Import tensorrt (timed apart from engine deserialization)."""
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeMissing("the tensorrt Python module is not importable with %s (%s)" % (sys.executable, exc),
                             hint=INSTALL_HINT)
    return tensorrt


def probe():
    import importlib.util

    out = {"tensorrt": module_version("tensorrt")}
    trtexec = which("trtexec") or ("/usr/src/tensorrt/bin/trtexec"
                                   if os.path.isfile("/usr/src/tensorrt/bin/trtexec") else None)
    out["trtexec"] = {"available": trtexec is not None, "path": trtexec}
    # CUDA bindings the adapter can use; found without importing (pycuda.autoinit would create a context).
    found = {}
    for name in ("cuda", "pycuda"):
        try:
            found[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found[name] = False
    out["cuda_bindings"] = {"cuda-python": found["cuda"], "pycuda": found["pycuda"]}
    out["cuda"] = _cuda_probe()
    return out


def _cuda_probe():
    """The CUDA toolkit/driver as JetPack installs it (/usr/local/cuda, libcuda), without loading it."""
    for path in ("/usr/local/cuda/version.json", "/usr/local/cuda/version.txt"):
        if os.path.isfile(path):
            text = open(path).read()
            m = re.search(r'"version"\s*:\s*"([0-9.]+)"|CUDA Version ([0-9.]+)', text)
            return {"available": True, "version": (m.group(1) or m.group(2)) if m else None, "path": path}
    libs = glob.glob("/usr/lib/*/libcuda.so*") + glob.glob("/usr/lib/*/tegra/libcuda.so*") + glob.glob("/usr/lib64/libcuda.so*")
    if libs:
        return {"available": True, "version": None, "path": sorted(libs)[0]}
    return {"available": False, "reason": "no CUDA: neither /usr/local/cuda nor libcuda.so on this device"}
