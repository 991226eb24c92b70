"""Fine-tuning by distillation from the source: `edgekit compress --finetune` for low-rank, and pruned modules."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")


def test_compress_lowrank_finetune_from_the_cli(cli, tmp_path):
    """PP-OCRv4 rec factorised, then distilled from the source for a short budget; the report measures the tuned model."""
    out = tmp_path / "lr"
    res = cli("compress", "zoo:ppocr-rec", "--method", "lowrank", "--energy", "0.9", "--finetune", "--train-budget", "2s",
              "--finetune-samples", "4", "--profile", "x86-cpu", "--out", str(out), "--eval-samples", "4", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    tune = rec["finetune"]
    assert tune["steps"] >= 1 and tune["budget_s"] == 2.0 and tune["teacher"] == "source ONNX model"
    assert "finetuned_fidelity" in rec and rec["finetuned_fidelity"]["task_metric"] == "text agreement"
    assert "fine-tune step" in res.stderr or "fine-tuned" in (out / "report.md").read_text()
    tuned = onnx.load(str(out / "model.onnx"))
    # the trained factors are written back: the tuned model is not the plain SVD result
    from edgekit.converters.onnx_torch import onnx_constants

    plain = onnx_constants(onnx.load(str(next(p for p in (out / "work").rglob("*.onnx") if "finetuned" not in p.name))))
    after = onnx_constants(tuned)
    moved = [k for k, v in after.items() if k in plain and v.dtype == np.float32 and v.shape == plain[k].shape and not np.array_equal(v, plain[k])]
    assert moved


@pytest.mark.parametrize("args, message", [
    (["--method", "lowrank", "--energy", "0.9", "--train-budget", "5m"], "--train-budget is the time limit of --finetune"),
    (["--method", "weight-share", "--finetune"], "--finetune applies to prune and lowrank"),
    (["--method", "lowrank", "--energy", "0.9", "--finetune", "--train-budget", "soon"], "expected a duration"),
])
def test_compress_finetune_option_errors(cli, tmp_path, args, message):
    res = cli("compress", "zoo:ppocr-rec", *args, "--profile", "x86-cpu", "--out", str(tmp_path / "o"))
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr


def test_finetune_module_recovers_a_pruned_module():
    """A structurally pruned copy distilled from its source gets closer to it (loss down on a fixed batch)."""
    pytest.importorskip("torch_pruning")
    from edgekit.converters.finetune import finetune_module
    from edgekit.converters.prune import prune

    torch.manual_seed(0)
    src = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 8)).eval()
    x = torch.randn(1, 3, 12, 12)
    pruned, _ = prune(src, (x,), mode="structured", ratio=0.5)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 3, 12, 12)).astype(np.float32)} for _ in range(8)]
    rec = finetune_module(torch, pruned, src, feeds, ["x"], budget_s=600, max_steps=40, lr=3e-3, batch_size=8)
    assert rec["steps"] == 40 and rec["loss_last"] < rec["loss_first"]
    assert all(p.requires_grad is False for p in src.parameters())  # the source is only read


def test_training_starts_no_step_that_would_end_past_its_budget():
    """Each step takes ~0.3 s (the teacher waits): with a 1.0 s budget, a loop that only checks the elapsed time
    starts a 4th step at 0.9 s and ends at ~1.2 s; the budget is a limit, so training stops after 3 steps."""
    import time

    import numpy as np
    import torch

    from edgekit.converters.finetune import train

    student = torch.nn.Linear(4, 3)

    def teacher(batch):
        time.sleep(0.3)
        return [torch.zeros(batch[0].shape[0], 3)]

    feeds = iter(lambda: [np.ones((2, 4), dtype=np.float32)], None)
    rec = train(torch, "test", "linear", lambda b: [student(b[0])], teacher, [{"params": list(student.parameters()), "lr": 1e-3}],
                feeds, [False], budget_s=1.0)
    assert 2 <= rec["steps"] <= 3 and rec["train_s"] <= 1.0
