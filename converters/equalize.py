"""Post-training transforms that make the INT8 ops of the qat step less lossy before (or instead of) training.

- `search_range`: a per-tensor activation range chosen to minimise the quantization MSE of the observed values,
  searched over shrunk min/max candidates (min/max itself is a candidate, so it never scores worse than min/max on
  that objective). Wired into `_ActQuant.init_ranges` as QatConfig `act_range: mse`.
- `equalize_pair`: cross-layer equalisation (Nagel et al. 2019, "Data-Free Quantization") of two consecutive weighted
  ops: output channel i of the first is divided by s_i, input channel i of the second multiplied by s_i, so both
  per-channel weight ranges become sqrt(r1_i * r2_i). Exact when what lies between is positively homogeneous
  (identity, ReLU, a per-channel affine with its shift scaled too); NOT exact through hardswish/clip (ReLU6) or a
  scalar affine `x*a+b` (PP-LCNetV3's blocks), so it is not applied to PP-OCRv4 rec's depthwise->pointwise pairs.
- `corrected_bias`: bias correction of a conv for its weight quantization error, using the per-input-channel mean of
  its input (Nagel et al.'s empirical variant with the mean taken from calibration data): b + (W - Wq) · E[x].

Only numpy/torch; no graph edits here (qat.py calls these in one place).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def _quant_mse(x: np.ndarray, lo: float, hi: float, qmin: int, qmax: int, symmetric: bool) -> float:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        scale = max(abs(lo), abs(hi)) / float(qmax)
        zp = 0.0
    else:
        scale = (hi - lo) / float(qmax - qmin)
        zp = float(np.clip(round(-lo / scale), qmin, qmax)) if scale > 0 else 0.0
    scale = max(scale, 1e-8)
    q = np.clip(np.round(x / scale) + zp, qmin, qmax)
    return float(np.mean(((q - zp) * scale - x) ** 2))


def range_candidates(lo: float, hi: float, steps: int = 16, floor: float = 0.3):
    """(lo, hi) pairs: min and max each shrunk by factors from 1.0 down to `floor` (min/max itself first)."""
    fs = np.linspace(1.0, floor, steps)
    return [(lo * a, hi * b) for a in fs for b in fs]


def search_range(values: np.ndarray, lo: float, hi: float, qmin: int, qmax: int, symmetric: bool, steps: int = 16) -> Tuple[float, float, float, float]:
    """The (lo, hi) among `range_candidates` with the lowest quantization MSE on `values` (which should contain the
    global min and max); returns (lo, hi, mse, mse of min/max)."""
    x = np.asarray(values, dtype=np.float32).ravel()
    base = _quant_mse(x, lo, hi, qmin, qmax, symmetric)
    best = (lo, hi, base)
    for a, b in range_candidates(lo, hi, steps):
        m = _quant_mse(x, a, b, qmin, qmax, symmetric)
        if m < best[2]:
            best = (a, b, m)
    return best[0], best[1], best[2], base


def sample_values(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `k` values of `x` drawn uniformly, plus its min and max (so the min/max candidate sees the extremes)."""
    flat = np.asarray(x, dtype=np.float32).ravel()
    if flat.size > k:
        flat = flat[rng.integers(0, flat.size, size=k)]
    return np.concatenate([flat, [float(np.min(x)), float(np.max(x))]]).astype(np.float32)


def equalize_pair(w1: np.ndarray, b1: Optional[np.ndarray], w2: np.ndarray, depthwise2: bool = False,
                  eps: float = 1e-8) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]:
    """Cross-layer equalisation of conv1 (weight O1 x I1 x kh x kw, bias O1) followed by conv2 (O2 x O1 x ... , or
    O1 x 1 x ... when `depthwise2`). Returns (w1', b1', w2', s) with conv2(f(conv1'(x))) == conv2(f(conv1(x))) for any
    positively homogeneous f between them."""
    r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
    if depthwise2:
        r2 = np.abs(w2.reshape(w2.shape[0], -1)).max(axis=1)
    else:
        r2 = np.abs(np.moveaxis(w2, 1, 0).reshape(w2.shape[1], -1)).max(axis=1)
    s = np.where((r1 > eps) & (r2 > eps), np.sqrt(np.maximum(r1, eps) / np.maximum(r2, eps)), 1.0).astype(w1.dtype)
    shape1 = (-1,) + (1,) * (w1.ndim - 1)
    w1n = w1 / s.reshape(shape1)
    b1n = None if b1 is None else b1 / s
    if depthwise2:
        w2n = w2 * s.reshape((-1,) + (1,) * (w2.ndim - 1))
    else:
        w2n = w2 * s.reshape((1, -1) + (1,) * (w2.ndim - 2))
    return w1n, b1n, w2n, s


def quantize_weight_per_channel(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """Symmetric narrow-range INT8 per output channel (the qat step's `weight_scale` scheme), dequantized."""
    moved = np.moveaxis(w, axis, 0)
    scale = np.maximum(np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1) / 127.0, 1e-12)
    shape = (-1,) + (1,) * (moved.ndim - 1)
    q = np.clip(np.round(moved / scale.reshape(shape)), -127, 127) * scale.reshape(shape)
    return np.moveaxis(q, 0, axis).astype(w.dtype)


def corrected_bias(w: np.ndarray, wq: np.ndarray, b: Optional[np.ndarray], in_mean: np.ndarray, group: int = 1) -> np.ndarray:
    """Bias of a Conv (weight O x I/g x kh x kw) that cancels the expected output shift of its quantized weight `wq`
    for an input with per-channel mean `in_mean` (length I): b + sum_{i,kh,kw} (W - Wq)[o, i] * E[x_i]. Border
    padding is ignored (interior pixels exact)."""
    o = w.shape[0]
    err = (w - wq).reshape(o, w.shape[1], -1).sum(axis=2)  # O x I/g
    ipg = w.shape[1]
    opg = o // group
    shift = np.empty(o, dtype=np.float64)
    for g in range(group):
        m = in_mean[g * ipg:(g + 1) * ipg]
        shift[g * opg:(g + 1) * opg] = err[g * opg:(g + 1) * opg] @ m
    base = np.zeros(o, dtype=w.dtype) if b is None else b
    return (base + shift).astype(w.dtype)
