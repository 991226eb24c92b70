"""Compound and QAT variants in the variant search, and the Pareto front over (latency, score, size)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.pipeline import DataSources
from edgekit.core.plan import PlanOptions, make_plan
from edgekit.core.profiles import load_profile
from edgekit.core.registry import get_runner
from edgekit.core.runner_interface import InputSpec
from edgekit.quality import compound
from edgekit.quality.variant_search import search_variants
from edgekit.workflows.deploy import resolve_model

torch = pytest.importorskip("torch")


def test_pareto_keeps_only_non_dominated_points():
    pts = [
        {"ms": 10, "score": 0.99, "size": 5},   # fast, accurate
        {"ms": 12, "score": 0.98, "size": 6},   # dominated by 0
        {"ms": 5, "score": 0.90, "size": 5},    # faster, less accurate: on the front
        {"ms": 20, "score": 1.00, "size": 20},  # most accurate: on the front
        {"ms": 10, "score": 0.99, "size": 4},   # dominates 0 (smaller)
    ]
    assert compound.pareto(pts) == [2, 3, 4]


def test_qat_plan_goes_before_openvino_and_replaces_quantize_ort(ppocr_rec_path):
    prof = load_profile("x86-cpu")
    art = resolve_model(str(ppocr_rec_path)).artifact
    ov = make_plan(art, "rec", prof, PlanOptions(runtime="openvino", precision="int8", max_drop=0.01, has_calib=True))
    q = compound.qat_plan(ov, 120, 0.01, True)
    assert [s.step for s in q.steps] == ["qat", "openvino"]
    assert q.steps[0].config["target"] == "openvino" and q.steps[0].config["train_budget_s"] == 120
    ort = make_plan(art, "rec", prof, PlanOptions(runtime="onnxruntime", precision="int8", max_drop=0.01, has_calib=True))
    q = compound.qat_plan(ort, 60, 0.01, True, teacher="/src.onnx")
    assert "quantize-ort" not in [s.step for s in q.steps] and q.steps[-1].step == "qat" and q.steps[-1].config["teacher"] == "/src.onnx"
    lr = compound.lowrank_plan(ov, 0.01, True)
    assert [s.step for s in lr.steps] == ["lowrank", "openvino"]
    fp32 = make_plan(art, "rec", prof, PlanOptions(runtime="onnxruntime", precision="fp32"))
    assert compound.qat_plan(fp32, 60, 0.01, True) is None  # nothing to quantize


class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32, 16)

    def forward(self, x):
        y = torch.relu(self.c2(torch.relu(self.c1(x))))
        return torch.softmax(self.fc(y.mean(dim=(2, 3))), dim=-1)


def _small_search(tmp_path, fingerprint):
    """The small real CNN as ONNX, its calibration/held-out pools and the x86-cpu profile, for a search."""
    torch.manual_seed(0)
    path = tmp_path / "small.onnx"
    torch.onnx.export(_Small().eval(), (torch.randn(1, 3, 16, 16),), str(path), input_names=["x"], output_names=["p"], opset_version=13, dynamo=False)
    rng = np.random.default_rng(0)
    pool = [{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(24)]
    data = DataSources(inputs=[InputSpec(name="x", shape=[1, 3, 16, 16], dtype="float32")],
                       calib=lambda n: pool[:min(n, 16)], eval=lambda n: pool[16:16 + min(n, 8)], fingerprint=fingerprint)
    return data, load_profile("x86-cpu"), resolve_model(str(path))


def short_bench(art, profile, runner, inputs, runtime=None, bench=None):
    from edgekit.workflows.deploy import benchmark

    return benchmark(art, profile, runner, inputs, runtime=runtime, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 5, "min_seconds": 0})


def test_search_with_train_budget_lists_qat_and_compound_variants(tmp_path):
    """PTQ misses a zero budget, so QAT is tried; the low-rank variant and its INT8 compound are built or skipped with the rule's reason.

    INT8 only: with an FP32 variant meeting the zero budget, a tiny CNN's full-INT8 probe (its Quantize/Dequantize
    overhead is most of 0.15 ms) can be slower than FP32 and is then rightly skipped as "cannot win" (a CI run did
    this), and no QAT follows. The FP32 the low-rank rule compares against is built as a reference row."""
    pytest.importorskip("openvino")
    data, prof, resolved = _small_search(tmp_path, "test:small")

    seen = []
    with get_runner("local")(prof) as runner:
        variants, best = search_variants(resolved, prof, data, runner, max_drop=0.0, host=None, cache_dir=tmp_path / "cache",
                                runtimes=["openvino"], precisions=["int8"], benchmark=short_bench,
                                train_budget_s=4.0, progress=seen.append)
    by = {(v.precision, v.method): v for v in variants}
    ptq = by[("int8", "ptq")]
    assert ptq.status in ("violates budget", "failed")
    qat = by[("int8", "qat")]
    assert qat.steps == ["qat", "openvino"]
    # a zero budget on a mean-cosine score: QAT's INT8 model (GPTQ-rounded, mixed precision) may round to exactly 1.0
    # in float32 and then meets it; otherwise it is listed with the score that misses
    assert qat.score is not None and (qat.status in ("chosen", "meets budget") and qat.score >= 1.0 - 1e-7
                                      or qat.status == "violates budget" and 0.5 < qat.score < 1.0)
    assert qat.median_ms is not None and qat.train_s is not None and qat.train_s <= 10
    assert any(m.startswith("qat: trained") or m.startswith("qat: not trained") for m in seen)  # the QAT step's progress reaches the caller
    # the QAT step's mixed-precision search (a zero budget: it runs) is recorded with the variant in report.json
    assert qat.mixed_precision is not None and qat.mixed_precision["evaluations"] >= 2
    assert set(qat.mixed_precision["quantized"]).isdisjoint(qat.mixed_precision["kept_float"])
    lowrank = by[("fp32", "lowrank")]
    assert lowrank.steps[0] == "lowrank" and lowrank.score is not None and lowrank.median_ms is not None
    compounds = [v for v in variants if v.method in ("lowrank+int8", "lowrank+ptq", "lowrank+qat")]
    assert compounds, "a compound variant is listed (built, or skipped with its reason)"
    for v in compounds:
        assert v.status != "skipped" or ("ms" in v.reason or "budget" in v.reason)
    assert by[("fp32", "reference")].median_ms is not None
    if lowrank.median_ms >= by[("fp32", "reference")].median_ms:
        assert all(v.status == "skipped" for v in compounds)
    assert any(v.pareto for v in variants)
    assert all(not v.pareto for v in variants if v.median_ms is None)


@pytest.mark.parametrize("args, message", [
    (["--precision", "fp32", "--train-budget", "5m"], "--train-budget applies to --precision int8 or auto, not fp32"),
    (["--precision", "int8", "--train-budget", "5x"], "expected a duration such as 300, 90s, 5m or 1h"),
])
def test_deploy_train_budget_errors_are_one_line(cli, args, message):
    res = cli("deploy", "zoo:ppocr-rec", "--profile", "x86-cpu", *args, "--no-bench")
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr


def test_default_training_budget_is_spent_only_when_post_training_int8_missed(tmp_path):
    """With the default budget (no --train-budget), a search whose PTQ INT8 meets the budget trains nothing; one
    whose PTQ misses says so and tries QAT."""
    pytest.importorskip("openvino")
    data, prof, resolved = _small_search(tmp_path, "test:small-default")

    runs = {}
    with get_runner("local")(prof) as runner:
        for md in (0.5, 0.0):
            seen = []
            variants, _ = search_variants(resolved, prof, data, runner, max_drop=md, host=None, cache_dir=tmp_path / "cache",
                                          runtimes=["openvino"], precisions=["int8"], benchmark=short_bench,
                                          train_budget_s=3.0, train_default=True, progress=seen.append)
            runs[md] = (variants, seen)
    loose, _ = runs[0.5]
    assert [v.method for v in loose] == ["ptq"] and loose[0].status == "chosen"
    strict, said = runs[0.0]
    assert strict[0].method == "ptq" and strict[0].status in ("violates budget", "failed")
    assert any(v.method == "qat" and v.status != "skipped" for v in strict)
    assert any("missed the budget" in m and "--train-budget off" in m for m in said)


# ---------------------------------------------------------------- prune -> distill -> INT8 (PyTorch sources)

class _Mlp(torch.nn.Module):
    """A small real PyTorch model with wide hidden layers that structured pruning can thin; half of each hidden layer's
    units are weak (weights x 0.05), as low-importance units are in trained networks."""

    def __init__(self, weak: bool = True):
        super().__init__()
        self.fc1 = torch.nn.Linear(32, 128)
        self.fc2 = torch.nn.Linear(128, 128)
        self.out = torch.nn.Linear(128, 16)
        with torch.no_grad():
            for fc in (self.fc1, self.fc2) if weak else ():
                fc.weight[::2] *= 0.05
                fc.bias[::2] *= 0.05

    def forward(self, x):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _mlp_search(fingerprint, weak: bool = True):
    from edgekit.core.artifact import Artifact
    from edgekit.workflows.deploy import ResolvedModel

    torch.manual_seed(0)
    art = Artifact.from_module(_Mlp(weak).eval(), (torch.randn(1, 32),), input_names=["x"], output_names=["y"], name="mlp")
    rng = np.random.default_rng(0)
    pool = [{"x": rng.normal(size=(1, 32)).astype(np.float32)} for _ in range(48)]
    data = DataSources(inputs=[InputSpec(name="x", shape=[1, 32], dtype="float32")],
                       calib=lambda n: pool[:min(n, 32)], eval=lambda n: pool[32:32 + min(n, 16)], fingerprint=fingerprint)
    return data, load_profile("x86-cpu"), ResolvedModel(art, "mlp")


def _weight_bytes_bench(art, profile, runner, inputs, runtime=None, bench=None):
    """The real benchmark, shortened, whose latency is then replaced by the artifact's size on disk in MB: a latency
    proxy that does not depend on the machine or its load (pruned and INT8 models are smaller, as they are faster)."""
    from edgekit.workflows.deploy import benchmark

    res = benchmark(art, profile, runner, inputs, runtime=runtime, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0})
    res.timing.stats.median_ms = art.total_size_bytes / 1e6
    return res


def _constant_bench(art, profile, runner, inputs, runtime=None, bench=None):
    from edgekit.workflows.deploy import benchmark

    res = benchmark(art, profile, runner, inputs, runtime=runtime, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0})
    res.timing.stats.median_ms = 1.0
    return res


def test_prune_plan_prunes_the_module_before_export():
    prof = load_profile("x86-cpu")
    data, _, resolved = _mlp_search("test:mlp-plan")
    int8 = make_plan(resolved.artifact, "mlp", prof, PlanOptions(runtime="openvino", precision="int8", max_drop=0.01, has_calib=True))
    p = compound.prune_plan(int8, 0.25, 0.01, False, finetune_s=30, threads=1)
    assert [s.step for s in p.steps] == ["prune", "export", "openvino"]
    assert p.steps[0].config["ratio"] == 0.25 and p.steps[0].config["finetune_s"] == 30 and p.steps[0].config["threads"] == 1
    probe = compound.prune_plan(int8, 0.5, 0.01, False)
    assert "finetune_s" not in probe.steps[0].config  # the speed probe trains nothing
    onnx_plan = compound.qat_plan(int8, 10, 0.01, False)
    assert compound.prune_plan(onnx_plan.model_copy(update={"steps": onnx_plan.steps[1:]}), 0.25, 0.01, False) is None  # no export: not a PyTorch plan
    assert compound.prune_method(0.25, True, "int8") == "prune25%+distill+ptq" and compound.prune_method(0.5, False, "fp32") == "prune50%"


def test_prune_step_distillation_brings_the_pruned_module_back_towards_the_source(tmp_path):
    pytest.importorskip("torch_pruning")
    from edgekit.converters.prune import PruneConfig, PruneStep
    from edgekit.core.steps import StepContext

    data, prof, resolved = _mlp_search("test:mlp-step", weak=False)  # every unit matters: pruning loses, distillation recovers
    src = resolved.artifact
    feeds = data.eval(16)
    x = torch.from_numpy(np.concatenate([f["x"] for f in feeds]))
    with torch.no_grad():
        ref = src.module(x)

    def err(art):
        with torch.no_grad():
            return float(((art.module(x) - ref) ** 2).mean())

    def run(name, **cfg):
        ctx = StepContext(work_dir=tmp_path / name, profile=prof, calib_data=data.calib)
        out = PruneStep().run(src, PruneConfig(ratio=0.5, measure=False, **cfg), ctx)
        return out, ctx.report["prune"]

    plain, plain_rec = run("plain")
    tuned, rec = run("tuned", finetune_s=120, finetune_max_steps=150, finetune_lr=3e-3, threads=1)
    assert "finetune" not in plain_rec
    assert rec["finetune"]["steps"] == 150 and rec["finetune"]["samples"] == 32
    assert tuned.module.fc1.out_features == plain.module.fc1.out_features < 128  # same structure, really thinner
    assert err(tuned) < 0.8 * err(plain)  # held-out samples (never trained on) got closer to the source
    assert any("distilled from the source module" in n for n in rec["notes"])

    ctx = StepContext(work_dir=tmp_path / "nodata", profile=prof, calib_data=None)
    from edgekit.core.errors import CalibrationError

    with pytest.raises(CalibrationError, match="finetune_s needs calibration data"):
        PruneStep().run(src, PruneConfig(ratio=0.5, measure=False, finetune_s=5), ctx)


def test_search_builds_prune_distill_int8_and_stops_at_the_first_ratio_that_misses(tmp_path):
    """A PyTorch source with a training budget: the pruned FP32 (no training) is timed first, then prune -> distill ->
    INT8 is built, trained and scored end to end; it misses a zero budget, so the stronger ratio is skipped with why."""
    pytest.importorskip("openvino")
    pytest.importorskip("torch_pruning")
    data, prof, resolved = _mlp_search("test:mlp-search")
    seen = []
    with get_runner("local")(prof) as runner:
        variants, _ = search_variants(resolved, prof, data, runner, max_drop=0.0, host=None, cache_dir=tmp_path / "cache",
                                      runtimes=["openvino"], precisions=["fp32", "int8"], benchmark=_weight_bytes_bench,
                                      train_budget_s=6.0, progress=seen.append, tie_rounds=1)
    by = {v.method: v for v in variants if v.method}
    mild, strong = compound.PRUNE_RATIOS[0], compound.PRUNE_RATIOS[1]
    probe = by[compound.prune_method(mild, False, "fp32")]
    assert probe.steps[0] == "prune" and probe.median_ms is not None and probe.score is not None
    assert probe.median_ms < by.get("reference", next(v for v in variants if v.precision == "fp32" and v.method is None)).median_ms
    built = by[compound.prune_method(mild, True, "int8")]
    assert built.steps == ["prune", "export", "openvino"]
    assert built.train_s is not None and built.score is not None and built.median_ms is not None
    assert built.status == "violates budget"  # nothing lossy meets a zero drop
    assert built.median_ms < probe.median_ms  # INT8 on top of pruning: smaller again
    stronger = by[compound.prune_method(strong, True, "int8")]
    assert stronger.status == "skipped" and "already missed the budget" in stronger.reason
    assert compound.prune_method(strong, False, "fp32") not in by  # not even its speed probe was built
    assert any("distilling for up to" in m for m in seen)


def test_search_skips_pruning_that_does_not_speed_up_before_any_training(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("torch_pruning")
    data, prof, resolved = _mlp_search("test:mlp-flat")
    with get_runner("local")(prof) as runner:
        variants, _ = search_variants(resolved, prof, data, runner, max_drop=0.0, host=None, cache_dir=tmp_path / "cache",
                                      runtimes=["openvino"], precisions=["fp32", "int8"], benchmark=_constant_bench,
                                      train_budget_s=4.0, tie_rounds=1)
    for ratio in compound.PRUNE_RATIOS:
        row = next(v for v in variants if v.method == compound.prune_method(ratio, True, "int8"))
        assert row.status == "skipped" and "does not speed up" in row.reason
    assert not any(v.method and "distill" in v.method and v.status != "skipped" for v in variants)
