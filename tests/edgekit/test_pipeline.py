"""Pipeline: content-addressed cache, visible skips, and a fidelity failure that stops the run."""

from __future__ import annotations

from typing import ClassVar, Tuple

import numpy as np
import onnx
import pytest

from edgekit import registry
from edgekit.artifact import LineageEntry, load_artifact
from edgekit.errors import FidelityError
from edgekit.pipeline import DataSources, Pipeline
from edgekit.plan import Plan
from edgekit.profiles import load_profile
from edgekit.shapes import resolve_inputs
from edgekit.steps import PlannedStep, Step, StepConfig


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
