"""Variant search: build every feasible runtime x precision for a profile, measure each ON THE TARGET,
and pick the fastest one whose end-to-end fidelity meets the accuracy budget."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field

from edgekit.core.runtimes import host_checkable
from edgekit.core.errors import EdgekitError, FidelityError, PlanError
from edgekit.quality.fidelity import compare, describe
from edgekit.core.pipeline import DataSources, Pipeline, PipelineResult
from edgekit.core.plan import Plan, PlanOptions, make_plan
from edgekit.core.profiles import DeviceProfile
from edgekit.core.results import BenchmarkResult, FidelityResult
from edgekit.core.steps import FidelityBudget, drop_budget

DEFAULT_MAX_DROP = 0.01
NEAR_TIE = 0.15  # quick medians closer than this to the fastest are re-measured interleaved before choosing
TIE_ROUNDS = 3
QUICK_BENCH = {"warmup_runs": 5, "warmup_seconds": 0.5, "min_runs": 20, "min_seconds": 2.0, "max_seconds": 30.0}


class Variant(BaseModel):
    """One candidate: what it is, whether it was built, its fidelity to the original and its quick latency."""

    model_config = ConfigDict(extra="forbid")
    runtime: str
    precision: str
    status: str  # chosen | meets budget | violates budget | infeasible | failed
    reason: str = ""
    steps: List[str] = Field(default_factory=list)
    artifact: Optional[str] = None
    size_bytes: Optional[int] = None
    fidelity: Optional[FidelityResult] = None
    median_ms: Optional[float] = None
    rounds_median_ms: Optional[float] = None  # median over interleaved rounds, when near-ties were settled
    build_s: Optional[float] = None


def candidates(profile: DeviceProfile, runtimes: Optional[List[str]] = None, precisions: Optional[List[str]] = None) -> List[Tuple[str, str]]:
    rts = runtimes or list(profile.runtimes)
    precs = precisions or [p for p in ("fp32", "int8", "fp16") if p in profile.precisions]
    return [(r, p) for r in rts for p in precs]


def _budget(max_drop: float, has_task: bool) -> FidelityBudget:
    if has_task:
        return FidelityBudget(min_cosine=0.0, min_task_score=1.0 - max_drop)
    return drop_budget(max_drop, has_task=False)


def search_variants(
    resolved: Any,
    profile: DeviceProfile,
    data: DataSources,
    runner: Any,
    *,
    max_drop: Optional[float],
    host: Optional[str],
    simplify: bool = True,
    shapes: Optional[Dict[str, List[int]]] = None,
    cache_dir=None,
    use_cache: bool = True,
    fidelity_samples: int = 8,
    eval_samples: int = 32,
    runtimes: Optional[List[str]] = None,
    precisions: Optional[List[str]] = None,
    progress: Callable[[str], None] = lambda m: None,
    benchmark: Callable[..., BenchmarkResult],
    tie_rounds: int = TIE_ROUNDS,
    near_tie: float = NEAR_TIE,
    device_runtimes: Optional[List[str]] = None,
) -> Tuple[List[Variant], Optional[Tuple[Plan, PipelineResult]]]:
    """Returns every variant tried and the (plan, pipeline result) of the winner (None if none qualifies)."""
    md = DEFAULT_MAX_DROP if max_drop is None else max_drop
    budget = _budget(md, data.task_metric is not None)
    eval_feeds = data.eval(eval_samples) if data.eval is not None else None
    variants: List[Variant] = []
    built: Dict[int, Tuple[Plan, PipelineResult]] = {}
    ref_outputs = None
    for runtime, precision in candidates(profile, runtimes, precisions):
        label = f"{runtime}/{precision}"
        try:
            plan = make_plan(
                resolved.artifact, resolved.label, profile,
                PlanOptions(runtime=runtime, precision=precision, max_drop=md if precision != "fp32" else None, simplify=simplify, has_calib=data.calib is not None, host=host, shapes=shapes, device_runtimes=device_runtimes),
            )
        except PlanError as exc:
            variants.append(Variant(runtime=runtime, precision=precision, status="infeasible", reason=exc.message))
            continue
        progress(f"variant {label}: building ({', '.join(s.step for s in plan.steps) or 'as is'})")
        t0 = time.perf_counter()
        pipe = Pipeline(plan, profile, data, cache_dir=cache_dir, runner=runner, fidelity_samples=fidelity_samples, progress=lambda m: None, use_cache=use_cache)
        try:
            result = pipe.run(resolved.artifact)
        except FidelityError as exc:
            variants.append(Variant(runtime=runtime, precision=precision, status="violates budget", reason=exc.message.splitlines()[0], steps=[s.step for s in plan.steps]))
            progress(f"variant {label}: violates budget: {variants[-1].reason}")
            continue
        except EdgekitError as exc:
            variants.append(Variant(runtime=runtime, precision=precision, status="failed", reason=exc.message.splitlines()[0], steps=[s.step for s in plan.steps]))
            progress(f"variant {label}: failed: {variants[-1].reason}")
            continue
        build_s = time.perf_counter() - t0
        art = result.artifact
        v = Variant(runtime=runtime, precision=precision, status="meets budget", steps=[s.step for s in plan.steps], artifact=str(art.path), size_bytes=art.total_size_bytes, build_s=round(build_s, 2))
        if eval_feeds is not None or art.format != resolved.artifact.format or plan.steps:
            from edgekit.quality.fidelity import predict
            from edgekit.core.shapes import random_feeds

            feeds = eval_feeds if eval_feeds is not None else random_feeds(data.inputs, fidelity_samples, seed=1234)
            if ref_outputs is None:
                ref_outputs = predict(resolved.artifact, feeds, threads=profile.threads)
            if host_checkable(art.format):
                fid = compare(ref_outputs, predict(art, feeds, threads=profile.threads), budget, data.task_metric, data.task_metric_name, data="eval" if eval_feeds is not None else "random")
                v.fidelity = fid
                if not fid.passed:
                    v.status = "violates budget"
                    v.reason = "; ".join(fid.failures)
        if v.status == "meets budget":
            progress(f"variant {label}: quick benchmark on {runner.target}")
            try:
                quick = benchmark(art, profile, runner, data.inputs, runtime=plan.runtime, bench=QUICK_BENCH)
                v.median_ms = quick.timing.stats.median_ms
            except EdgekitError as exc:
                v.status = "failed"
                v.reason = exc.message.splitlines()[0]
        progress(f"variant {label}: {v.status}" + (f", {v.median_ms:.2f} ms" if v.median_ms else "") + (f", {describe(v.fidelity)}" if v.fidelity else ""))
        built[len(variants)] = (plan, result)
        variants.append(v)
    ok = [(i, v) for i, v in enumerate(variants) if v.status == "meets budget" and v.median_ms is not None]
    if not ok:
        return variants, None
    best_i, best = min(ok, key=lambda iv: iv[1].median_ms)
    reason = f"fastest variant meeting the budget (drop ≤ {md:.2%})"
    near = [i for i, v in ok if v.median_ms <= best.median_ms * (1.0 + near_tie)]
    if len(near) > 1 and tie_rounds > 1:
        best_i, reason = _settle(near, variants, built, profile, runner, data, benchmark, tie_rounds, progress, reason, near_tie)
    variants[best_i] = variants[best_i].model_copy(update={"status": "chosen", "reason": reason})
    return variants, built[best_i]


def _settle(near, variants, built, profile, runner, data, benchmark, rounds, progress, reason, near_tie):
    """Quick medians within `near_tie` of the fastest are noise-sized apart: measure those variants again in
    interleaved rounds (edgekit.quality.rounds) and keep the lowest median over rounds; each rival's reason gets
    its paired ratio to the pick with the interval and verdict."""
    from edgekit.quality.rounds import run_rounds
    from edgekit.quality.stats import median, paired_round_ratios

    names = [f"{variants[i].runtime}/{variants[i].precision}" for i in near]
    progress(f"variant search: {', '.join(names)} are within {near_tie:.0%} of the fastest; {rounds} interleaved rounds decide")
    arts = [built[i][1].artifact for i in near]
    results = run_rounds(benchmark, arts, profile, runner, lambda a: data.inputs, rounds, runtimes=[built[i][0].runtime for i in near],
                         bench=QUICK_BENCH, progress=progress, names=names)
    per_round = [[b.timing.stats.median_ms for b in r] for r in results]
    meds = [median(m) for m in per_round]
    k = min(range(len(near)), key=lambda j: meds[j])
    for j, i in enumerate(near):
        variants[i] = variants[i].model_copy(update={"rounds_median_ms": meds[j]})
        if j != k:
            pr = paired_round_ratios(per_round[k], per_round[j])
            variants[i] = variants[i].model_copy(update={"reason": f"vs chosen over {rounds} interleaved rounds: {pr['ratio']:.3f}x "
                                                                  f"[{pr['lo']:.3f}, {pr['hi']:.3f}], {pr['verdict']}"})
    return near[k], f"{reason}; lowest median over {rounds} interleaved rounds among {len(near)} near-tied variants"
