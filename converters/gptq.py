"""GPTQ weight rounding for the QAT step's INT8 weights (Frantar et al., 2022, "GPTQ: accurate post-training quantization
for generative pre-trained transformers"; the one-shot, one-layer-at-a-time variant of Optimal Brain Quantization).

Round-to-nearest quantizes each weight on its own. GPTQ quantizes one input column of a layer's weight matrix at a
time and moves the still-unquantized columns to cancel the error that rounding caused in the layer's output, weighted
by the input statistics H = E[x xᵀ] on calibration samples. The grid is unchanged (symmetric INT8 per output channel,
[-127, 127], scale = max|w| / 127 of the original weight), so the exported QDQ model runs on the same INT8 kernels.

Measured on PP-OCRv4 rec (the 10 costliest pointwise convs, 64 calibration lines, FP32 inputs): output error
E‖(W_q − W) x‖² 5–45x lower than round-to-nearest; those 10 convs INT8 (the rest FP32, f32 float parts) kept 0.973 of
256 held-out lines against 0.926.

Covered: Conv with group 1 (2-D, any kernel: the input is unfolded into columns) and MatMul/Gemm with a 2-D constant
weight. Depthwise/grouped convs and ConvTranspose keep round-to-nearest.

The same pass over the calibration inputs also chooses each layer's activation smoothing when asked
(converters/smooth.py): GPTQ then rounds the smoothed weight on the correspondingly scaled statistics."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np


class Rounded(NamedTuple):
    """One layer's INT8 weight: `offset` = INT8 weight − (FP32 weight × smooth) in the weight's layout, `scale` per output
    channel, the layer output errors of round-to-nearest and GPTQ on H, and the activation smoothing (converters/smooth.py:
    s per input channel, its α) when one was chosen."""

    offset: np.ndarray
    scale: np.ndarray
    e_rtn: float
    e_gptq: float
    smooth: Optional[np.ndarray] = None
    alpha: Optional[float] = None
    plain: Optional[Tuple[np.ndarray, np.ndarray]] = None  # a smoothed layer's (offset, scale) without smoothing; None: rounding


def input_channel_dim(axis: int, ndim: int) -> int:
    """The weight dimension that reads the layer's input channels: the first one that is not the output-channel axis
    (Conv [O, C, kh, kw] -> 1; MatMul [K, N] -> 0; Gemm transB [N, K] -> 1)."""
    return next(d for d in range(ndim) if d != axis)


def smooth_views(node, s: np.ndarray, axis: int, w_ndim: int) -> Tuple[np.ndarray, np.ndarray]:
    """(multiplier of the weight, multiplier of the layer input) for smoothing `s`: W × s along its input channels,
    x × 1/s along the channel dim (1 for Conv's NCHW input, the last for MatMul/Gemm)."""
    wshape = [1] * w_ndim
    wshape[input_channel_dim(axis, w_ndim)] = -1
    xshape = [1, -1, 1, 1] if node.op_type == "Conv" else [-1]
    return s.reshape(wshape).astype(np.float32), (1.0 / s).reshape(xshape).astype(np.float32)


def gptq_matrix(torch, W, H, damp: float = 0.01):
    """GPTQ of W [rows = output channels, cols = inputs] given H [cols, cols] = E[x xᵀ]. Returns (K, scale): integers
    in [-127, 127] per element and the per-row scale (max|W row| / 127), so K * scale[:, None] is the INT8 weight."""
    W = W.detach().clone().double()
    H = H.detach().clone().double()
    n = W.shape[1]
    scale = torch.clamp(W.abs().amax(dim=1) / 127.0, min=1e-12)  # the original weight's grid, as round-to-nearest uses
    dead = torch.diag(H) == 0  # inputs that are always 0: their weights cannot matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    K = torch.zeros_like(W)
    for i in range(n):
        w = W[:, i]
        k = torch.clamp(torch.round(w / scale), -127, 127)
        K[:, i] = k
        err = (w - k * scale) / Hinv[i, i]
        W[:, i:] -= err[:, None] * Hinv[i, i:][None, :]
    return K, scale


def _columns(torch, node, attrs: Dict[str, Any], x, in_features: int, kernel: Tuple[int, ...]):
    """The layer input as columns [in_features, N] matching the 2-D weight layout, or None if not covered (asymmetric
    padding, auto_pad SAME_*)."""
    if node.op_type == "Conv":
        from edgekit.converters.onnx_torch import _pads  # the interpreter's own reading of pads / auto_pad

        k = tuple(int(v) for v in kernel)
        if x.dim() != 4 or len(k) != 2:
            return None
        try:
            pads, symmetric = _pads(attrs, 2)
        except ValueError:  # auto_pad SAME_*
            return None
        if not symmetric:
            return None
        cols = torch.nn.functional.unfold(x, k, dilation=tuple(attrs.get("dilations", [1, 1])), padding=tuple(pads),
                                          stride=tuple(attrs.get("strides", [1, 1])))  # [B, Cin*kh*kw, L]
        return cols.permute(1, 0, 2).reshape(cols.shape[1], -1) if cols.shape[1] == in_features else None
    x2 = x.reshape(-1, x.shape[-1])
    return x2.T if x2.shape[1] == in_features else None


def _same_shape_batches(feeds, input_names, batch: int):
    """Consecutive feeds with equal input shapes, up to `batch` at a time (samples of varying size run alone)."""
    chunk: List[Dict[str, np.ndarray]] = []
    for f in feeds:
        if chunk and (len(chunk) >= batch or any(np.shape(f[n]) != np.shape(chunk[0][n]) for n in input_names)):
            yield chunk
            chunk = []
        chunk.append(f)
    if chunk:
        yield chunk


def eligible(node, attrs: Dict[str, Any], w) -> bool:
    if node.op_type == "Conv":
        return int(attrs.get("group", 1)) == 1 and w.dim() == 4
    if node.op_type in ("MatMul", "Gemm"):
        return w.dim() == 2
    return False


def _as_rows(w, axis: int):
    """The weight as [output channels, inputs] and a function mapping such a matrix back to the weight's layout."""
    moved = w.movedim(axis, 0)
    shape = moved.shape
    return moved.reshape(shape[0], -1), (lambda m: m.reshape(shape).movedim(0, axis))


def gptq_offsets(
    torch,
    student,
    quantized: Sequence[Dict[str, Any]],
    feeds: Sequence[Dict[str, np.ndarray]],
    input_names: Sequence[str],
    damp: float = 0.01,
    batch: int = 4,
    progress: Optional[Callable[[str], None]] = None,
    max_columns: int = 16384,
    smooth_alphas: Sequence[float] = (),
    smoothable: Optional[Set[str]] = None,
    act_qrange: Tuple[int, int] = (0, 255),
    sample_columns: int = 2048,
) -> Dict[str, Rounded]:
    """GPTQ for every covered op of `quantized` on the FP32 model's own layer inputs over `feeds`.

    At most `max_columns` input positions per layer and batch enter H (a random, seeded subset: a 3x3 conv with 64
    input channels at 320x320 would otherwise give 576 x 1.6 M values per batch of 16).
    Returns {node name: Rounded}; a layer where GPTQ's output error on H is not below round-to-nearest's is left out (it
    keeps plain rounding). The QAT step keeps the FP32 weight as the trainable parameter and quantizes
    weight × smooth + offset on the fixed scale, so at the FP32 weight the export is exactly GPTQ's integers, and ops
    later kept in FP32 keep their original weights.

    With `smooth_alphas`, each op in `smoothable` (its input read by no other quantized op) also gets the activation
    smoothing (converters/smooth.py) with the lowest quantized output error on a sample of `sample_columns` inputs,
    `act_qrange` being the activation quantizer's integer range; GPTQ then runs on the scaled weight and statistics."""
    from edgekit.converters import smooth as smoothing

    nodes = {n.name: (n, a) for n, a in zip(student.nodes, student.node_attrs)}
    todo = []
    for q in quantized:
        node, attrs = nodes[q["node"]]
        w = student.value_of(q["weight"])
        if eligible(node, attrs, w):
            todo.append((q, node, attrs, _as_rows(w.detach(), q["axis"])[0].shape[1], tuple(w.shape[2:])))
    if not todo:
        return {}
    smooth_on = {q["node"] for q, *_ in todo if smooth_alphas and (smoothable is None or q["node"] in smoothable)}
    n_candidates = len(smooth_on)
    # per op: [H sum, positions, sampled columns, per-channel min, per-channel max]
    stats: Dict[str, List[Any]] = {q["node"]: [None, 0, [], None, None] for q, *_ in todo}
    n_batches = max(1, -(-len(feeds) // batch))

    gen = torch.Generator().manual_seed(0)

    def capture(q, node, attrs, n_in, kernel):
        def hook(x):
            cols = _columns(torch, node, attrs, x.detach(), n_in, kernel)
            st = stats[q["node"]]
            if cols is None:
                st[1] = -1
                return x
            if st[1] < 0:
                return x
            if cols.shape[1] > max_columns:  # a high-resolution conv: a random subset of positions estimates H as well
                cols = cols[:, torch.randperm(cols.shape[1], generator=gen)[:max_columns]]
            cols = cols.double()
            st[0] = cols @ cols.T if st[0] is None else st[0] + cols @ cols.T
            st[1] += cols.shape[1]
            if q["node"] in smooth_on and x[0, 0].numel() == 1:
                smooth_on.discard(q["node"])  # one position per channel (a squeeze-excitation conv): see qat.py
            if q["node"] in smooth_on:
                xd = x.detach()
                xc = xd.movedim(1, 0) if node.op_type == "Conv" else xd.movedim(-1, 0)
                xc = xc.reshape(xc.shape[0], -1)
                lo, hi = xc.amin(dim=1).double(), xc.amax(dim=1).double()
                st[3] = lo if st[3] is None else torch.minimum(st[3], lo)
                st[4] = hi if st[4] is None else torch.maximum(st[4], hi)
                take = max(1, sample_columns // n_batches)
                st[2].append(cols[:, torch.randperm(cols.shape[1], generator=gen)[:take]])
            return x
        return hook

    student.observe({(q["node"], 0): capture(q, node, attrs, n_in, kernel) for q, node, attrs, n_in, kernel in todo},
                    _same_shape_batches(feeds, input_names, batch))

    def round_weights(W, H):
        """GPTQ's weight on H, or round-to-nearest where GPTQ is not better (or H cannot be factored), and the scale."""
        scale = torch.clamp(W.abs().amax(dim=1) / 127.0, min=1e-12)
        rtn = torch.clamp(torch.round(W / scale[:, None]), -127, 127) * scale[:, None]
        try:
            K, scale = gptq_matrix(torch, W, H, damp)
        except RuntimeError:  # torch.linalg.LinAlgError: H not positive definite even after damping
            return rtn, scale, None
        Wg = K * scale[:, None]
        err = lambda Wq: float(torch.einsum("oi,ij,oj->", Wq - W, H, Wq - W))  # noqa: E731
        e_rtn, e_gptq = err(rtn), err(Wg)
        if not e_gptq <= e_rtn:  # an ill-conditioned H (or NaN) can make GPTQ worse: that layer keeps plain rounding
            return rtn, scale, None
        return Wg, scale, (e_rtn, e_gptq)

    out: Dict[str, Rounded] = {}
    n_smoothed = 0
    for q, node, attrs, n_in, kernel in todo:
        H, count, sample, ch_min, ch_max = stats[q["node"]]
        if H is None or count <= 0:
            continue
        H = H / count
        w = student.value_of(q["weight"]).detach()
        W, back = _as_rows(w.double(), q["axis"])
        s = alpha = plain = rounded = None
        if q["node"] in smooth_on and sample and ch_min is not None and n_in % ch_min.numel() == 0:
            choice = smoothing.choose(torch, W, H, torch.cat(sample, dim=1), ch_min, ch_max, n_in // ch_min.numel(),
                                      round_weights, act_qrange, smooth_alphas)
            s, alpha, rounded = choice.s, choice.alpha, choice.rounded  # the chosen candidate's rounding (unscaled if none)
            if s is not None:
                Wp, scale_p, errs_p = choice.rounded_none
                if errs_p is not None:
                    plain = ((back(Wp) - w.double()).float().numpy(), scale_p.float().numpy())
                sc = torch.from_numpy(s).double().repeat_interleave(n_in // s.size)
                W = W * sc[None, :]
                n_smoothed += 1
        Wq, scale, errs = rounded if rounded is not None else round_weights(W, H)
        if errs is None and s is None:
            continue
        e_rtn, e_gptq = errs if errs is not None else (float("nan"), float("nan"))
        base = back(W)  # the (scaled) FP32 weight in its own layout
        out[q["node"]] = Rounded((back(Wq) - base).float().numpy(), scale.float().numpy(), e_rtn, e_gptq, s, alpha, plain)
    if progress:
        gains = [r.e_rtn / r.e_gptq for r in out.values() if r.e_gptq > 0]
        progress(f"qat: GPTQ weight rounding of {len(out)} of {len(quantized)} weighted ops on {len(feeds)} samples: layer output "
                 f"error {np.median(gains) if gains else float('nan'):.1f}x lower than round-to-nearest (median)"
                 + (f"; activation smoothing on {n_smoothed} of {n_candidates} candidate ops ({n_candidates - len(smooth_on)} left out: "
                    f"one position per channel)" if n_candidates else ""))
    return out
