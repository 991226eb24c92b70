"""Distillation: student init copies teacher weights; training lowers the loss and raises held-out cosine; API errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from edgekit.workflows.distill import (  # noqa: E402
    _feature_mse,
    distill,
    embedding_cosines,
    make_minilm_student,
    minilm_batches,
    minilm_feature_pairs,
    student_layer_indices,
)
from edgekit.core.errors import UsageError  # noqa: E402


@pytest.fixture(scope="module")
def teacher():
    from edgekit.zoo import models as zoo

    return zoo.minilm_module()


def test_layer_choice_keeps_first_and_last():
    assert student_layer_indices(6, 3) == [0, 3, 5]
    assert student_layer_indices(6, 2) == [0, 5]
    assert student_layer_indices(6, 6) == list(range(6))
    with pytest.raises(UsageError):
        student_layer_indices(6, 7)


def test_student_init_copies_teacher_weights(teacher):
    module, _tok = teacher
    student, layers = make_minilm_student(module, 3)
    assert layers == [0, 3, 5] and len(student.bert.encoder.layer) == 3
    assert student.bert.config.num_hidden_layers == 3 and module.bert.config.num_hidden_layers == 6
    t_sd, s_sd = module.state_dict(), student.state_dict()
    for k, v in s_sd.items():
        if ".encoder.layer." in k:
            i = int(k.split(".encoder.layer.")[1].split(".")[0])
            tk = k.replace(f".encoder.layer.{i}.", f".encoder.layer.{layers[i]}.")
        else:
            tk = k
        assert torch.equal(v, t_sd[tk]), k
    assert not any(p is q for p in student.parameters() for q in module.parameters())  # a copy, not shared


def test_distillation_lowers_loss_and_raises_heldout_cosine(teacher):
    from edgekit.zoo import models as zoo

    module, tok = teacher
    torch.manual_seed(0)
    student, layers = make_minilm_student(module, 2)
    train = minilm_batches(zoo.sentences(128, "train"), tok, batch_size=16)
    held = minilm_batches(zoo.sentences(48, "eval"), tok, batch_size=48)
    teacher_state = {k: v.clone() for k, v in module.state_dict().items()}
    before = embedding_cosines(module, student, held)
    pairs = minilm_feature_pairs(layers, "last")  # the worked example's recipe: token-level MSE on the last layer pair
    assert pairs == [("bert.encoder.layer.5", "bert.encoder.layer.1")]
    res = distill(module, student, train, kind="auto", steps=12, lr=5e-4, alpha_feature=1.0, feature_pairs=pairs,
                  feature_mask_key="attention_mask", threads=2, dropout=False)
    after = embedding_cosines(module, student, held)
    assert res.kind == "embedding" and res.steps == 12 and set(res.components) == {"cos", "mse", "feature"}
    assert np.mean(res.losses[-4:]) < np.mean(res.losses[:4])
    assert after.mean() > before.mean() + 0.02
    # the teacher is not trained
    assert all(torch.equal(v, teacher_state[k]) for k, v in module.state_dict().items())


def test_logits_mode_uses_kl_and_hard_labels():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    student = torch.nn.Linear(8, 4)
    x = torch.randn(64, 8)
    with torch.no_grad():
        labels = teacher(x).argmax(-1)
    data = [{"input": x[i:i + 16], "labels": labels[i:i + 16]} for i in range(0, 64, 16)]

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input):
            return self.m(input)

    res = distill(Wrap(teacher), Wrap(student), data, epochs=10, lr=1e-2, temperature=2.0)
    assert res.kind == "logits" and set(res.components) == {"kl", "ce"} and res.steps == 40
    assert np.mean(res.losses[-4:]) < np.mean(res.losses[:4])


def test_bad_feature_pair_and_shape_mismatch_are_clear(teacher):
    module, tok = teacher
    student, _ = make_minilm_student(module, 2)
    batch = minilm_batches(["A short sentence here."], tok, 1)
    with pytest.raises(UsageError, match="student has no module named"):
        distill(module, student, batch, steps=1, feature_pairs=[("bert.encoder.layer.0", "bert.encoder.layer.9")], alpha_feature=1.0)
    with pytest.raises(UsageError, match="differs from teacher output"):
        distill(torch.nn.Linear(4, 3), torch.nn.Linear(4, 2), [(torch.randn(2, 4),)], steps=1)


@pytest.mark.slow
def test_cli_distill_minilm_writes_onnx_and_report(tmp_path, cli):
    out = tmp_path / "s"
    res = cli("distill", "zoo:minilm", "--student-layers", "3", "--steps", "4", "--batch-size", "8", "--train-sentences", "64",
              "--eval-sentences", "16", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert (out / "student.onnx").exists() and (out / "teacher.onnx").exists() and (out / "report.md").exists()
    assert rep["student_layers"] == 3 and rep["params"]["student"] < rep["params"]["teacher"]
    assert rep["onnx_bytes"]["student"] < rep["onnx_bytes"]["teacher"]
    assert rep["latency_ms"]["student"]["median_ms"] > 0 and rep["speedup"] > 0
    assert 0 < rep["cosine_onnx_seq128"]["mean"] <= 1
    assert rep["files"]["student"] == str(out / "student.onnx"), "the report names the files where --out has them, not the staging dir"


def test_training_text_is_large_and_disjoint_from_heldout_text():
    from edgekit.zoo import datasets as zoo_data

    train = zoo_data._split_sentences("train")
    held = set(zoo_data._split_sentences("eval")) | set(zoo_data._split_sentences("calib"))
    extra = zoo_data._distill_sentences()
    assert len(train) >= 10000 and len(extra) >= 8000  # far more than the 2,700 of sentences.txt's train split
    assert not held & set(train)
    norm = lambda x: "".join(c for c in x.lower() if c.isalpha())  # noqa: E731
    assert not {norm(x) for x in held} & {norm(x) for x in extra}  # not even up to case/punctuation
    assert len(set(extra)) == len(extra)
    assert (zoo_data.DATA_DIR / "distill_sentences.txt").stat().st_size < 2_000_000
    for x in extra:
        assert 6 <= len(x.split()) <= 40 and x[0].isupper() and x[-1] in ".!?" and x.isascii(), x


def test_length_buckets_keep_every_sentence_and_cut_padding():
    from edgekit.zoo import models as zoo

    tok = zoo.minilm_tokenizer()
    texts = zoo.sentences(256, "train", seed=1)
    plain = minilm_batches(texts, tok, batch_size=16, seed=0)
    bucketed = minilm_batches(texts, tok, batch_size=16, seed=0, length_buckets=8)

    def ids(batches):
        return sorted(tuple(int(t) for t, m in zip(row, mask) if m) for b in batches for row, mask in zip(b["input_ids"], b["attention_mask"]))

    assert ids(plain) == ids(bucketed)
    cells = lambda batches: sum(b["input_ids"].numel() for b in batches)  # noqa: E731
    assert cells(bucketed) < 0.85 * cells(plain)
    with pytest.raises(UsageError):
        minilm_batches(texts, tok, batch_size=0)


def test_masked_feature_mse_ignores_padding():
    torch.manual_seed(0)
    t = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s = t.clone()
    s[0, 3:] += 10.0  # differs only on padding
    assert float(_feature_mse(s, t, {"attention_mask": mask}, "attention_mask")) == 0.0
    assert float(_feature_mse(s, t, {"attention_mask": mask}, None)) > 1.0
    s[1, 0, 0] += 2.0  # one real token, one channel: 4 / (8 tokens * 4 channels)
    assert float(_feature_mse(s, t, {"attention_mask": mask}, "attention_mask")) == pytest.approx(4.0 / 32)
    with pytest.raises(UsageError, match="not a key of the batch"):
        _feature_mse(s, t, {"input_ids": mask}, "attention_mask")
    with pytest.raises(UsageError, match="does not match features"):
        _feature_mse(s, t, {"attention_mask": mask[:, :3]}, "attention_mask")
    assert minilm_feature_pairs([0, 3, 5], "all")[1] == ("bert.encoder.layer.3", "bert.encoder.layer.1")
    assert minilm_feature_pairs([0, 3, 5], "none") == []
    with pytest.raises(UsageError):
        minilm_feature_pairs([0, 3, 5], "first")
