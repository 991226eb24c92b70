"""Export step on real models: MiniLM through the dynamo exporter, the visible legacy fallback, and file inputs."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from edgekit.core.artifact import Artifact  # noqa: E402
from edgekit.core.errors import ModelLoadError, StepError  # noqa: E402
from edgekit.core.profiles import CPU, DeviceProfile  # noqa: E402
from edgekit.core.registry import get_step  # noqa: E402
from edgekit.core.steps import StepContext  # noqa: E402
from stepctx import minimal_context  # noqa: E402  (tests/converters helper)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ExportStep = get_step("export")
MINILM_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def _ctx(tmp_path, name="work"):
    return minimal_context(tmp_path, name)


def _run(art, tmp_path, name="work", **config):
    ctx = _ctx(tmp_path, name)
    out = ExportStep().run(art, ExportStep.Config(**config), ctx)
    return out, ctx


def _ort(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


class DataDependentIf(torch.nn.Module):
    """Python `if` on a tensor value: torch.export cannot capture it (GuardOnDataDependentSymNode)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        if y.sum() > 0:
            return y * 2
        return y - 1


class ScriptedBranch(torch.nn.Module):
    """The same branch written for torch.jit.script, which keeps it as an ONNX If in the legacy exporter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        if bool(y.sum() > 0):
            return y * 2
        return y - 1


# ------------------------------------------------------------------------------------------- MiniLM


def _minilm_sentences_feeds(tokenizer, seq=37):
    sentences = [
        "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden gate.",
        "Edge devices run small models.",
    ]
    enc = tokenizer(sentences, padding="max_length", max_length=seq, truncation=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in MINILM_INPUTS}


@pytest.mark.slow
def test_minilm_dynamo_export_matches_torch_with_dynamic_batch_and_seq(tmp_path, request):
    zoo = pytest.importorskip("edgekit.zoo.models")
    pytest.importorskip("transformers")
    pytest.importorskip("onnxscript")
    art = zoo.resolve("zoo:minilm").artifact()
    assert art.example_inputs[0].shape[0] == 1  # the dynamic batch must survive a batch-1 example

    out, ctx = _run(art, tmp_path)

    assert ctx.report["exporter"] == "dynamo", ctx.notes
    assert not any("dynamo exporter failed" in n for n in ctx.notes)
    # one self-contained file: no external .data next to it
    assert sorted(p.name for p in ctx.work_dir.iterdir()) == ["minilm.onnx"]
    model = onnx.load(str(out.path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert [t.name for t in out.inputs] == MINILM_INPUTS
    assert [t.name for t in out.outputs] == ["sentence_embedding"]
    for t in out.inputs:
        assert t.shape == ["batch", "seq"] and t.dtype == "int64"
    assert out.outputs[0].shape == ["batch", 384]
    assert out.format == "onnx" and out.precision == "fp32"
    assert out.lineage[-1].step == "export" and out.lineage[-1].source_sha256 == art.sha256
    assert out.metadata.get("zoo") == "zoo:minilm" and "in_memory" not in out.metadata

    feeds = _minilm_sentences_feeds(zoo.minilm_tokenizer(), seq=37)
    assert feeds["input_ids"].shape == (2, 37) and feeds["attention_mask"].sum(1).min() < 37  # padding present
    got = _ort(out.path, feeds)[0]
    with torch.no_grad():
        ref = art.module(*[torch.from_numpy(feeds[k]) for k in MINILM_INPUTS]).numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert got.shape == (2, 384)
    assert cos.min() > 0.9999, cos
    # the two sentences differ, so a model that ignored its inputs would fail here
    assert float((got[0] * got[1]).sum()) < 0.9

    # share the exported file with test_simplify (pytest's cache dir), keyed by source hash and torch version
    if getattr(request.config, "cache", None) is not None:
        cache = request.config.cache.mkdir(f"edgekit-minilm-onnx-{art.sha256[:12]}-{torch.__version__}")
        (cache / "minilm.onnx").write_bytes(out.path.read_bytes())


# ------------------------------------------------------------------------------------------- fallback


def test_dynamo_failure_falls_back_to_legacy_and_says_so(tmp_path):
    pytest.importorskip("onnxscript")
    module = DataDependentIf().eval()
    x = torch.randn(3, 8)
    art = Artifact.from_module(module, x, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})

    out, ctx = _run(art, tmp_path)

    assert ctx.report["exporter"] == "legacy"
    assert "GuardOnDataDependentSymNode" in ctx.report["dynamo_error"]
    fallback = [n for n in ctx.notes if n.startswith("dynamo exporter failed:")]
    assert len(fallback) == 1 and fallback[0].endswith("used the legacy TorchScript-based exporter")
    assert "GuardOnDataDependentSymNode" in fallback[0] and len(fallback[0]) < 500
    # the tracer's own warning that the branch was baked in reaches the report too
    assert any("legacy exporter (tracing) warned" in n and "Python boolean" in n for n in ctx.notes)
    lineage_notes = out.lineage[-1].notes
    assert "exporter: legacy" in lineage_notes and fallback[0] in lineage_notes
    assert out.metadata["exporter"] == "legacy"
    assert [p.name for p in ctx.work_dir.iterdir()] == [out.path.name]  # no scratch left behind

    # correct on inputs that take the traced branch, with the dynamic batch kept
    with torch.no_grad():
        traced_branch = module.fc(x).sum() > 0
        xs = torch.randn(5, 8)
        while bool(module.fc(xs).sum() > 0) != bool(traced_branch):
            xs = torch.randn(5, 8)
        ref = module(xs).numpy()
    assert np.allclose(_ort(out.path, {"x": xs.numpy()})[0], ref, atol=1e-5)


def test_dynamo_only_fails_with_the_reason_and_leaves_nothing(tmp_path):
    pytest.importorskip("onnxscript")
    art = Artifact.from_module(DataDependentIf().eval(), torch.randn(3, 8), input_names=["x"], output_names=["y"])
    with pytest.raises(StepError) as err:
        _run(art, tmp_path, exporter="dynamo")
    msg = str(err.value)
    assert "dynamo exporter could not export" in msg and "GuardOnDataDependentSymNode" in msg
    assert "exporter to 'legacy'" in msg
    assert list((tmp_path / "work").iterdir()) == []


def test_legacy_only_does_not_try_dynamo(tmp_path):
    art = Artifact.from_module(DataDependentIf().eval(), torch.randn(3, 8), input_names=["x"], output_names=["y"])
    out, ctx = _run(art, tmp_path, exporter="legacy", opset=13)
    assert ctx.report["exporter"] == "legacy" and "dynamo_error" not in ctx.report
    assert not any("dynamo" in n for n in ctx.notes)
    assert out.metadata["opset"] == 13


# ------------------------------------------------------------------------------------------- files


def test_torchscript_file_needs_input_shapes_and_keeps_control_flow(tmp_path):
    module = torch.jit.script(ScriptedBranch().eval())
    path = tmp_path / "branch.pt"
    torch.jit.save(module, str(path))
    art = Artifact.from_file(path)
    assert art.format == "torchscript" and art.inputs == []

    with pytest.raises(StepError) as err:
        _run(art, tmp_path, "w1")
    assert "--shape x=" in str(err.value)  # the hint names the real forward() argument

    with pytest.raises(StepError) as err:
        _run(art, tmp_path, "w2", input_shapes={"image": [2, 8]})
    assert "'image'" in str(err.value) and "x" in str(err.value)

    out, ctx = _run(art, tmp_path, "w3", input_shapes={"x": [2, 8]}, dynamic_axes={"x": {0: "batch"}})
    # torch 2.13's dynamo exporter refuses ScriptModules: the fallback is recorded, not hidden
    assert ctx.report["exporter"] == "legacy"
    assert "ScriptModule" in ctx.report["dynamo_error"]
    assert [t.name for t in out.inputs] == ["x"] and out.inputs[0].shape[0] == "batch"
    graph_ops = {n.op_type for n in onnx.load(str(out.path)).graph.node}
    assert "If" in graph_ops  # scripted control flow survives, unlike a trace
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        w = loaded.fc.weight.sum(0)
        for scale in (50.0, -50.0):  # drive y.sum() positive, then negative: both branches
            xs = (w / w.norm() * scale).repeat(5, 1)
            ref = loaded(xs).numpy()
            assert np.allclose(_ort(out.path, {"x": xs.numpy()})[0], ref, atol=1e-4)


def test_pickled_module_is_refused_without_trust(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    path = tmp_path / "seq.pt"
    torch.save(module, str(path))

    with pytest.raises(ModelLoadError) as err:
        Artifact.from_file(path)
    assert "--trust-pickle" in str(err.value)

    # Loading with trust records it in the metadata; without that record export refuses to unpickle.
    described = Artifact.from_file(path, trust_pickle=True)
    assert described.metadata.get("trust_pickle") is True
    described = described.model_copy(update={"metadata": {k: v for k, v in described.metadata.items() if k != "trust_pickle"}})
    with pytest.raises(ModelLoadError) as err:
        _run(described, tmp_path, "w1", input_shapes={"input": [2, 4]})
    assert "--trust-pickle" in str(err.value) and "contains code" in str(err.value)

    trusted = Artifact.from_file(path, trust_pickle=True, metadata={"trust_pickle": True})
    out, ctx = _run(trusted, tmp_path, "w2", input_shapes={"input": [2, 4]})
    assert [t.name for t in out.inputs] == ["input"]
    assert "trust_pickle" not in out.metadata  # the trust decision is about the source file only
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert np.allclose(_ort(out.path, {"input": x.numpy()})[0], module(x).numpy(), atol=1e-5)


def test_state_dict_file_is_not_a_model(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), str(path))
    with pytest.raises(ModelLoadError) as err:
        Artifact.from_file(path)
    assert "state_dict" in str(err.value)


def test_exported_program_file(tmp_path):
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 16, 16)
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(module, (x,), dynamic_shapes={"input": {0: batch}})
    path = tmp_path / "conv.pt2"
    torch.export.save(ep, str(path))
    art = Artifact.from_file(path)
    assert art.format == "exported_program"

    out, ctx = _run(art, tmp_path)

    assert ctx.report["exporter"] == "dynamo", ctx.notes
    assert [t.name for t in out.inputs] == ["input"]
    assert isinstance(out.inputs[0].shape[0], str) and out.inputs[0].shape[1:] == [3, 16, 16]
    xs = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert np.allclose(_ort(out.path, {"input": xs.numpy()})[0], module(xs).numpy(), atol=1e-4)
