"""Interleaved benchmark rounds: A B C, A B C, ... on one device, so drift and throttling hit every candidate alike.

Used by `edgekit bench A B --rounds N` and by the variant search to settle near-ties. Each run is the ordinary
harness run through the runner, by the `benchmark` callable the caller passes (edgekit.workflows.deploy.benchmark);
nothing here times anything. The statistics come from edgekit.quality.stats."""

from __future__ import annotations

import time
from itertools import combinations
from typing import Any, Callable, Dict, List, Optional, Sequence

from edgekit.quality import stats


def run_rounds(
    benchmark: Callable[..., Any],
    artifacts: Sequence[Any],
    profile: Any,
    runner: Any,
    inputs_for: Callable[[Any], Any],
    rounds: int,
    cooldown_s: float = 0.0,
    runtimes: Optional[Sequence[Optional[str]]] = None,
    bench: Optional[Dict[str, Any]] = None,
    progress: Optional[Callable[[str], None]] = None,
    sleep: Callable[[float], None] = time.sleep,
    names: Optional[Sequence[str]] = None,
    feed_for: Optional[Callable[[Any], Any]] = None,
) -> List[List[Any]]:
    """results[i][r] = BenchmarkResult of artifact i in round r, measured in the order round by round.

    `runtimes[i]` is artifact i's runtime (None: from its format)."""
    progress = progress or (lambda m: None)
    runtimes = list(runtimes) if runtimes is not None else [None] * len(artifacts)
    names = list(names) if names is not None else [a.path.name for a in artifacts]
    results: List[List[Any]] = [[] for _ in artifacts]
    for r in range(rounds):
        for i, art in enumerate(artifacts):
            progress(f"round {r + 1}/{rounds}: {names[i]}")
            extra = {"feed": feed_for(art)} if feed_for is not None else {}  # --inputs: real values instead of random
            results[i].append(benchmark(art, profile, runner, inputs_for(art), runtime=runtimes[i], bench=bench, **extra))
        if cooldown_s > 0 and r + 1 < rounds:
            progress(f"cooldown {cooldown_s:g} s")
            sleep(cooldown_s)
    return results


def summarize(names: Sequence[str], results: List[List[Any]], confidence: float = stats.DEFAULT_CONFIDENCE,
              min_effect: float = stats.DEFAULT_MIN_EFFECT) -> Dict[str, Any]:
    """Each artifact's median and spread over rounds; every pair's ratio (later / earlier) with an interval.

    With 2+ rounds the pair statistic is the per-round paired ratio (bootstrap over rounds); with one round it is
    the ratio of medians of the two sample sets (bootstrap over samples + rank test)."""
    per = []
    for name, rs in zip(names, results):
        meds = [b.timing.stats.median_ms for b in rs]
        pooled = [x for b in rs for x in b.timing.samples_ms]
        per.append({"name": name, "round_medians_ms": meds, "over_rounds": stats.spread(meds),
                    "pooled_median_ms": stats.median(pooled), "runs": len(pooled)})
    pairs = []
    for i, j in combinations(range(len(names)), 2):
        if len(results[i]) > 1:
            r = stats.paired_round_ratios(per[i]["round_medians_ms"], per[j]["round_medians_ms"], confidence=confidence, min_effect=min_effect)
        else:
            r = stats.compare_samples(results[i][0].timing.samples_ms, results[j][0].timing.samples_ms, confidence=confidence, min_effect=min_effect)
        pairs.append({"base": names[i], "other": names[j], **r})
    return {"rounds": len(results[0]) if results else 0, "artifacts": per, "pairs": pairs}


def describe(summary: Dict[str, Any]) -> List[str]:
    lines = []
    for p in summary["pairs"]:
        v = p["verdict"]
        lines.append(f"{p['other']} / {p['base']}: {p['ratio']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}] → "
                     + (f"{p['other']} is {v}" if v != stats.SAME else v))
    return lines
