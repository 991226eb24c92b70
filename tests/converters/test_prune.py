"""Pruning on the real MiniLM: unstructured zeros (exact sparsity, smaller zip, same dense size) and structured heads/neurons."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("transformers")

from edgekit.core.errors import StepError  # noqa: E402
from edgekit.core.profiles import load_profile  # noqa: E402
from edgekit.core.registry import get_step  # noqa: E402
from edgekit.core.steps import StepContext  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    from edgekit.zoo import models as zoo

    model = zoo.resolve("zoo:minilm")
    return model, model.artifact()


def _ctx(tmp_path, model, n=4):
    feeds = model.eval_feeds(n)
    return StepContext(work_dir=tmp_path, profile=load_profile("x86-cpu"), eval_data=lambda k: feeds[:k],
                       task_metric=model.task_metric, task_metric_name=model.task_metric_name)


def test_unstructured_exact_sparsity_smaller_zip_same_dense_size(tmp_path, minilm):
    model, art = minilm
    step = get_step("prune")
    ctx = _ctx(tmp_path, model)
    out = step().run(art, step.Config(mode="unstructured", ratio=0.5, measure=False, eval_samples=4), ctx)
    rec = ctx.report["prune"]
    # every Linear weight loses exactly round(0.5 * n) entries (torch's l1_unstructured rounding)
    expected = sum(round(0.5 * m.weight.numel()) for m in art.module.modules() if isinstance(m, torch.nn.Linear))
    zeros = sum(int((m.weight == 0).sum()) for m in out.module.modules() if isinstance(m, torch.nn.Linear))
    assert zeros == expected == rec["details"]["zeros"]
    assert rec["details"]["sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert rec["after"]["size_bytes"] == rec["before"]["size_bytes"]  # dense storage: zeros cost as much as any float
    assert rec["after"]["zipped_bytes"] < 0.95 * rec["before"]["zipped_bytes"]
    assert rec["after"]["params"] == rec["before"]["params"]
    assert any("dense runtimes gain nothing from zeros" in n for n in rec["notes"])
    # the source module is untouched
    assert int((next(m for m in art.module.modules() if isinstance(m, torch.nn.Linear)).weight == 0).sum()) == 0
    assert 0 < rec["fidelity"]["task_score"] <= 1


def test_structured_removes_heads_and_neurons_and_onnx_shrinks(tmp_path, minilm):
    from edgekit.core.compression import export_onnx, onnx_outputs

    model, art = minilm
    step = get_step("prune")
    ctx = _ctx(tmp_path, model)
    out = step().run(art, step.Config(ratio=0.25, measure=False, eval_samples=4), ctx)
    rec = ctx.report["prune"]
    assert rec["after"]["params"] < rec["before"]["params"]
    assert rec["details"]["heads_after"] == [9] * 6  # 12 heads, 25% removed per layer
    assert rec["details"]["ffn_neurons_after"] == [1152] * 6
    for m in out.module.modules():
        if hasattr(m, "query") and hasattr(m, "num_attention_heads"):
            assert m.query.out_features == m.num_attention_heads * m.attention_head_size
    names = [t.name for t in art.inputs]
    before = export_onnx(art.module, art.example_inputs, tmp_path / "a.onnx", names)
    after = export_onnx(out.module, art.example_inputs, tmp_path / "b.onnx", names)
    assert after.stat().st_size < 0.9 * before.stat().st_size
    feeds = model.eval_feeds(2)
    got = onnx_outputs(after, feeds)
    assert got[0][0].shape == (1, 384)  # embedding width is kept: only heads and FFN neurons go
    assert np.allclose(np.linalg.norm(got[0][0]), 1.0, atol=1e-4)


def test_finetune_hook_runs_on_the_pruned_copy(minilm):
    from edgekit.converters.prune import prune

    _model, art = minilm
    seen = {}

    def finetune(m):
        seen["params"] = sum(p.numel() for p in m.parameters())
        with torch.no_grad():
            m.bert.embeddings.LayerNorm.bias.add_(0.5)

    pruned, details = prune(art.module, art.example_inputs, ratio=0.25, finetune=finetune)
    assert details["finetuned"] is True
    assert seen["params"] == sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in art.module.parameters())
    assert not torch.allclose(pruned.bert.embeddings.LayerNorm.bias, art.module.bert.embeddings.LayerNorm.bias)


def test_prune_refuses_an_onnx_artifact(tmp_path, ppocr_rec_path):
    from edgekit.core.artifact import load_artifact

    step = get_step("prune")
    ctx = StepContext(work_dir=tmp_path, profile=load_profile("x86-cpu"))
    with pytest.raises(StepError, match="in-memory PyTorch module"):
        step().run(load_artifact(ppocr_rec_path), step.Config(), ctx)


def test_unknown_ignore_name_is_a_clear_error(minilm):
    from edgekit.converters.prune import prune

    _model, art = minilm
    with pytest.raises(StepError, match="no module named"):
        prune(art.module, art.example_inputs, ignore=["bert.nope"])


@pytest.mark.slow
def test_cli_compress_unstructured_reports_latency_and_zip(tmp_path, cli):
    res = cli("compress", "zoo:minilm", "--method", "prune-unstructured", "--ratio", "0.5", "--profile", "x86-cpu",
              "--out", str(tmp_path / "o"), "--eval-samples", "4", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["before"]["latency"]["backend"] == "onnxruntime" and rec["after"]["latency"]["median_ms"] > 0
    assert rec["before"]["latency"]["timing"] == rec["after"]["latency"]["timing"] == "interleaved"  # issue 15
    assert rec["after"]["zipped_bytes"] < rec["before"]["zipped_bytes"]
    assert "exported_fidelity" in rec and (tmp_path / "o" / "model.onnx").exists()
    assert "dense runtimes gain nothing from zeros: latency" in (tmp_path / "o" / "report.md").read_text()


def test_cli_compress_rejects_wrong_option(tmp_path, cli):
    res = cli("compress", "zoo:minilm", "--method", "prune", "--clusters", "8", "--profile", "x86-cpu", "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "--clusters does not apply to --method prune" in res.stderr
