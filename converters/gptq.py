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
weight. Depthwise/grouped convs and ConvTranspose keep round-to-nearest."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np


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
) -> Dict[str, Tuple[np.ndarray, np.ndarray, float, float]]:
    """GPTQ for every covered op of `quantized` on the FP32 model's own layer inputs over `feeds`.

    At most `max_columns` input positions per layer and batch enter H (a random, seeded subset: a 3x3 conv with 64
    input channels at 320x320 would otherwise give 576 x 1.6 M values per batch of 16).
    Returns {node name: (offset, scale, output error RTN, output error GPTQ)}; a layer where GPTQ's output error on H is
    not below round-to-nearest's is left out (it keeps plain rounding): `offset` = GPTQ's INT8 weight − the
    FP32 weight (in the weight's layout), `scale` the per-output-channel scale. The QAT step keeps the FP32 weight as
    the trainable parameter and quantizes weight + offset on the fixed scale, so at the FP32 weight the export is
    exactly GPTQ's integers, and ops later kept in FP32 keep their original weights."""
    nodes = {n.name: (n, a) for n, a in zip(student.nodes, student.node_attrs)}
    todo = []
    for q in quantized:
        node, attrs = nodes[q["node"]]
        w = student.value_of(q["weight"])
        if eligible(node, attrs, w):
            todo.append((q, node, attrs, _as_rows(w.detach(), q["axis"])[0].shape[1], tuple(w.shape[2:])))
    if not todo:
        return {}
    stats: Dict[str, List[Any]] = {q["node"]: [None, 0] for q, *_ in todo}

    gen = torch.Generator().manual_seed(0)

    def capture(q, node, attrs, n_in, kernel):
        def hook(x):
            cols = _columns(torch, node, attrs, x.detach(), n_in, kernel)
            if cols is None:
                stats[q["node"]][1] = -1
                return x
            if cols.shape[1] > max_columns:  # a high-resolution conv: a random subset of positions estimates H as well
                cols = cols[:, torch.randperm(cols.shape[1], generator=gen)[:max_columns]]
            cols = cols.double()
            s = stats[q["node"]]
            if s[1] >= 0:
                s[0] = cols @ cols.T if s[0] is None else s[0] + cols @ cols.T
                s[1] += cols.shape[1]
            return x
        return hook

    student.observe({(q["node"], 0): capture(q, node, attrs, n_in, kernel) for q, node, attrs, n_in, kernel in todo},
                    _same_shape_batches(feeds, input_names, batch))
    out: Dict[str, Tuple[np.ndarray, np.ndarray, float, float]] = {}
    for q, node, attrs, n_in, _kernel in todo:
        H, count = stats[q["node"]]
        if H is None or count <= 0:
            continue
        H = H / count
        w = student.value_of(q["weight"]).detach()
        W, back = _as_rows(w.double(), q["axis"])
        try:
            K, scale = gptq_matrix(torch, W, H, damp)
        except RuntimeError:  # torch.linalg.LinAlgError: H not positive definite even after damping: keep rounding
            continue
        Wg = K * scale[:, None]
        rtn = torch.clamp(torch.round(W / scale[:, None]), -127, 127) * scale[:, None]
        err = lambda Wq: float(torch.einsum("oi,ij,oj->", Wq - W, H, Wq - W))  # noqa: E731
        e_rtn, e_gptq = err(rtn), err(Wg)
        if not e_gptq <= e_rtn:  # an ill-conditioned H (or NaN) can make GPTQ worse: that layer keeps plain rounding
            continue
        out[q["node"]] = ((back(Wg) - w.double()).float().numpy(), scale.float().numpy(), e_rtn, e_gptq)
    if progress:
        gains = [r / g for _, _, r, g in out.values() if g > 0]
        progress(f"qat: GPTQ weight rounding of {len(out)} of {len(quantized)} weighted ops on {len(feeds)} samples: layer output "
                 f"error {np.median(gains) if gains else float('nan'):.1f}x lower than round-to-nearest (median)")
    return out
