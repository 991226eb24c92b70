"""Output reductions for evaluation mode: what the task metric needs, instead of the whole tensor.

PP-OCR rec's output is [1, 40, 6625] floats, ~1 MB per text line: 128 held-out lines are ~125 MB to fetch from a board
over Wi-Fi or adb, for every variant a search checks on the device. Its task metric (CTC greedy decoding) reads only
the argmax per timestep; PP-OCR det's (text-mask IoU) reads only `map > thresh`. The host names a reduction per
output in the spec (`eval_reduce`), the harness stores the reduced parts, the host expands them back to the
output's shape, and applies the same reduce-and-expand to the source model's reference outputs, so both sides are
compared on equal terms and the task metric is exact:

    topk:K[:AXIS]  the K largest values along AXIS (default last) and their indices, ties to the lower index (as
                   numpy's argmax); expanded with every other entry just below the K-th value, so argmax is exact
    gt:T           the boolean mask `x > T`, bit-packed; expanded to 1.0 / 0.0 (any threshold in [0, 1) gives back
                   the same mask)
    full           the tensor itself (also what an empty name means)

Standard library + numpy; Python >= 3.6 (the harness runs on the device).
"""

from .common import numpy
from .errors import SpecError


def parse(how):
    """('full'|'topk'|'gt', params) of a reduction name; SpecError naming it when malformed."""
    if how in (None, "", "full"):
        return "full", {}
    parts = str(how).split(":")
    try:
        if parts[0] == "topk" and len(parts) in (2, 3):
            k = int(parts[1])
            axis = int(parts[2]) if len(parts) == 3 else -1
            if k >= 1:
                return "topk", {"k": k, "axis": axis}
        if parts[0] == "gt" and len(parts) == 2:
            return "gt", {"thresh": float(parts[1])}
    except ValueError:
        pass
    raise SpecError("spec field 'eval_reduce' has an unknown reduction %r" % (how,),
                    hint="use 'full', 'topk:K[:AXIS]' or 'gt:THRESHOLD'")


def reduce_output(arr, how):
    """{part name: array} holding what `how` keeps of `arr` ('' is the whole array for 'full')."""
    np = numpy()
    kind, p = parse(how)
    arr = np.asarray(arr)
    if kind == "full":
        return {"": arr}
    shape = np.array(arr.shape, dtype=np.int64)
    if kind == "gt":
        return {"bits": np.packbits((arr > p["thresh"]).ravel()), "shape": shape}
    axis = p["axis"] % max(arr.ndim, 1)
    k = min(p["k"], arr.shape[axis]) if arr.ndim else 1
    moved = np.moveaxis(arr.astype(np.float32), axis, -1)
    idx = np.argsort(-moved, axis=-1, kind="stable")[..., :k]  # stable: equal values keep the lower index first
    vals = np.take_along_axis(moved, idx, axis=-1)
    return {"values": vals, "indices": idx.astype(np.int32), "shape": shape}


def expand(parts, how):
    """The array `reduce_output` kept, back in the output's shape (see the module doc for what fills the rest)."""
    np = numpy()
    kind, p = parse(how)
    if kind == "full":
        return np.asarray(parts[""])
    shape = tuple(int(d) for d in parts["shape"])
    if kind == "gt":
        n = int(np.prod(shape)) if shape else 1
        return np.unpackbits(parts["bits"])[:n].reshape(shape).astype(np.float32)
    axis = p["axis"] % max(len(shape), 1)
    vals, idx = np.asarray(parts["values"], dtype=np.float32), np.asarray(parts["indices"]).astype(np.int64)
    moved_shape = tuple(d for i, d in enumerate(shape) if i != axis) + (shape[axis],)
    floor = np.nextafter(vals.min(axis=-1, keepdims=True), np.float32(-np.inf)).astype(np.float32)
    out = np.broadcast_to(floor, moved_shape).copy()
    np.put_along_axis(out, idx, vals, axis=-1)
    return np.moveaxis(out, -1, axis)
