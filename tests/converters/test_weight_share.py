"""k-means weight sharing: at most k values per tensor, smaller zip, same dense size; PyTorch (MiniLM) and ONNX (PP-OCR)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.profiles import load_profile
from edgekit.core.registry import get_step
from edgekit.core.steps import StepContext


def test_kmeans_1d_recovers_clusters_and_caps_unique_values():
    from edgekit.converters.weight_share import kmeans_1d, share_array

    rng = np.random.default_rng(0)
    centres = np.array([-1.0, 0.0, 0.5, 2.0])
    x = (rng.choice(centres, 5000) + rng.normal(0, 0.01, 5000)).astype(np.float32)
    book, idx = kmeans_1d(x, 4)
    assert np.allclose(np.sort(book), centres, atol=0.01)
    shared, info = share_array(rng.standard_normal((64, 64)).astype(np.float32), 8, 15)
    assert len(np.unique(shared)) <= 8 and info["unique_after"] <= 8 and info["index_bits"] == 3
    assert info["codebook_bytes"] == 64 * 64 * 3 // 8 + 8 * 4


def test_onnx_weight_share_on_ppocr_det(tmp_path, ppocr_det_path):
    import onnx
    from onnx import numpy_helper

    from edgekit.zoo import models as zoo
    from edgekit.core.artifact import load_artifact

    det = zoo.resolve("zoo:ppocr-det")
    feeds = det.eval_feeds(2, shapes={"x": [1, 3, 320, 320]})
    step = get_step("weight-share")
    ctx = StepContext(work_dir=tmp_path, profile=load_profile("x86-cpu"), eval_data=lambda n: feeds[:n],
                      task_metric=det.task_metric, task_metric_name=det.task_metric_name)
    out = step().run(load_artifact(ppocr_det_path), step.Config(clusters=32, measure=False, eval_samples=2), ctx)
    rec = ctx.report["weight-share"]
    assert out.format == "onnx"
    model = onnx.load(str(out.path))
    arrays = [numpy_helper.to_array(i) for i in model.graph.initializer]
    arrays += [numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    big = [a for a in arrays if a.dtype == np.float32 and a.size >= 1024]
    assert len(big) == rec["details"]["tensors_shared"] > 10
    assert all(len(np.unique(a)) <= 32 for a in big)
    assert rec["after"]["size_bytes"] == pytest.approx(rec["before"]["size_bytes"], rel=0.01)  # fp32 stays fp32
    assert rec["after"]["zipped_bytes"] < 0.8 * rec["before"]["zipped_bytes"]
    assert rec["details"]["index_codebook_bytes"] < rec["before"]["size_bytes"] / 3
    assert any("no latency gain" in n for n in rec["notes"])
    assert rec["fidelity"]["samples"] == 2 and "task_score" in rec["fidelity"]


@pytest.mark.slow
def test_module_weight_share_on_minilm(tmp_path):
    torch = pytest.importorskip("torch")
    from edgekit.zoo import models as zoo

    model = zoo.resolve("zoo:minilm")
    art = model.artifact()
    feeds = model.eval_feeds(2)
    step = get_step("weight-share")
    ctx = StepContext(work_dir=tmp_path, profile=load_profile("x86-cpu"), eval_data=lambda n: feeds[:n])
    out = step().run(art, step.Config(clusters=64, iterations=5, measure=False, eval_samples=2), ctx)
    rec = ctx.report["weight-share"]
    shared = {t["name"] for t in rec["details"]["tensors"]}
    assert "bert.embeddings.word_embeddings.weight" in shared
    for name, p in out.module.named_parameters():
        if name in shared:
            assert torch.unique(p).numel() <= 64, name
    assert rec["after"]["zipped_bytes"] < 0.5 * rec["before"]["zipped_bytes"]
    assert rec["after"]["size_bytes"] == rec["before"]["size_bytes"]
