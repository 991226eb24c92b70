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
    """PTQ misses a zero budget, so QAT is tried; the low-rank variant and its INT8 compound are built or skipped with the rule's reason."""
    pytest.importorskip("openvino")
    data, prof, resolved = _small_search(tmp_path, "test:small")

    seen = []
    with get_runner("local")(prof) as runner:
        variants, best = search_variants(resolved, prof, data, runner, max_drop=0.0, host=None, cache_dir=tmp_path / "cache",
                                runtimes=["openvino"], precisions=["fp32", "int8"], benchmark=short_bench,
                                train_budget_s=4.0, progress=seen.append)
    by = {(v.precision, v.method): v for v in variants}
    ptq = by[("int8", "ptq")]
    assert ptq.status in ("violates budget", "failed")
    qat = by[("int8", "qat")]
    assert qat.steps == ["qat", "openvino"]
    assert qat.status == "violates budget" and qat.score is not None and 0.5 < qat.score < 1.0
    assert qat.median_ms is not None and qat.train_s is not None and qat.train_s <= 10
    assert any(m.startswith("qat: trained") for m in seen)  # training progress reaches the caller
    lowrank = by[("fp32", "lowrank")]
    assert lowrank.steps[0] == "lowrank" and lowrank.score is not None and lowrank.median_ms is not None
    compounds = [v for v in variants if v.method in ("lowrank+int8", "lowrank+ptq", "lowrank+qat")]
    assert compounds, "a compound variant is listed (built, or skipped with its reason)"
    for v in compounds:
        assert v.status != "skipped" or ("ms" in v.reason or "budget" in v.reason)
    if lowrank.median_ms >= by[("fp32", None)].median_ms:
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
