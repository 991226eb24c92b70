"""Per-channel activation smoothing for the QAT step's INT8 layers (SmoothQuant, Xiao et al., 2023; the per-layer search
of the migration strength follows AWQ, Lin et al., 2024).

An INT8 activation quantizer has one range per tensor. When a few input channels of a layer span far more than the rest,
that range is set by them and the other channels keep a handful of levels. Dividing input channel j by s_j and
multiplying the weights that read it by s_j leaves the FP32 layer unchanged (W x = (W diag(s)) (diag(s)⁻¹ x)) and moves
part of the range problem from the activation into the weights, which are quantized per output channel and rounded
with GPTQ. s_j = max|x_j|^α / max|W_{:,j}|^(1−α).

Which α (or none) is chosen per layer by the layer's own output error with both sides quantized, on calibration inputs:
E‖Ŵ_s · Q(x / s) − W x‖², Ŵ_s the rounded scaled weight (GPTQ on the scaled input statistics when GPTQ is on), Q the
per-tensor activation quantizer whose range is the min/max of x / s. "None" (s = 1) is always a candidate, so a layer is
smoothed only where that error falls.

In the exported QDQ model the division is a Multiply by 1/s before the activation's QuantizeLinear; the weights are
exported already scaled. Only an activation read by exactly one quantized op can be smoothed (its s is that op's)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np


def migration_scale(torch, act_absmax, w_absmax, alpha: float):
    """s per input channel: max|x|^α / max|w|^(1−α), 1 where either side is 0, clamped to [1e-3, 1e3]."""
    s = act_absmax.clamp(min=1e-8) ** alpha / w_absmax.clamp(min=1e-8) ** (1.0 - alpha)
    s = torch.where((act_absmax > 0) & (w_absmax > 0), s, torch.ones_like(s))
    return s.clamp(1e-3, 1e3)


def fake_quant_tensor(torch, x, lo: float, hi: float, qmin: int, qmax: int):
    """Per-tensor quantize-dequantize of x with the range [lo, hi] (0 included), as the QAT step's activation quantizer
    initialises it: asymmetric (qmin 0) or symmetric (qmin −128)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if qmin < 0:
        scale, zp = max(max(abs(lo), abs(hi)) / 127.0, 1e-8), 0.0
    else:
        scale = max((hi - lo) / 255.0, 1e-8)
        zp = float(np.clip(round(-lo / scale), 0, 255))
    return (torch.clamp(torch.round(x / scale) + zp, qmin, qmax) - zp) * scale


class Choice(NamedTuple):
    """What `choose` found: s per channel (None = no smoothing) and its α, the layer errors without and with it, and
    what `round_weights` returned for the unscaled weight and for the chosen scaled one (the same when s is None)."""

    s: Optional[np.ndarray]
    alpha: Optional[float]
    error_none: float
    error: float
    rounded_none: Any
    rounded: Any


def choose(
    torch,
    W,
    H,
    cols,
    ch_min,
    ch_max,
    per_channel: int,
    round_weights: Callable[[object, object], Any],
    qrange: Tuple[int, int],
    alphas: Sequence[float],
) -> Choice:
    """The smoothing of one layer with the lowest quantized output error.

    W [rows, in_features] (float64), H [in_features, in_features] = E[x xᵀ] of the FP32 inputs, cols [in_features, N] a
    sample of those inputs, ch_min/ch_max [channels] the per-channel min/max of the layer input over all calibration
    positions, `per_channel` the columns per channel (kernel size of a conv: column j*k..j*k+k−1 reads channel j).
    `round_weights(W, H)` gives a tuple whose first item is the quantized W; the caller gets the chosen candidate's back
    (and the unscaled one's), so nothing is rounded twice."""
    ref = W @ cols
    w_absmax = W.abs().reshape(W.shape[0], -1, per_channel).amax(dim=(0, 2))
    a_absmax = torch.maximum(ch_min.abs(), ch_max.abs())

    def error(s):
        sc = s.repeat_interleave(per_channel)
        rounded = round_weights(W * sc[None, :], H / (sc[:, None] * sc[None, :]))
        lo, hi = float((ch_min / s).min()), float((ch_max / s).max())
        Xq = fake_quant_tensor(torch, cols / sc[:, None], lo, hi, *qrange)
        return float(((rounded[0] @ Xq - ref) ** 2).mean()), rounded

    base, base_rounded = error(torch.ones_like(a_absmax))
    best = (None, None, base, base_rounded)
    for a in alphas:
        s = migration_scale(torch, a_absmax, w_absmax, float(a)).float().double()  # the float32 s the export stores
        e, rounded = error(s)
        if e < best[2]:
            best = (s, float(a), e, rounded)
    s, a, e, rounded = best
    return Choice(s.float().numpy() if s is not None else None, a, base, e, base_rounded, rounded)
