"""TensorRT adapter's host buffers (issue 15 §4). No GPU or CUDA here: cudaMallocHost/cudaFreeHost are provided by a
stand-in backed by libc malloc/free (the one part that cannot exist here); what is tested is edgekit's own code:
wrapping the page-locked pointer as a numpy array of the engine's shape/dtype, writing through it, and freeing every
allocation once."""

from __future__ import annotations

import ctypes

import numpy as np

from edgekit.runners.harness.adapters import tensorrt as trt_adapter

_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


class _CudartStandIn:
    """cuda-python's cudart calling convention: every call returns (cudaError_t, value...)."""

    def __init__(self):
        self.allocated, self.freed = [], []

    def cudaMallocHost(self, nbytes):
        ptr = _libc.malloc(nbytes)
        self.allocated.append((ptr, nbytes))
        return (0, ptr)

    def cudaFreeHost(self, ptr):
        self.freed.append(ptr)
        _libc.free(ptr)
        return (0,)


def _cuda():
    c = object.__new__(trt_adapter._Cuda)
    c.kind, c.mod = "cuda-python", _CudartStandIn()
    return c


def test_pinned_buffers_are_numpy_views_of_the_page_locked_allocation():
    cuda = _cuda()
    a = cuda.pinned_empty([1, 3, 48, 320], "float32")
    b = cuda.pinned_empty([1, 40], np.int64)
    assert a.shape == (1, 3, 48, 320) and a.dtype == np.float32 and a.flags["C_CONTIGUOUS"]
    assert b.shape == (1, 40) and b.dtype == np.int64
    (pa, na), (pb, nb) = cuda.mod.allocated
    assert (na, nb) == (1 * 3 * 48 * 320 * 4, 40 * 8)
    assert a.ctypes.data == pa and b.ctypes.data == pb  # the array IS the pinned memory: async copies use it as is
    x = np.random.RandomState(0).rand(1, 3, 48, 320).astype(np.float32)
    np.copyto(a, x)
    assert np.array_equal(np.ctypeslib.as_array(ctypes.cast(pa, ctypes.POINTER(ctypes.c_float)), (a.size,)), x.ravel())
    cuda.free_pinned()
    assert sorted(cuda.mod.freed) == sorted([pa, pb])
    cuda.free_pinned()  # idempotent: close() after an error path must not double-free
    assert len(cuda.mod.freed) == 2

