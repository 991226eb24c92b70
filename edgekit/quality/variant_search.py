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
PROBE_MAX_DROP = 0.99  # the full-INT8 build before any accuracy search: a budget every step accepts (tflite: < 1) that any working build meets
QUICK_BENCH = {"warmup_runs": 5, "warmup_seconds": 0.5, "min_runs": 20, "min_seconds": 2.0, "max_seconds": 30.0}
# An INT8 model runs at most this much faster than the same runtime's FP32 model on a CPU: an INT8 dot-product
# instruction (x86 VNNI vpdpbusd, ARM sdot) does 4 multiply-adds per 32-bit lane where FP32 FMA does 1, and INT8
# moves 4x fewer weight/activation bytes. Measured here: OpenVINO 2.5x, ONNX Runtime 1.6x, TFLite < 1x (PP-OCR det).
# An INT8 variant whose FP32 sibling is more than this much slower than the best variant meeting the budget cannot
# win, so it is not built at all.
INT8_MAX_SPEEDUP = 4.0
# "cannot win" compares quick benchmarks taken minutes apart; the machine's load can change by more than any margin in
# between (a search measured OpenVINO INT8 at 36 ms and FP32 at 8.7 ms while the load went 0.5 -> 15; interleaved,
# INT8 ran 2x faster). Every skip is re-checked by re-timing what it compared, interleaved, before it stands.
VERIFY_ROUNDS = 2
VERIFY_BENCH = {"warmup_runs": 2, "warmup_seconds": 0.2, "min_runs": 5, "min_seconds": 0.5, "max_seconds": 10.0}


class Variant(BaseModel):
    """One candidate: what it is, whether it was built, its fidelity to the original and its quick latency."""

    model_config = ConfigDict(extra="forbid")
    runtime: str
    precision: str
    status: str  # chosen | meets budget | violates budget | not measured | infeasible | failed | skipped
    reason: str = ""
    method: Optional[str] = None  # ptq | qat | lowrank | lowrank+ptq | lowrank+qat | reference (None: plain fp32/fp16)
    steps: List[str] = Field(default_factory=list)
    artifact: Optional[str] = None
    size_bytes: Optional[int] = None
    fidelity: Optional[FidelityResult] = None
    median_ms: Optional[float] = None
    rounds_median_ms: Optional[float] = None  # median over interleaved rounds, when near-ties were settled
    build_s: Optional[float] = None
    score: Optional[float] = None  # task score (else mean cosine) vs the source on held-out data (a PTQ step that
    # failed its budget: the best score its own held-out search measured)
    train_s: Optional[float] = None  # training time of QAT / fine-tuning steps
    mixed_precision: Optional[Dict[str, Any]] = None  # QAT's mixed-precision search: chosen set, proxy, evaluations
    pareto: bool = False  # not dominated in (latency, score, size) among the variants measured
    device_fidelity: Optional[FidelityResult] = None  # outputs computed on the target (mandatory for TensorRT)


def random_feeds_for(data: DataSources, n: int):
    from edgekit.core.shapes import random_feeds

    return random_feeds(data.inputs, n, seed=1234)


def ref_outputs(ref: Dict[str, Any], resolved: Any, feeds, profile: DeviceProfile):
    """The source model's outputs on the scoring feeds (computed once per search)."""
    if "outputs" not in ref:
        from edgekit.quality.fidelity import predict

        ref["outputs"] = predict(resolved.artifact, feeds, threads=profile.threads)
    return ref["outputs"]


def judge_on_device(v: Variant, quick: BenchmarkResult, runner: Any, art: Any, ref: Any, budget: FidelityBudget, data: DataSources) -> Variant:
    """A variant only the device can run: its device score decides, and without one it stays "not measured"
    (never "meets budget", never chosen). Updates and returns `v`."""
    if not quick.evaluation:
        v.status = "not measured"
        v.reason = f"not measured: the {quick.runner} run on {quick.device.arch} returned no evaluation outputs"
        return v
    from edgekit.quality.fidelity import device_fidelity, score_of

    fid = device_fidelity(ref, quick, runner, art, budget, data.task_metric, data.task_metric_name,
                          data="eval" if data.eval is not None else "random", reduce=data.device_reduce)
    v.device_fidelity = fid
    v.score = score_of(fid)
    v.status, v.reason = ("meets budget", "scored on the device") if fid.passed else ("violates budget", "on the device: " + "; ".join(fid.failures))
    return v


def candidates(profile: DeviceProfile, runtimes: Optional[List[str]] = None, precisions: Optional[List[str]] = None) -> List[Tuple[str, str]]:
    rts = runtimes or list(profile.runtimes)
    precs = precisions or [p for p in ("fp32", "int8", "fp16") if p in profile.precisions]
    return [(r, p) for r in rts for p in precs]


def _budget(max_drop: float, has_task: bool) -> FidelityBudget:
    if has_task:
        return FidelityBudget(min_cosine=0.0, min_task_score=1.0 - max_drop)
    return drop_budget(max_drop, has_task=False)


def _one_time_setup_only(progress: Callable[[str], None]) -> Callable[[str], None]:
    """A plain variant's steps build quietly, but creating a tool environment once (onnx2tf: ~2.6 GB, minutes) is
    still said: without it a fresh machine sat on "building (simplify, tflite)" for minutes with no word why."""
    from edgekit.converters.onnx2tf_env import CREATING

    return lambda m: progress(m) if m.startswith(CREATING) else None


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
    train_budget_s: Optional[float] = None,
    tie_rounds: int = TIE_ROUNDS,
    near_tie: float = NEAR_TIE,
    device_runtimes: Optional[List[str]] = None,
    prune: bool = True,
    train_default: bool = False,
) -> Tuple[List[Variant], Optional[Tuple[Plan, PipelineResult]]]:
    """Returns every variant tried and the (plan, pipeline result) of the winner (None if none qualifies).

    With `train_budget_s`, QAT and compound (low-rank -> INT8) variants follow the runtime x precision ones where
    they can still win (edgekit.quality.compound), every variant with a score is timed (the Pareto front needs it),
    and the non-dominated variants (latency, score, size) are flagged `pareto`. With `train_default` (the budget is
    the default, not the user's), training variants are explored only when no INT8 variant met the budget.

    With `prune` (the default) the search measures speed before it spends time on accuracy (_speed_first): plain
    FP32/FP16 variants first, then each INT8 variant as ONE full-INT8 build; its INT8 accuracy search (nodes kept in
    float) runs only if that build misses the budget and is still faster than the best variant meeting it."""
    md = DEFAULT_MAX_DROP if max_drop is None else max_drop
    has_task = data.task_metric is not None
    budget = _budget(md, has_task)
    # THE held-out set (issue 15 §3): the steps' own searches, each step's check and this scoring all use it
    eval_feeds = data.heldout(fidelity_samples)
    variants: List[Variant] = []
    built: Dict[int, Tuple[Plan, PipelineResult]] = {}
    ref: Dict[str, Any] = {}
    memo: Dict[str, Any] = {}  # outputs on the held-out set per artifact content: each model is run on it once per search
    extended = train_budget_s is not None and train_budget_s > 0

    def evaluate(runtime: str, precision: str, plan: Plan, method: Optional[str] = None, always_time: bool = False) -> Variant:
        label = f"{runtime}/{precision}" + (f" {method}" if method else "")
        progress(f"variant {label}: building ({', '.join(s.step for s in plan.steps) or 'as is'})")
        t0 = time.perf_counter()
        pipe = _MemoPipeline(plan, profile, data, cache_dir=cache_dir, runner=runner, fidelity_samples=fidelity_samples, progress=progress if method and method not in ("ptq", "reference") else _one_time_setup_only(progress), use_cache=use_cache, memo=memo)
        base = dict(runtime=runtime, precision=precision, method=method, steps=[s.step for s in plan.steps])
        try:
            result = pipe.run(resolved.artifact)
        except FidelityError as exc:
            variants.append(Variant(status="violates budget", reason=exc.message.splitlines()[0], **base))
            progress(f"variant {label}: violates budget: {variants[-1].reason}")
            return variants[-1]
        except EdgekitError as exc:
            # an INT8 step that missed its budget names the best score its own held-out search reached: keep it, so
            # the report can set PTQ against QAT
            import re

            m = re.search(r"score ([0-9]*\.[0-9]+)", exc.message) if method == "ptq" else None
            variants.append(Variant(status="failed", reason=exc.message.splitlines()[0], score=float(m.group(1)) if m else None, **base))
            progress(f"variant {label}: failed: {variants[-1].reason}")
            return variants[-1]
        build_s = time.perf_counter() - t0
        art = result.artifact
        v = Variant(status="meets budget", artifact=str(art.path), size_bytes=art.total_size_bytes, build_s=round(build_s, 2), **base)
        train = next((r.details.get("qat") for r in result.records if r.step == "qat" and isinstance(getattr(r, "details", None), dict)), None)
        tuned = next(((r.details.get("prune") or {}).get("finetune") for r in result.records if r.step == "prune" and isinstance(getattr(r, "details", None), dict)), None)
        if train or tuned:
            v.train_s = (train or tuned).get("train_s")
        if train and train.get("mixed_precision"):
            v.mixed_precision = train["mixed_precision"]
        if eval_feeds is not None or art.format != resolved.artifact.format or plan.steps:
            from edgekit.core.shapes import random_feeds

            feeds = eval_feeds if eval_feeds is not None else random_feeds(data.inputs, fidelity_samples, seed=1234)
            kind = "eval" if eval_feeds is not None else "random"
            if "outputs" not in ref:
                ref["outputs"] = memo_predict(memo, resolved.artifact, feeds, kind, profile.threads)
            if not host_checkable(art.format):
                v.status, v.reason = "not measured", f"not measured: a {art.format} artifact runs only on the device; its device score decides"
            elif host_checkable(art.format):
                fid = compare(ref["outputs"], memo_predict(memo, art, feeds, kind, profile.threads), budget, data.task_metric, data.task_metric_name, data=kind)
                v.fidelity = fid
                v.score = fid.task_score if fid.task_score is not None else fid.cosine_mean
                if not fid.passed:
                    v.status = "violates budget"
                    v.reason = "; ".join(fid.failures)
        else:
            v.score = 1.0
        on_device = v.status == "not measured"  # only the target can score it: the quick benchmark runs the held-out set
        if v.status == "meets budget" or on_device or ((extended or always_time) and v.score is not None):
            progress(f"variant {label}: quick benchmark on {runner.target}")
            try:
                dev_feeds = (eval_feeds if eval_feeds is not None else random_feeds_for(data, fidelity_samples)) if on_device else None
                quick = benchmark(art, profile, runner, data.inputs, runtime=plan.runtime, bench=QUICK_BENCH,
                                  **({"eval_feeds": dev_feeds, "eval_reduce": data.device_reduce} if on_device else {}))
                v.median_ms = quick.timing.stats.median_ms
                if on_device:
                    judge_on_device(v, quick, runner, art, ref_outputs(ref, resolved, dev_feeds, profile), budget, data)
            except EdgekitError as exc:
                v.status = "failed" if not on_device else "not measured"
                v.reason = ("" if not on_device else "not measured: ") + exc.message.splitlines()[0]
        progress(f"variant {label}: {v.status}" + (f", {v.median_ms:.2f} ms" if v.median_ms else "") + (f", {describe(v.fidelity)}" if v.fidelity else ""))
        built[len(variants)] = (plan, result)
        variants.append(v)
        return v

    def plan_for(runtime: str, precision: str) -> Plan:
        return make_plan(
            resolved.artifact, resolved.label, profile,
            PlanOptions(runtime=runtime, precision=precision, max_drop=md if precision != "fp32" else None, simplify=simplify, has_calib=data.calib is not None, host=host, shapes=shapes, device_runtimes=device_runtimes),
        )

    plans: Dict[Tuple[str, str], Plan] = {}
    order: List[Tuple[str, str]] = []
    for runtime, precision in candidates(profile, runtimes, precisions):
        try:
            plans[(runtime, precision)] = plan_for(runtime, precision)
            order.append((runtime, precision))
        except PlanError as exc:
            variants.append(Variant(runtime=runtime, precision=precision, status="infeasible", reason=exc.message))
    share_tflite_runs(plans, with_fp16=_fp16_math(profile))
    if not prune:
        for runtime, precision in order:
            evaluate(runtime, precision, plans[(runtime, precision)], "ptq" if precision == "int8" else None)
    else:
        def retime(arts: List[Tuple[str, Any, str]]) -> List[float]:
            """Median over VERIFY_ROUNDS interleaved rounds of each (name, artifact, runtime)."""
            from edgekit.quality.rounds import run_rounds
            from edgekit.quality.stats import median

            res = run_rounds(benchmark, [a for _, a, _ in arts], profile, runner, lambda a: data.inputs, VERIFY_ROUNDS,
                             runtimes=[rt for _, _, rt in arts], bench=VERIFY_BENCH, progress=progress, names=[n for n, _, _ in arts])
            return [median([b.timing.stats.median_ms for b in r]) for r in res]

        _speed_first(order, plans, variants, built, evaluate, md, progress, fp16_math=_fp16_math(profile), near_tie=near_tie, retime=retime)
    if extended and train_default and any(v.precision == "int8" and v.status == "meets budget" for v in variants):
        extended = False  # the default training budget is only spent when post-training INT8 missed
    if extended:
        _extend(resolved, profile, data, plans, variants, evaluate, md, has_task, float(train_budget_s), progress, plan_for)
        _mark_pareto(variants)
    # a "reference" FP32 (built only to judge low-rank in an int8-only search) is never the answer to --precision int8
    ok = [(i, v) for i, v in enumerate(variants) if v.status == "meets budget" and v.median_ms is not None and v.method != "reference"]
    if not ok:
        return variants, None
    best_i, best = min(ok, key=lambda iv: iv[1].median_ms)
    reason = f"fastest variant meeting the budget (drop ≤ {md:.2%})"
    near = [i for i, v in ok if v.median_ms <= best.median_ms * (1.0 + near_tie)]
    if len(near) > 1 and tie_rounds > 1:
        best_i, reason = _settle(near, variants, built, profile, runner, data, benchmark, tie_rounds, progress, reason, near_tie)
    variants[best_i] = variants[best_i].model_copy(update={"status": "chosen", "reason": reason})
    return variants, built[best_i]


def _probe_plan(plan: Plan) -> Plan:
    """The same plan with the INT8 step's budget opened (max_drop PROBE_MAX_DROP): the INT8 search stops at its first build, the
    full-INT8 model (nothing kept in float), which the real budget's search would also build first."""
    steps = [s.model_copy(update={"config": {**s.config, "max_drop": PROBE_MAX_DROP}}) if "max_drop" in s.config and str(s.config.get("precision", "")).startswith("int8") else s
             for s in plan.steps]
    return plan.model_copy(update={"steps": steps})


# cpu.features (canonical names, core/profiles.CPU_FEATURES; asimdhp/fphp load as fp16) that mean FP16 arithmetic
FP16_FEATURES = ("fp16", "avx512_fp16", "amx")


def _fp16_math(profile: DeviceProfile) -> bool:
    """Whether the profile's CPU computes in FP16 (ARM fp16/asimdhp, AVX512-FP16, AMX); without it an FP16 variant
    stores FP16 weights and computes in FP32 (or slower, emulated), so it runs no faster than its FP32 sibling."""
    return any(profile.has_feature(f) for f in FP16_FEATURES) or profile.cpu.isa != "x86_64"


def _speed_first(order, plans, variants, built, evaluate, md, progress, fp16_math: bool = True, near_tie: float = NEAR_TIE,
                 retime: Optional[Callable[[List[Tuple[str, Any, str]]], List[float]]] = None) -> None:
    """Measure speed cheaply before spending time on accuracy.

    1. plain variants (FP32, then FP16: no accuracy search) in profile order; they set the first bar. Where the CPU
       has no FP16 arithmetic, an FP16 variant's speed is its FP32 sibling's: when that is clearly slower (by more
       than `near_tie`) than the best variant meeting the budget, the FP16 build is skipped ("cannot win");
    2. INT8 variants, the runtime with the fastest FP32 first. One whose FP32 sibling is more than INT8_MAX_SPEEDUP
       times slower than the best variant meeting the budget cannot win and is not built. The others are each built
       ONCE fully quantized (its quick benchmark is
       the INT8 variant's best case: every node kept in float by an accuracy search only slows it) and scored against
       the real budget on the same eval data:
       - it meets the budget: that is the variant (the search would stop at this same first build);
       - it misses and is not faster than the best variant already meeting the budget: it cannot win; skipped with its
         measured full-INT8 latency and score in the row, its accuracy search never runs;
       - otherwise the full plan runs (the accuracy search), replacing the probe row.
    3. every "cannot win" compared quick benchmarks taken at different times: with `retime`, what each skip compared is
       timed again in interleaved rounds (_verify_skips); a skip the rounds do not confirm is built after all."""
    checks: List[Dict[str, Any]] = []  # each skip: the two timed things it compared, the factor, and what to run if wrong

    def timed(v) -> Optional[Tuple[str, Any, str]]:
        i = next((k for k, x in enumerate(variants) if x is v), None)
        if i is None or i not in built:
            return None
        plan, result = built[i]
        return (f"{v.runtime}/{v.precision}" + (f" {v.method}" if v.method else ""), result.artifact, plan.runtime)

    def check(row, slow, fast, factor: float, redo) -> None:
        if retime is not None and slow is not None and fast is not None:
            checks.append({"row": row, "slow": slow, "fast": fast, "factor": factor, "redo": redo})

    for runtime, precision in [c for c in order if c[1] == "fp32"]:
        evaluate(runtime, precision, plans[(runtime, precision)], None)
    fp16 = [c for c in order if c[1] not in ("fp32", "int8")]

    def plain_fp16() -> None:
        for runtime, precision in fp16:
            best = _best(variants)
            sib = next((v for v in variants if v.runtime == runtime and v.precision == "fp32" and v.median_ms is not None), None)
            if precision == "fp16" and not fp16_math and best is not None and sib is not None and sib.median_ms > best.median_ms * (1.0 + near_tie):
                why = (f"cannot win: the device profile declares no FP16 arithmetic (its cpu.features name none of "
                       f"{', '.join(FP16_FEATURES)}), so {runtime}/fp16 computes like {runtime}/fp32, which ran "
                       f"{sib.median_ms:.2f} ms (quick benchmark), more than {near_tie:.0%} slower than {best.runtime}/{best.precision} "
                       f"meeting the budget at {best.median_ms:.2f} ms; not built")
                variants.append(Variant(runtime=runtime, precision=precision, status="skipped", reason=why, steps=[st.step for st in plans[(runtime, precision)].steps]))
                progress(f"variant {runtime}/{precision}: skipped: {why}")
                check(variants[-1], timed(sib), timed(best), 1.0 + near_tie,
                      lambda rt=runtime, pr=precision: evaluate(rt, pr, plans[(rt, pr)], None))
                continue
            evaluate(runtime, precision, plans[(runtime, precision)], None)

    def fp32_ms(rt: str) -> float:
        v = next((v for v in variants if v.runtime == rt and v.precision == "fp32" and v.median_ms is not None), None)
        return v.median_ms if v is not None else float("inf")

    def fp32_row(rt: str):
        return next((v for v in variants if v.runtime == rt and v.precision == "fp32" and v.median_ms is not None), None)

    def int8_variant(runtime: str, precision: str, bound: bool) -> None:
        plan = plans[(runtime, precision)]
        best = _best(variants)
        if bound and best is not None and int8_cannot_win(fp32_ms(runtime), best.median_ms):
            why = (f"cannot win: {runtime}/fp32 ran {fp32_ms(runtime):.2f} ms (quick benchmark) and INT8 runs at most "
                   f"{INT8_MAX_SPEEDUP:.0f}x faster than FP32 on a CPU, so ≥ {fp32_ms(runtime) / INT8_MAX_SPEEDUP:.2f} ms, not faster than "
                   f"{best.runtime}/{best.precision}{' ' + best.method if best.method else ''} meeting the budget at {best.median_ms:.2f} ms; not built")
            variants.append(Variant(runtime=runtime, precision=precision, method="ptq", status="skipped", reason=why, steps=[st.step for st in plan.steps]))
            progress(f"variant {runtime}/int8: skipped: {why}")
            check(variants[-1], timed(fp32_row(runtime)), timed(best), INT8_MAX_SPEEDUP, lambda: int8_variant(runtime, precision, False))
            return
        if not any("max_drop" in s.config for s in plan.steps):  # no accuracy search in this plan: nothing to prune
            evaluate(runtime, precision, plan, "ptq")
            return
        progress(f"variant {runtime}/int8: full-INT8 build first (speed before accuracy search)")
        i = len(variants)
        v = evaluate(runtime, precision, _probe_plan(plan), "ptq", always_time=True)
        if v.status == "meets budget":
            variants[i] = v.model_copy(update={"reason": "full INT8 (nothing kept in float) meets the budget: no accuracy search needed"})
            built[i] = (plan, built[i][1])
            return
        if v.status == "failed" and i not in built:  # the build itself failed: the accuracy search starts from that same build
            variants[i] = v.model_copy(update={"reason": f"{v.reason} (the full-INT8 build failed, so its accuracy search, which starts from it, was not run)"})
            return
        best = _best(variants[:i])
        if v.median_ms is not None and best is not None and v.median_ms >= best.median_ms:
            score = f" at score {v.score:.4f}" if v.score is not None else ""
            why = (f"cannot win: full INT8 runs {v.median_ms:.2f} ms{score} (quick benchmark), not faster than "
                   f"{best.runtime}/{best.precision}, which meets the budget at {best.median_ms:.2f} ms; keeping nodes in "
                   f"float only slows it, so its accuracy search was skipped")
            slow = timed(v)
            variants[i] = v.model_copy(update={"status": "skipped", "reason": why})
            built.pop(i, None)
            progress(f"variant {runtime}/int8: skipped: {why}")
            check(variants[i], slow, timed(best), 1.0, lambda: evaluate(runtime, precision, plan, "ptq"))
            return
        variants.pop(i)  # misses the budget but could still win: run the accuracy search
        built.pop(i, None)
        evaluate(runtime, precision, plan, "ptq")

    int8 = sorted((c for c in order if c[1] == "int8"), key=lambda c: (fp32_ms(c[0]), order.index(c)))
    for runtime, precision in int8:
        int8_variant(runtime, precision, True)
    plain_fp16()  # after INT8: the bar is as low as it gets before FP16 is judged
    while checks:  # a skip that did not hold is built; that build may skip again (e.g. its full-INT8 probe): verify that too
        pending = checks[:]
        checks.clear()
        _verify_skips(pending, variants, built, retime, progress)


def _verify_skips(checks: List[Dict[str, Any]], variants: List[Variant], built: Dict[int, Any], retime, progress) -> None:
    """Time everything the "cannot win" skips compared again, interleaved (VERIFY_ROUNDS rounds, one harness run each
    per round), and judge each skip on those medians: confirmed, its reason says so with the figures; not confirmed
    (the quick benchmarks were taken under different load), the skipped row is dropped and the variant is built."""
    arts: List[Tuple[str, Any, str]] = []
    index: Dict[str, int] = {}
    for c in checks:
        for key in ("slow", "fast"):
            path = str(c[key][1].path)
            if path not in index:
                index[path] = len(arts)
                arts.append(c[key])
    progress(f"variant search: re-timing the {len(checks)} 'cannot win' decision(s) interleaved ({VERIFY_ROUNDS} rounds over {len(arts)} artifacts): "
             "the quick benchmarks they compared were taken at different times")
    meds = retime(arts)
    redo = []
    for c in checks:
        slow, fast = meds[index[str(c["slow"][1].path)]], meds[index[str(c["fast"][1].path)]]
        k = next((j for j, v in enumerate(variants) if v is c["row"]), None)
        if k is None:
            continue
        held = slow / c["factor"] >= fast if c["factor"] > 1.0 else slow >= fast
        note = (f"{c['slow'][0]} {slow:.2f} ms vs {c['fast'][0]} {fast:.2f} ms over {VERIFY_ROUNDS} interleaved rounds")
        if held:
            variants[k] = variants[k].model_copy(update={"reason": f"{variants[k].reason} (confirmed: {note})"})
            continue
        progress(f"variant {variants[k].runtime}/{variants[k].precision}: the skip did not hold when re-timed interleaved ({note}); building it")
        variants.pop(k)
        for key in sorted(i for i in built if i > k):
            built[key - 1] = built.pop(key)
        redo.append(c["redo"])
    for fn in redo:
        fn()


def int8_cannot_win(fp32_ms: float, best_ms: float) -> bool:
    """An INT8 variant whose runtime's FP32 ran `fp32_ms` cannot beat a variant meeting the budget at `best_ms`
    (INT8_MAX_SPEEDUP); an unmeasured FP32 (inf) gives no bound."""
    return fp32_ms != float("inf") and fp32_ms / INT8_MAX_SPEEDUP >= best_ms


def share_tflite_runs(plans: Dict[Tuple[str, str], Plan], with_fp16: bool = True) -> None:
    """Every TFLite step of the search asks for the precisions of the others as well (TfliteConfig.share_with): the
    first one to run converts them all in ONE onnx2tf run, kept in the cache, and the others take their file from it.

    Without `with_fp16` (a CPU without FP16 arithmetic, where an FP16 variant is usually skipped as "cannot win") the
    shared run leaves the float16 model out (~9 s for PP-OCR det on one core); an FP16 step that does run then
    converts on its own."""
    def prec(s) -> str:
        return str(s.config.get("precision", "fp32"))

    precs = {prec(s) for p in plans.values() for s in p.steps if s.step == "tflite"}
    shared = precs if with_fp16 else precs - {"fp16"}
    if len(shared) < 2:
        return
    for k, plan in list(plans.items()):
        if any(s.step == "tflite" for s in plan.steps):
            steps = [s.model_copy(update={"config": {**s.config, "share_with": sorted(shared - {prec(s)}) if prec(s) in shared else []}})
                     if s.step == "tflite" else s for s in plan.steps]
            plans[k] = plan.model_copy(update={"steps": steps})


def _content_key(art: Any, kind: str, n: int) -> Optional[str]:
    """What a model's outputs on the held-out set depend on: every file's bytes, its format, precision and layout map."""
    import json

    from edgekit.core.fsutil import sha256_file

    if art.format in ("pytorch", "torchscript", "exported_program"):
        return None
    extra = ",".join(sha256_file(f) for f in art.extra_files)
    return f"{kind}:{n}:{art.format}:{art.precision}:{art.sha256}:{extra}:{json.dumps(art.metadata, sort_keys=True, default=str)}"


def memo_predict(memo: Dict[str, Any], art: Any, feeds, kind: str, threads: int):
    """fidelity.predict, once per model content per search (each variant's pipeline checks and the search's scoring
    used to run the source model and each candidate again on the same held-out set)."""
    from edgekit.quality.fidelity import predict

    key = _content_key(art, kind, len(feeds))
    if key is None:
        return predict(art, feeds, threads=threads)
    if key not in memo:
        memo[key] = predict(art, feeds, threads=threads)
    return memo[key]


class _MemoPipeline(Pipeline):
    """A Pipeline whose fidelity checks take model outputs from the search's memo (same held-out set, same threads)."""

    def __init__(self, *args: Any, memo: Dict[str, Any], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._memo = memo

    def _predict(self, art):
        feeds = self.reference_feeds()
        return memo_predict(self._memo, art, feeds, self._feeds_kind, self.profile.threads)


def closest_miss(variants: List[Variant], max_drop: float) -> Optional[str]:
    """When nothing met the budget: the measured variant with the highest score, its speed, and the --max-drop that
    would have accepted it (rounded up to 0.1 %); None when no variant was both scored and timed."""
    import math

    scored = [v for v in variants if v.score is not None and v.median_ms is not None and v.method != "reference"]
    if not scored:
        return None
    v = max(scored, key=lambda x: (x.score, -x.median_ms))
    need = math.ceil(max(0.0, 1.0 - v.score) * 1000 - 1e-9) / 10
    name = f"{v.runtime}/{v.precision}" + (f" {v.method}" if v.method else "")
    return (f"{name} scored {v.score:.4f} (drop {1 - v.score:.2%}, budget {max_drop:.2%}) at {v.median_ms:.2f} ms; "
            f"--max-drop {need:g}% would accept it")


def _best(variants: List[Variant]) -> Optional[Variant]:
    ok = [v for v in variants if v.status == "meets budget" and v.median_ms is not None and v.method != "reference"]
    return min(ok, key=lambda v: v.median_ms) if ok else None


def _extend(resolved, profile, data, plans, variants, evaluate, md, has_task, train_budget_s, progress, plan_for) -> None:
    """Low-rank FP32 (and low-rank -> PTQ INT8) first, since they need no training; then QAT where PTQ INT8 missed and
    low-rank -> QAT, each only where it can still beat the best so far. The training budget is split between the
    trainings that remain after those checks (a low-rank compound that cannot win reserves no training time)."""
    from edgekit.quality import compound

    def skip(runtime: str, precision: str, method: str, why: str) -> None:
        variants.append(Variant(runtime=runtime, precision=precision, method=method, status="skipped", reason=why))
        progress(f"variant {runtime}/{precision} {method}: skipped: {why}")

    teacher = str(resolved.artifact.path) if resolved.artifact.format == "onnx" else None
    ptq_missed = lambda rt: any(v.runtime == rt and v.method == "ptq" and v.status in ("violates budget", "failed") for v in variants)  # noqa: E731
    qat_rts = [rt for (rt, p) in plans if p == "int8" and rt in compound.QAT_RUNTIMES and ptq_missed(rt)]
    for (rt, p) in plans:
        if p == "int8" and rt in compound.NO_QAT and ptq_missed(rt):
            skip(rt, "int8", "qat", compound.NO_QAT[rt])
    int8_rt = next((rt for (rt, p) in plans if p == "int8" and rt in compound.QAT_RUNTIMES), None)
    lowrank_qat = _lowrank_first(resolved, plans, variants, evaluate, md, has_task, int8_rt, skip, plan_for) if int8_rt else None
    if int8_rt is not None and lowrank_qat is not None:
        best = _best(variants)
        if best is not None and best.precision == "int8" and best.method in ("ptq", "lowrank+ptq"):
            skip(int8_rt, "int8", "lowrank+qat", f"{best.runtime}/int8 {best.method} already meets the budget at {best.median_ms:.2f} ms")
            lowrank_qat = None
    prunable = int8_rt is not None and resolved.artifact.format == "pytorch" and getattr(resolved.artifact, "module", None) is not None
    trainings = len(qat_rts) + (1 if (lowrank_qat is not None and teacher) else 0) + (1 if prunable else 0)
    share = train_budget_s / max(1, trainings)
    if qat_rts:
        progress(f"post-training INT8 missed the budget on {', '.join(qat_rts)}; training QAT for up to {train_budget_s / 60:.0f} min in all "
                 f"({share / 60:.1f} min per training; --train-budget sets it, --train-budget off skips training)")
    for rt in qat_rts:
        best = _best(variants)
        if best is not None and best.precision == "int8":
            skip(rt, "int8", "qat", f"{best.runtime}/int8 {best.method or ''} already meets the budget at {best.median_ms:.2f} ms; QAT runs the same INT8 kernels")
            continue
        plan = compound.qat_plan(plans[(rt, "int8")], share, md, has_task)
        if plan is None:
            skip(rt, "int8", "qat", "no INT8 step to train for in this plan")
            continue
        evaluate(rt, "int8", plan, "qat")
    if lowrank_qat is not None and teacher:
        best = _best(variants)
        if best is not None and best.precision == "int8":
            skip(int8_rt, "int8", "lowrank+qat", f"{best.runtime}/int8 {best.method or ''} already meets the budget at {best.median_ms:.2f} ms")
        else:
            plan = compound.qat_plan(lowrank_qat, share, md, has_task, teacher=teacher)
            if plan is not None:
                evaluate(int8_rt, "int8", plan, "lowrank+qat")
    if prunable:
        spent = sum(v.train_s or 0.0 for v in variants)
        _prune_compounds(plans, variants, evaluate, md, has_task, int8_rt, skip, plan_for, max(share, train_budget_s - spent), progress)


def _prune_compounds(plans, variants, evaluate, md, has_task, int8_rt, skip, plan_for, budget_s, progress) -> None:
    """Structured prune -> distill -> INT8 on `int8_rt` for a PyTorch source, mildest ratio first (edgekit.quality.compound):
    each ratio's pruned FP32 (no training) is timed first; its speed-up over the unpruned FP32, applied to the fastest
    INT8 variant, must beat the best variant meeting the budget, or the ratio is skipped before any training. A stronger
    ratio is not tried after a milder one missed the budget, nor once `budget_s` of distillation is spent."""
    from edgekit.quality import compound

    if (int8_rt, "int8") not in plans:
        return
    fp32, fp32_plan = _fp32_reference(plans, variants, evaluate, int8_rt, plan_for)
    if fp32 is None or fp32_plan is None:
        skip(int8_rt, "int8", "prune+distill+ptq", f"no measured {int8_rt}/fp32 variant to compare pruning against")
        return
    left = budget_s
    for ratio in compound.PRUNE_RATIOS:
        label = compound.prune_method(ratio, True, "int8")
        if left <= 0:
            skip(int8_rt, "int8", label, f"the training budget ({budget_s:.0f} s) is spent")
            return
        probe_plan = compound.prune_plan(fp32_plan, ratio, md, has_task)
        if probe_plan is None:
            skip(int8_rt, "int8", label, "the plan has no export step: pruning needs a PyTorch source")
            return
        probe = evaluate(int8_rt, "fp32", probe_plan, compound.prune_method(ratio, False, "fp32"), always_time=True)
        if probe.median_ms is None:
            skip(int8_rt, "int8", label, f"the pruned FP32 model was not measured ({probe.status}: {probe.reason})")
            return
        speedup = fp32.median_ms / probe.median_ms
        if speedup <= 1.0:
            skip(int8_rt, "int8", label, f"pruned FP32 ran {probe.median_ms:.2f} ms vs {fp32.median_ms:.2f} ms unpruned: "
                                         f"pruning {ratio:.0%} does not speed up {int8_rt}")
            continue
        int8s = [v for v in variants if v.precision == "int8" and v.median_ms is not None]
        best = _best(variants)
        if int8s and best is not None:
            est = min(v.median_ms for v in int8s) / speedup
            if est >= best.median_ms:
                skip(int8_rt, "int8", label, f"cannot win: pruning {ratio:.0%} made FP32 {speedup:.2f}x faster, so INT8 would run "
                                             f"~{est:.2f} ms, not faster than {best.runtime}/{best.precision} {best.method or ''} meeting the "
                                             f"budget at {best.median_ms:.2f} ms")
                continue
        plan = compound.prune_plan(plans[(int8_rt, "int8")], ratio, md, has_task, finetune_s=left)
        progress(f"variant {int8_rt}/int8 {label}: pruned FP32 is {speedup:.2f}x faster; distilling for up to {left:.0f} s")
        v = evaluate(int8_rt, "int8", plan, label)
        left -= v.train_s or left
        if v.status != "meets budget":
            for stronger in [r for r in compound.PRUNE_RATIOS if r > ratio]:
                skip(int8_rt, "int8", compound.prune_method(stronger, True, "int8"),
                     f"pruning {ratio:.0%} already missed the budget after distillation; removing more only loses more")
            return


def _fp32_reference(plans, variants, evaluate, rt, plan_for):
    """The measured plain FP32 variant of `rt` and its plan, building it as a "reference" when the search had none."""
    if (rt, "fp32") not in plans:
        try:
            plans[(rt, "fp32")] = plan_for(rt, "fp32")
        except PlanError:
            return None, None
        evaluate(rt, "fp32", plans[(rt, "fp32")], "reference")
    fp32 = next((v for v in variants if v.runtime == rt and v.precision == "fp32" and v.method in (None, "reference") and v.median_ms), None)
    return fp32, plans.get((rt, "fp32"))


def _lowrank_first(resolved, plans, variants, evaluate, md, has_task, int8_rt, skip, plan_for) -> Optional[Plan]:
    """Build low-rank FP32 on `int8_rt` (and low-rank -> PTQ INT8 when low-rank alone meets the budget); returns the
    low-rank INT8 plan to train QAT on, or None when low-rank cannot win (not faster than FP32, or not built)."""
    from edgekit.quality import compound

    if resolved.artifact.format != "onnx":
        skip(int8_rt, "int8", "lowrank+int8", "low-rank compounds are built from an ONNX source here")
        return None
    if (int8_rt, "fp32") not in plans:
        # the low-rank rule compares against this runtime's FP32: build it as a reference (int8-only searches)
        try:
            plans[(int8_rt, "fp32")] = plan_for(int8_rt, "fp32")
            evaluate(int8_rt, "fp32", plans[(int8_rt, "fp32")], "reference")
        except PlanError as exc:
            skip(int8_rt, "int8", "lowrank+int8", f"no {int8_rt}/fp32 plan to compare low-rank against: {exc.message}")
            return None
    fp32 = next((v for v in variants if v.runtime == int8_rt and v.precision == "fp32" and v.method in (None, "reference") and v.median_ms), None)
    fp32_plan = plans.get((int8_rt, "fp32"))
    if fp32_plan is None or fp32 is None:
        skip(int8_rt, "int8", "lowrank+int8", f"no measured {int8_rt}/fp32 variant to compare low-rank against")
        return None
    lr = evaluate(int8_rt, "fp32", compound.lowrank_plan(fp32_plan, md, has_task), "lowrank")
    if lr.median_ms is None or lr.median_ms >= fp32.median_ms:
        why = (f"low-rank FP32 ran {lr.median_ms:.2f} ms vs {fp32.median_ms:.2f} ms unfactorised: factorising does not speed up {int8_rt}"
               if lr.median_ms else f"low-rank FP32 was not measured ({lr.status}: {lr.reason})")
        skip(int8_rt, "int8", "lowrank+int8", why)
        return None
    base = plans[(int8_rt, "int8")]
    if lr.status == "meets budget":
        evaluate(int8_rt, "int8", compound.lowrank_plan(base, md, has_task), "lowrank+ptq")
    else:
        skip(int8_rt, "int8", "lowrank+ptq", "low-rank alone already misses the budget; post-training INT8 only adds error")
    return compound.lowrank_plan(base, md, has_task)


def _mark_pareto(variants: List[Variant]) -> None:
    from edgekit.quality.compound import pareto

    idx = [i for i, v in enumerate(variants) if v.median_ms is not None and v.score is not None and v.size_bytes is not None]
    pts = [{"ms": variants[i].median_ms, "score": variants[i].score, "size": variants[i].size_bytes} for i in idx]
    for k in pareto(pts):
        variants[idx[k]].pareto = True


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
