"""Pipeline: content-addressed cache, visible skips, and a fidelity failure that stops the run."""

from __future__ import annotations

from typing import ClassVar, Tuple

import numpy as np
import onnx
import pytest

from edgekit.core import registry
from edgekit.core.artifact import LineageEntry, load_artifact
from edgekit.core.errors import FidelityError
from edgekit.core.pipeline import DataSources, Pipeline
from edgekit.core.plan import Plan
from edgekit.core.profiles import load_profile
from edgekit.core.shapes import resolve_inputs
from edgekit.core.steps import PlannedStep, Step, StepConfig


class CorruptWeightsStep(Step):
    """Test-only step: scales one weight tensor, as a broken converter would."""

    name = "corrupt-weights"
    accepts: ClassVar[Tuple[str, ...]] = ("onnx",)
    produces = "onnx"

    def run(self, artifact, config, ctx):
        model = onnx.load(str(artifact.path))
        # PP-OCR keeps its weights in Constant nodes, not initializers
        tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        target = max(tensors, key=lambda t: len(t.raw_data))
        arr = onnx.numpy_helper.to_array(target) * -3.0
        target.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), target.name))
        out = ctx.work_dir / "corrupt.onnx"
        onnx.save(model, str(out))
        return load_artifact(out, lineage=[*artifact.lineage, LineageEntry(step=self.name)])


@pytest.fixture
def corrupt_step(monkeypatch):
    monkeypatch.setitem(registry.STEPS, "corrupt-weights", f"{__name__}:CorruptWeightsStep")


def _plan(steps):
    return Plan(model="rec", source_format="onnx", profile="x86-cpu", runtime="onnxruntime", precision="fp32", target="local", steps=[PlannedStep(step=s, reason="test") for s in steps])


def _data(art):
    return DataSources(inputs=resolve_inputs(art.inputs, overrides={"x": [1, 3, 48, 160]}))


def test_second_run_is_served_from_cache(ppocr_rec_path, tmp_path):
    art = load_artifact(ppocr_rec_path)
    prof = load_profile("x86-cpu")
    first = Pipeline(_plan(["simplify"]), prof, _data(art), cache_dir=tmp_path, fidelity_samples=2).run(art)
    rec = first.records[0]
    assert rec.status == "ran", rec.reason
    assert rec.fidelity is not None and rec.fidelity.passed and rec.fidelity.data == "random"
    second = Pipeline(_plan(["simplify"]), prof, _data(art), cache_dir=tmp_path, fidelity_samples=2).run(art)
    assert second.records[0].status == "cached"
    assert second.artifact.sha256 == first.artifact.sha256
    assert second.artifact.path == first.artifact.path and second.artifact.path.exists()
    assert second.records[0].fidelity == rec.fidelity


def test_corrupted_cache_entry_is_rebuilt(ppocr_rec_path, tmp_path):
    art = load_artifact(ppocr_rec_path)
    prof = load_profile("x86-cpu")
    first = Pipeline(_plan(["simplify"]), prof, _data(art), cache_dir=tmp_path, fidelity_samples=1).run(art)
    assert first.records[0].status == "ran"
    first.artifact.path.write_bytes(b"garbage")
    again = Pipeline(_plan(["simplify"]), prof, _data(art), cache_dir=tmp_path, fidelity_samples=1).run(art)
    assert again.records[0].status == "ran"
    assert again.artifact.sha256 == first.artifact.sha256


def test_fidelity_failure_stops_and_keeps_rejected_artifact(ppocr_rec_path, tmp_path, corrupt_step):
    art = load_artifact(ppocr_rec_path)
    prof = load_profile("x86-cpu")
    pipe = Pipeline(_plan(["corrupt-weights"]), prof, _data(art), cache_dir=tmp_path, fidelity_samples=2)
    with pytest.raises(FidelityError) as ei:
        pipe.run(art)
    msg = str(ei.value)
    assert "corrupt-weights" in msg and "cosine" in msg
    rejected = list((tmp_path / "rejected").rglob("corrupt.onnx"))
    assert len(rejected) == 1
    # nothing was stored as a usable cache entry
    assert not [p for p in tmp_path.rglob("entry.json") if "rejected" not in str(p)]


class NudgeWeightsStep(Step):
    """Test-only step: adds seeded noise to the weight of a one-MatMul model (a lossy but harmless conversion)."""

    name = "nudge-weights"
    accepts: ClassVar[Tuple[str, ...]] = ("onnx",)
    produces = "onnx"
    noise = 0.3

    def run(self, artifact, config, ctx):
        model = onnx.load(str(artifact.path))
        w = model.graph.initializer[0]
        arr = onnx.numpy_helper.to_array(w)
        arr = arr + self.noise * np.random.default_rng(0).standard_normal(arr.shape).astype(np.float32)
        w.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), w.name))
        out = ctx.work_dir / "nudged.onnx"
        onnx.save(model, str(out))
        return load_artifact(out, lineage=[*artifact.lineage, LineageEntry(step=self.name)])


def _matmul_model(path):
    from onnx import TensorProto, helper

    w = onnx.numpy_helper.from_array(np.eye(8, dtype=np.float32) * 2.0, "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return load_artifact(path)


def _argmax_agreement(ref, new):
    return float(np.mean([np.mean(np.argmax(r[0], -1) == np.argmax(n[0], -1)) for r, n in zip(ref, new)]))


def _one_hot_feeds(n):
    rng = np.random.default_rng(0)
    return [{"x": (np.eye(8, dtype=np.float32)[rng.integers(0, 8, 4)] * 3 + 0.1 * rng.standard_normal((4, 8))).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("lost", [0.0, 0.01])
def test_task_metric_judges_default_budget_cosine_only_guards(tmp_path, monkeypatch, lost):
    """With a task metric, a default-budget step is judged by the task score, not by cosine >= 0.999
    (OpenVINO FP32 vs ORT FP32 on PP-OCR rec: cosine 0.95 on one line, text identical)."""
    monkeypatch.setitem(registry.STEPS, "nudge-weights", f"{__name__}:NudgeWeightsStep")
    art = _matmul_model(tmp_path / "mm.onnx")
    feeds = _one_hot_feeds(6)
    inputs = resolve_inputs(art.inputs)
    plan = _plan(["nudge-weights"])
    prof = load_profile("x86-cpu")
    # without a task metric the default FP32 budget (cosine >= 0.999) rejects the nudged model
    with pytest.raises(FidelityError, match="cosine"):
        Pipeline(plan, prof, DataSources(inputs=inputs, eval=lambda n: feeds[:n]), cache_dir=tmp_path / "a", fidelity_samples=6).run(art)

    def metric(ref, new):
        return _argmax_agreement(ref, new) - lost

    data = DataSources(inputs=inputs, eval=lambda n: feeds[:n], task_metric=metric, task_metric_name="argmax")
    pipe = Pipeline(plan, prof, data, cache_dir=tmp_path / "b", fidelity_samples=6)
    if not lost:
        rec = pipe.run(art).records[0]
        assert rec.fidelity.passed and 0.9 < rec.fidelity.cosine_min < 0.999 and rec.fidelity.task_score == 1.0
    else:  # a task score below TASK_LOSSLESS_SCORE fails although cosine stays above the gross-breakage floor
        with pytest.raises(FidelityError) as ei:
            pipe.run(art)
        assert "argmax 0.9900 < 0.999" in str(ei.value) and "cosine" not in str(ei.value).split("measured")[0]


def test_explicit_budget_is_kept_when_a_task_metric_exists(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.STEPS, "nudge-weights", f"{__name__}:NudgeWeightsStep")
    art = _matmul_model(tmp_path / "mm.onnx")
    feeds = _one_hot_feeds(6)
    plan = Plan(model="mm", source_format="onnx", profile="x86-cpu", runtime="onnxruntime", precision="fp32", target="local",
                steps=[PlannedStep(step="nudge-weights", reason="test", config={"fidelity": {"min_cosine": 0.9995}})])
    data = DataSources(inputs=resolve_inputs(art.inputs), eval=lambda n: feeds[:n], task_metric=_argmax_agreement, task_metric_name="argmax")
    with pytest.raises(FidelityError, match="cosine .* < 0.9995"):
        Pipeline(plan, load_profile("x86-cpu"), data, cache_dir=tmp_path, fidelity_samples=6).run(art)
