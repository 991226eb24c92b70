"""Low-rank SVD factorisation on real models: MiniLM (PyTorch Linear layers) and PP-OCRv4 rec (ONNX Conv/MatMul)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgekit.core.profiles import load_profile  # noqa: E402
from edgekit.core.registry import get_step  # noqa: E402
from edgekit.core.steps import StepContext  # noqa: E402


def test_factorize_exact_at_full_rank_and_energy_rank_choice():
    from edgekit.converters.lowrank import choose_rank, factorize

    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    a, b, r = factorize(w, rank=30, energy=None)
    assert r == 30 and np.allclose(a @ b, w, atol=1e-4)
    s = np.array([3.0, 2.0, 1.0, 0.0])  # squared energy 9, 4, 1 of 14
    assert choose_rank(s, None, 9 / 14) == 1
    assert choose_rank(s, None, 13 / 14 + 1e-6) == 3
    assert choose_rank(s, None, 1.0) == 3
    assert choose_rank(s, 2, None) == 2


def test_config_needs_exactly_one_of_rank_or_energy():
    from pydantic import ValidationError

    from edgekit.converters.lowrank import LowRankConfig

    with pytest.raises(ValidationError):
        LowRankConfig()
    with pytest.raises(ValidationError):
        LowRankConfig(rank=8, energy=0.9)


@pytest.fixture(scope="module")
def minilm():
    from edgekit.zoo import models as zoo

    model = zoo.resolve("zoo:minilm")
    return model, model.artifact()


def test_rank_reduces_params_by_the_expected_amount(minilm):
    from edgekit.converters.lowrank import lowrank_module

    _model, art = minilm
    r = 64
    saved = 0
    for m in art.module.modules():
        if isinstance(m, torch.nn.Linear) and r * (m.in_features + m.out_features) <= 0.9 * m.in_features * m.out_features:
            saved += m.in_features * m.out_features - r * (m.in_features + m.out_features)
    new, details = lowrank_module(art.module, rank=r)
    before = sum(p.numel() for p in art.module.parameters())
    after = sum(p.numel() for p in new.parameters())
    assert saved > 0 and before - after == saved
    assert details["layers_factorised"] == 36  # 6 layers x (q, k, v, o, ffn up, ffn down)
    with torch.no_grad():
        out = new(*art.example_inputs)
    assert out.shape == (1, 384)


@pytest.mark.slow
def test_fidelity_degrades_monotonically_with_lower_energy(minilm):
    from edgekit.core.compression import torch_outputs, fidelity
    from edgekit.converters.lowrank import lowrank_module

    model, art = minilm
    feeds = model.eval_feeds(4)
    names = [t.name for t in art.inputs]
    ref = torch_outputs(art.module, feeds, names)
    scores, params = [], []
    for energy in (0.999, 0.95, 0.8):
        new, _ = lowrank_module(art.module, energy=energy, min_saving=0.0)
        scores.append(fidelity(ref, torch_outputs(new, feeds, names))["cosine_mean"])
        params.append(sum(p.numel() for p in new.parameters()))
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] > 0.99
    assert params[1] > params[2]


def test_onnx_lowrank_on_ppocr_rec_runs_and_shrinks(tmp_path, ppocr_rec_path):
    from edgekit.zoo import models as zoo
    from edgekit.core.artifact import load_artifact

    rec = zoo.resolve("zoo:ppocr-rec")
    feeds = rec.eval_feeds(3)
    step = get_step("lowrank")
    ctx = StepContext(work_dir=tmp_path, profile=load_profile("x86-cpu"), eval_data=lambda n: feeds[:n],
                      task_metric=rec.task_metric, task_metric_name=rec.task_metric_name)
    out = step().run(load_artifact(ppocr_rec_path), step.Config(energy=0.999, measure=False, eval_samples=3), ctx)
    r = ctx.report["lowrank"]
    assert out.format == "onnx" and out.path.exists()
    assert r["details"]["layers_factorised"] > 0
    assert r["after"]["params"] < r["before"]["params"]
    assert r["after"]["size_bytes"] < r["before"]["size_bytes"]
    assert r["fidelity"]["cosine_mean"] > 0.99  # 99.9% of the spectrum kept
