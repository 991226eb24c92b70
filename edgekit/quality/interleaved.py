"""Before/after latency timed INTERLEAVED with the harness's own loop, and a speed-up claimed only when the
intervals separate.

Timing one variant after the other on a shared machine measures the machine as much as the model (issue 15:
"speed-up 2.148x" for weight sharing, which runs the same dense FP32 MACs). Here each round times A then B (and
the next round B then A) with the harness's warm-up + timed loop; each variant's figure is the median of its
round medians, and its interval is the range of its round medians (for 5 rounds the population median lies in
that range with probability 1 - 2 * 0.5**5 = 0.94). This stays minimal on purpose: the shared statistics module
(edgekit/quality/stats.py) was not on main when it was written.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Dict, List, Tuple


def _bench():
    from edgekit.core.registry import harness_module

    return harness_module("bench")


def time_interleaved(steps: Dict[str, Callable[[], Any]], rounds: int = 5, warmup_runs: int = 3, min_runs: int = 10,
                     min_seconds: float = 0.3, max_seconds: float = 60.0) -> Dict[str, Dict[str, Any]]:
    """Per variant: median of round medians, interval [min, max] of round medians, round medians and total runs."""
    bench = _bench()
    names = list(steps)
    for name in names:
        bench.warm_up(steps[name], warmup_runs, 0.0, max_seconds)
    per: Dict[str, List[float]] = {n: [] for n in names}
    runs: Dict[str, int] = {n: 0 for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for name in order:
            samples, _t0, _t1, _capped = bench.timed_loop(steps[name], min_runs, min_seconds, max_seconds, progress_every_s=float("inf"))
            per[name].append(statistics.median(samples) * 1000.0)
            runs[name] += len(samples)
    return {
        n: {"median_ms": round(statistics.median(v), 3), "interval_ms": [round(min(v), 3), round(max(v), 3)],
            "round_medians_ms": [round(x, 3) for x in v], "rounds": rounds, "runs": runs[n], "timing": "interleaved"}
        for n, v in per.items()
    }


def verdict(before: Dict[str, Any], after: Dict[str, Any]) -> Tuple[str, Any]:
    """('faster', x) / ('slower', x) when the intervals separate (x = before/after medians), else ('same', None)."""
    b_lo, b_hi = before["interval_ms"]
    a_lo, a_hi = after["interval_ms"]
    ratio = round(before["median_ms"] / after["median_ms"], 3) if after["median_ms"] else None
    if a_hi < b_lo:
        return "faster", ratio
    if a_lo > b_hi:
        return "slower", ratio
    return "same", None
