"""Activation ranges for the qat step's INT8 quantizers, chosen from data before (or instead of) training.

- `search_range`: a per-tensor activation range chosen to minimise the quantization MSE of the observed values,
  searched over shrunk min/max candidates (min/max itself is a candidate, so it never scores worse than min/max on
  that objective). Wired into `_ActQuant.init_ranges` as QatConfig `act_range: mse`.

Only numpy; no graph edits here (qat.py calls these in one place).
"""

from __future__ import annotations

from typing import Tuple

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
