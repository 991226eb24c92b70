"""Artifact loading: real signatures, and clear errors for files that are not (whole) models."""

from __future__ import annotations

import pytest

from edgekit.core.artifact import Artifact, load_artifact
from edgekit.core.errors import ModelLoadError
from edgekit.core.fsutil import sha256_file


def test_onnx_signature_and_hash(ppocr_det_path):
    art = load_artifact(ppocr_det_path)
    assert art.format == "onnx" and art.precision == "fp32"
    assert [t.name for t in art.inputs] == ["x"]
    assert art.inputs[0].shape[1] == 3 and isinstance(art.inputs[0].shape[2], str)  # symbolic H
    assert art.sha256 == sha256_file(ppocr_det_path)
    again = Artifact.model_validate_json(art.model_dump_json())
    assert again == art


def test_truncated_onnx_is_rejected(ppocr_det_path, tmp_path):
    bad = tmp_path / "det.onnx"
    bad.write_bytes(ppocr_det_path.read_bytes()[:50_000])
    with pytest.raises(ModelLoadError, match="det.onnx"):
        load_artifact(bad)


def test_text_file_is_not_a_model(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a model file"):
        load_artifact(f)


def test_missing_and_empty(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_artifact(tmp_path / "nope.onnx")
    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_artifact(tmp_path / "e.onnx")


def test_pickled_module_needs_trust_and_state_dict_is_explained(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    whole = tmp_path / "whole.pt"
    torch.save(model, whole)
    with pytest.raises(ModelLoadError, match="--trust-pickle"):
        load_artifact(whole)
    assert load_artifact(whole, trust_pickle=True).format == "pytorch"
    sd = tmp_path / "sd.pt"
    torch.save(model.state_dict(), sd)
    with pytest.raises(ModelLoadError, match="state_dict"):
        load_artifact(sd)


def test_torchscript_detected(tmp_path):
    torch = pytest.importorskip("torch")
    ts = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), ts)
    assert load_artifact(ts).format == "torchscript"


def test_from_module_signature():
    torch = pytest.importorskip("torch")
    m = torch.nn.Linear(4, 2)
    art = Artifact.from_module(m, torch.zeros(3, 4), input_names=["feat"], dynamic_axes={"feat": {0: "batch"}})
    assert art.format == "pytorch" and art.inputs[0].shape == ["batch", 4] and art.outputs[0].shape == [3, 2]
    m2 = torch.nn.Linear(4, 2)
    assert Artifact.from_module(m2, torch.zeros(3, 4)).sha256 != art.sha256  # weights are part of identity
