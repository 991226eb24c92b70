"""Calibration data loading: image folders with a preprocessing spec, .npy/.npz, iterables, validation errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgekit.core.artifact import TensorSpec
from edgekit.quality.calibration import PreprocessSpec, load_calibration, split_calib_eval, validate_feed
from edgekit.core.errors import CalibrationError

IMG_IN = [TensorSpec(name="x", shape=[1, 3, 64, 48], dtype="float32")]
TOKENS = [
    TensorSpec(name="input_ids", shape=["batch", 16], dtype="int64"),
    TensorSpec(name="attention_mask", shape=["batch", 16], dtype="int64"),
]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Real photos from scikit-image written as PNGs (one greyscale, one colour, one RGBA)."""
    from skimage import data

    d = tmp_path_factory.mktemp("imgs")
    Image.fromarray(data.astronaut()).save(d / "a_astronaut.png")
    Image.fromarray(data.camera()).save(d / "b_camera.png")
    Image.fromarray(data.coffee()).convert("RGBA").save(d / "c_coffee.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _manual(path, h, w, bgr, mean, std, scale, layout):
    im = Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)
    a = np.asarray(im, dtype=np.float32)
    if bgr:
        a = a[:, :, ::-1]
    a = (a * scale - np.array(mean, np.float32)) / np.array(std, np.float32)
    return (a.transpose(2, 0, 1) if layout == "NCHW" else a)[None]


def test_parse_spec_from_cli_string():
    s = PreprocessSpec.parse("size=640x320,layout=NHWC,color=BGR,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,scale=1/255")
    assert s.size == (640, 320) and s.layout == "NHWC" and s.color == "BGR"
    assert s.mean == (0.485, 0.456, 0.406) and s.std == (0.229, 0.224, 0.225)
    assert s.scale == pytest.approx(1 / 255)


@pytest.mark.parametrize("bad,word", [("size=abc", "size"), ("bogus=1", "unknown key"), ("layout", "key=value"), ("std=0/1/1", "non-zero")])
def test_parse_spec_errors_name_the_item(bad, word):
    with pytest.raises(CalibrationError, match=word):
        PreprocessSpec.parse(bad)


def test_image_folder_nchw_bgr_mean_std(image_dir):
    spec = "layout=NCHW,color=BGR,mean=0.5/0.4/0.3,std=0.2/0.25/0.5,scale=1/255"
    feeds = load_calibration(image_dir, IMG_IN, n=10, preprocess=spec)
    assert len(feeds) == 3  # the .txt file is ignored
    x = feeds[0]["x"]
    assert x.shape == (1, 3, 64, 48) and x.dtype == np.float32  # size taken from the model's fixed dims
    want = _manual(image_dir / "a_astronaut.png", 64, 48, True, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5), 1 / 255, "NCHW")
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
    # greyscale and RGBA files become 3-channel inputs too
    assert feeds[1]["x"].shape == feeds[2]["x"].shape == (1, 3, 64, 48)


def test_image_folder_nhwc_rgb_explicit_size_and_count(image_dir):
    inp = [TensorSpec(name="img", shape=["n", "h", "w", 3], dtype="float32")]
    feeds = load_calibration(image_dir, inp, n=2, preprocess=PreprocessSpec(size=(32, 40), layout="NHWC"))
    assert len(feeds) == 2
    want = _manual(image_dir / "a_astronaut.png", 32, 40, False, (0, 0, 0), (1, 1, 1), 1 / 255, "NHWC")
    np.testing.assert_allclose(feeds[0]["img"], want, rtol=1e-5, atol=1e-6)
    # BGR really reverses the channel order
    bgr = load_calibration(image_dir, inp, n=1, preprocess=PreprocessSpec(size=(32, 40), layout="NHWC", color="BGR"))
    np.testing.assert_allclose(bgr[0]["img"][..., ::-1], feeds[0]["img"])


def test_image_folder_without_fixed_size_asks_for_size(image_dir):
    inp = [TensorSpec(name="x", shape=["n", 3, "h", "w"], dtype="float32")]
    with pytest.raises(CalibrationError, match=r"input 'x'.*no fixed height/width") as ei:
        load_calibration(image_dir, inp, n=1)
    assert "size=" in str(ei.value)


def test_image_folder_for_multi_input_model_is_refused(image_dir):
    with pytest.raises(CalibrationError, match="one input; this model has 2"):
        load_calibration(image_dir, TOKENS, n=1)


def test_npz_keyed_by_input_name(tmp_path):
    ids = np.arange(5 * 16, dtype=np.int64).reshape(5, 16)
    mask = np.ones((5, 16), dtype=np.int32)  # int32 is accepted and cast to the model's int64
    f = tmp_path / "tok.npz"
    np.savez(f, input_ids=ids, attention_mask=mask)
    feeds = load_calibration(f, TOKENS, n=3)
    assert len(feeds) == 3
    assert feeds[1]["input_ids"].shape == (1, 16) and feeds[1]["attention_mask"].dtype == np.int64
    np.testing.assert_array_equal(feeds[2]["input_ids"][0], ids[2])


def test_npz_missing_input_names_the_input(tmp_path):
    f = tmp_path / "tok.npz"
    np.savez(f, input_ids=np.zeros((2, 16), np.int64))
    with pytest.raises(CalibrationError, match="'attention_mask'"):
        load_calibration(f, TOKENS, n=2)


def test_npy_single_input_stacked_samples(tmp_path):
    f = tmp_path / "x.npy"
    arr = np.random.default_rng(0).standard_normal((4, 1, 3, 64, 48)).astype(np.float32)
    np.save(f, arr)
    feeds = load_calibration(f, IMG_IN, n=10)
    assert len(feeds) == 4
    np.testing.assert_array_equal(feeds[3]["x"], arr[3])


def test_shape_mismatch_names_input_and_expected_shape(tmp_path):
    f = tmp_path / "x.npy"
    np.save(f, np.zeros((2, 1, 3, 32, 48), np.float32))
    with pytest.raises(CalibrationError) as ei:
        load_calibration(f, IMG_IN, n=2)
    msg = str(ei.value)
    assert "calibration sample 0, input 'x': shape (1, 3, 32, 48) does not match the model's [1,3,64,48]" in msg
    assert "fixed dims must match" in msg


def test_rank_and_dtype_mismatch():
    with pytest.raises(CalibrationError, match=r"sample 0, input 'x'.*rank 3.*rank 4"):
        validate_feed({"x": np.zeros((3, 64, 48), np.float32)}, IMG_IN, 0)
    with pytest.raises(CalibrationError, match=r"input 'input_ids': dtype float32 does not match the model's int64"):
        validate_feed({"input_ids": np.zeros((1, 16), np.float32), "attention_mask": np.zeros((1, 16), np.int64)}, TOKENS, 0)
    with pytest.raises(CalibrationError, match=r"missing \['attention_mask'\]"):
        validate_feed({"input_ids": np.zeros((1, 16), np.int64)}, TOKENS, 0)


def test_python_iterable_of_dicts_and_bare_arrays():
    gen = ({"input_ids": np.full((1, 16), i, np.int64), "attention_mask": np.ones((1, 16), np.int64)} for i in range(100))
    feeds = load_calibration(gen, TOKENS, n=7)
    assert len(feeds) == 7 and int(feeds[6]["input_ids"][0, 0]) == 6
    arrays = [np.zeros((1, 3, 64, 48), np.float32) for _ in range(3)]
    assert len(load_calibration(arrays, IMG_IN, n=5)) == 3
    bad = [np.zeros((1, 3, 64, 64), np.float32)]
    with pytest.raises(CalibrationError, match="calibration sample 0, input 'x'"):
        load_calibration(bad, IMG_IN, n=1)


def test_split_keeps_eval_disjoint_even_for_a_generator():
    gen = ({"input_ids": np.full((1, 16), i, np.int64), "attention_mask": np.ones((1, 16), np.int64)} for i in range(10))
    calib, ev = split_calib_eval(gen, TOKENS, n_calib=6, n_eval=3)
    c_ids = {int(f["input_ids"][0, 0]) for f in calib}
    e_ids = {int(f["input_ids"][0, 0]) for f in ev}
    assert c_ids == set(range(6)) and e_ids == {6, 7, 8}


def test_split_folder_and_too_few_samples(image_dir):
    calib, ev = split_calib_eval(image_dir, IMG_IN, n_calib=2, n_eval=5)
    assert len(calib) == 2 and len(ev) == 1  # the third image only
    assert not np.allclose(ev[0]["x"], calib[0]["x"])
    with pytest.raises(CalibrationError, match="holds only 3 samples"):
        split_calib_eval(image_dir, IMG_IN, n_calib=5, n_eval=1)


def test_missing_and_unsupported_sources(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "nope", IMG_IN, n=1)
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(CalibrationError, match="unsupported"):
        load_calibration(tmp_path / "data.csv", IMG_IN, n=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="no image files"):
        load_calibration(empty, IMG_IN, n=1)
