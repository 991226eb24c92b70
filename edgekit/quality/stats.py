"""The one statistics module: medians, bootstrap intervals of a ratio of medians, a rank test, verdicts.

Used by `edgekit compare`, `edgekit bench --rounds` (and meant for the variant search and the peer benchmark),
so that every "A is faster than B" in edgekit is decided the same way. numpy only.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

FASTER = "faster"
SLOWER = "slower"
SAME = "no detectable difference"

DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_EFFECT = 0.02  # below this the verdict is "no detectable difference", however tight the interval
DEFAULT_RESAMPLES = 2000
MIN_ROUNDS = 3  # interleaved rounds needed before bench --rounds calls a pair faster or slower


def _arr(x: Sequence[float], what: str = "samples") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise ValueError(f"no finite {what}")
    return a


def median(x: Sequence[float]) -> float:
    return float(np.median(_arr(x)))


def spread(x: Sequence[float]) -> Dict[str, float]:
    """Median, min, max, IQR and the relative IQR (IQR / median) of a set of values."""
    a = _arr(x)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "min": float(a.min()), "max": float(a.max()), "iqr": float(q3 - q1),
            "rel_iqr": float((q3 - q1) / med) if med else float("nan"), "n": int(a.size)}


def _boot_medians(a: np.ndarray, rng: np.random.Generator, resamples: int, chunk_elems: int = 4_000_000) -> np.ndarray:
    """Medians of `resamples` bootstrap resamples of `a`, computed in chunks to bound memory."""
    n = a.size
    per = max(1, chunk_elems // n)
    out = np.empty(resamples)
    done = 0
    while done < resamples:
        k = min(per, resamples - done)
        idx = rng.integers(0, n, size=(k, n))
        out[done : done + k] = np.median(a[idx], axis=1)
        done += k
    return out


def ratio_of_medians(
    base: Sequence[float],
    new: Sequence[float],
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Dict[str, float]:
    """median(new) / median(base) with a percentile bootstrap interval (each set resampled independently).

    > 1 means `new` takes longer than `base`."""
    a, b = _arr(base, "base samples"), _arr(new, "new samples")
    rng = np.random.default_rng(seed)
    ma, mb = _boot_medians(a, rng, resamples), _boot_medians(b, rng, resamples)
    ok = ma > 0
    ratios = mb[ok] / ma[ok]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha]) if ratios.size else (float("nan"), float("nan"))
    med_a = float(np.median(a))
    return {"ratio": float(np.median(b) / med_a) if med_a else float("nan"), "lo": float(lo), "hi": float(hi),
            "confidence": confidence}


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1..ends
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def mann_whitney(base: Sequence[float], new: Sequence[float]) -> Dict[str, float]:
    """Two-sided Mann-Whitney U test (normal approximation with tie correction and continuity correction).

    Returns U of `new`, the p-value and the common-language effect size P(new > base) + P(tie)/2."""
    a, b = _arr(base), _arr(new)
    n1, n2 = a.size, b.size
    allv = np.concatenate([a, b])
    r = rankdata(allv)
    u_new = float(r[n1:].sum() - n2 * (n2 + 1) / 2.0)
    mu = n1 * n2 / 2.0
    _, counts = np.unique(allv, return_counts=True)
    n = n1 + n2
    tie = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return {"u": u_new, "p": 1.0, "effect": 0.5}
    z = (abs(u_new - mu) - 0.5) / math.sqrt(var)
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return {"u": u_new, "p": min(1.0, p), "effect": u_new / (n1 * n2)}


def verdict(lo: float, hi: float, ratio: float, p: Optional[float] = None, alpha: float = 0.05, min_effect: float = DEFAULT_MIN_EFFECT) -> str:
    """faster / slower only when the interval excludes 1, the rank test agrees (if given) and the change is
    at least `min_effect`; anything else is "no detectable difference"."""
    significant = p is None or p < alpha
    if significant and lo > 1.0 and ratio >= 1.0 + min_effect:
        return SLOWER
    if significant and hi < 1.0 and ratio <= 1.0 / (1.0 + min_effect):
        return FASTER
    return SAME


def compare_samples(
    base: Sequence[float],
    new: Sequence[float],
    confidence: float = DEFAULT_CONFIDENCE,
    min_effect: float = DEFAULT_MIN_EFFECT,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Dict[str, object]:
    """Compare two sets of latency samples: ratio of medians (new/base) + bootstrap interval + rank test + verdict."""
    r = ratio_of_medians(base, new, confidence=confidence, resamples=resamples, seed=seed)
    mw = mann_whitney(base, new)
    v = verdict(r["lo"], r["hi"], r["ratio"], mw["p"], alpha=1.0 - confidence, min_effect=min_effect)
    return {**r, "p_value": mw["p"], "effect": mw["effect"], "verdict": v, "min_effect": min_effect,
            "n_base": int(_arr(base).size), "n_new": int(_arr(new).size)}


def paired_round_ratios(
    base_rounds: Sequence[float],
    new_rounds: Sequence[float],
    confidence: float = DEFAULT_CONFIDENCE,
    min_effect: float = DEFAULT_MIN_EFFECT,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Dict[str, object]:
    """Interleaved rounds: per-round ratio new/base of the round medians (pairs share the device's state), their
    median and a bootstrap interval over rounds. With few rounds the interval is wide; that is honest."""
    a, b = np.asarray(base_rounds, dtype=float), np.asarray(new_rounds, dtype=float)
    if a.size != b.size or a.size == 0:
        raise ValueError("paired rounds need the same, non-zero number of rounds")
    ratios = b / a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ratios.size, size=(resamples, ratios.size))
    boots = np.median(ratios[idx], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boots, [alpha, 1.0 - alpha])
    ratio = float(np.median(ratios))
    # sign test across rounds: how often was `new` slower
    slower = int((ratios > 1).sum())
    n = int(ratios.size)
    p = _sign_test_p(slower, n)
    # fewer than MIN_ROUNDS paired rounds cannot tell a difference from the swing between rounds
    v = verdict(float(lo), float(hi), ratio, None, min_effect=min_effect) if n >= MIN_ROUNDS else SAME
    out = {"ratio": ratio, "lo": float(lo), "hi": float(hi), "confidence": confidence, "rounds": n,
           "rounds_slower": slower, "p_value": p, "verdict": v, "per_round": [float(x) for x in ratios]}
    if n < MIN_ROUNDS:  # say why, or an interval that excludes 1 next to "no detectable difference" reads as a bug
        out["note"] = f"no verdict from {n} round(s): a verdict needs --rounds {MIN_ROUNDS} or more"
    return out


def _sign_test_p(k: int, n: int) -> float:
    """Two-sided exact binomial sign test, p(k or more extreme | n, 1/2)."""
    if n == 0:
        return 1.0
    probs = [math.comb(n, i) / 2.0**n for i in range(n + 1)]
    pk = probs[k]
    return float(min(1.0, sum(p for p in probs if p <= pk + 1e-12)))


def pareto_front(points: List[Dict[str, float]], x: str = "latency", y: str = "score", also_lower: Sequence[str] = ()) -> List[int]:
    """Indices of points no other point beats: lower-or-equal x (and every `also_lower` key, e.g. size) and
    higher-or-equal y, strictly better in at least one of them."""
    lower = (x, *also_lower)
    front = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if i == j:
                continue
            no_worse = all(q[k] <= p[k] for k in lower) and q[y] >= p[y]
            if no_worse and (any(q[k] < p[k] for k in lower) or q[y] > p[y]):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


def mean_interval(values: Sequence[float], level: float = 0.95, resamples: int = 4000, seed: int = 0) -> Dict[str, float]:
    """Mean of per-sample scores with a percentile bootstrap interval (deterministic seed): how far the score of
    a held-out evaluation set could move with other samples. One sample gives a zero-width interval."""
    a = _arr(values, "scores")
    if a.size == 1:
        v = float(a[0])
        return {"mean": v, "lo": v, "hi": v, "level": level, "n": 1}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    means = a[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return {"mean": float(a.mean()), "lo": float(lo), "hi": float(hi), "level": level, "n": int(a.size)}
