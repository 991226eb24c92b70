"""Rank-0 (scalar) inputs are fed as scalars, and `--inputs FILE.npz` feeds real values to fidelity and benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from edgekit.core.errors import UsageError
from edgekit.core.feeds import load_inputs_file
from edgekit.core.runner_interface import InputSpec
from edgekit.core.shapes import random_feeds


def gain_model(path: Path) -> Path:
    """y = x * gain, where gain is a rank-0 input (a scalar)."""
    g = h.make_graph(
        [h.make_node("Mul", ["x", "gain"], ["y"])], "gain",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 16]), h.make_tensor_value_info("gain", T.FLOAT, [])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 16])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


@pytest.fixture
def gain(tmp_path):
    return gain_model(tmp_path / "gain.onnx")


def _inputs(gain_path):
    from edgekit.core.artifact import load_artifact

    return load_artifact(gain_path).inputs


def test_random_feed_of_scalar_is_rank0_ndarray():
    feed = random_feeds([InputSpec(name="g", shape=[], dtype="float32"), InputSpec(name="n", shape=[], dtype="int64")], 1)[0]
    for v in feed.values():
        assert isinstance(v, np.ndarray) and v.shape == ()


@pytest.mark.parametrize("runtime_fmt", ["onnx", "openvino"])
def test_scalar_input_fed_as_scalar_in_fidelity(gain, tmp_path, runtime_fmt):
    from edgekit.core.artifact import load_artifact
    from edgekit.quality.fidelity import predict

    art = load_artifact(gain)
    if runtime_fmt == "openvino":
        ov = pytest.importorskip("openvino")
        xml = tmp_path / "gain.xml"
        ov.save_model(ov.convert_model(str(gain)), str(xml))
        art = load_artifact(xml)
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    out = predict(art, [{"x": x, "gain": np.asarray(2.5, dtype=np.float32)}])
    np.testing.assert_allclose(out[0][0], x * 2.5)


def test_harness_feeds_scalar_as_rank0(gain, tmp_path):
    from edgekit.core.registry import harness_module

    np.savez(tmp_path / "in.npz", x=np.ones((1, 16), np.float32), gain=np.float32(4.0))
    sess = harness_module().open_session("openvino", str(_ov(gain, tmp_path)), 1, {})
    feeds, records = harness_module("spec").make_inputs({"inputs": [], "inputs_file": str(tmp_path / "in.npz"), "seed": 0}, sess.input_details)
    assert feeds["gain"].shape == ()
    assert [r["shape"] for r in records if r["name"] == "gain"] == [[]]
    np.testing.assert_allclose(sess.run(feeds)[0], 4.0)


def _ov(gain, tmp_path):
    ov = pytest.importorskip("openvino")
    xml = tmp_path / "g.xml"
    ov.save_model(ov.convert_model(str(gain)), str(xml))
    return xml


def test_inputs_file_checks(gain, tmp_path):
    inputs = _inputs(gain)
    ok = tmp_path / "ok.npz"
    np.savez(ok, x=np.ones((1, 16), np.float32), gain=np.float32(2.0))
    feed = load_inputs_file(ok, inputs, model="gain.onnx")
    assert feed["gain"].shape == () and feed["x"].shape == (1, 16)

    cases = {
        "missing": ({"x": np.ones((1, 16), np.float32)}, ["missing input(s) gain"]),
        "extra": ({"x": np.ones((1, 16), np.float32), "gain": np.float32(1), "rate": np.int64(3)}, ["unknown name(s) rate"]),
        "rank": ({"x": np.ones((1, 16), np.float32), "gain": np.ones((1,), np.float32)}, ["'gain'", "rank 1", "rank 0"]),
        "dim": ({"x": np.ones((1, 8), np.float32), "gain": np.float32(1)}, ["'x'", "dim 1 to 16"]),
        "dtype": ({"x": np.ones((1, 16), np.float64), "gain": np.float32(1)}, ["'x'", "float64", "float32"]),
    }
    for case, (arrays, words) in cases.items():
        f = tmp_path / f"{case}.npz"
        np.savez(f, **arrays)
        with pytest.raises(UsageError) as ei:
            load_inputs_file(f, inputs, model="gain.onnx")
        msg = ei.value.message
        assert str(f) in msg, (case, msg)
        for w in words:
            assert w in msg, (case, msg)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot read it as an .npz"):
        load_inputs_file(bad, inputs)


def test_deploy_scalar_model_with_inputs_end_to_end(gain, tmp_path, cli):
    np.savez(tmp_path / "in.npz", x=np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 16), gain=np.float32(3.0))
    r = cli("deploy", str(gain), "--profile", "x86-cpu", "--inputs", str(tmp_path / "in.npz"), "--cache-dir", str(tmp_path / "c"),
            "--warmup-runs", "1", "--warmup-seconds", "0", "--min-runs", "3", "--min-seconds", "0", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    by_name = {i["name"]: i for i in rep["benchmark"]["inputs"]}
    assert by_name["gain"]["shape"] == [] and by_name["gain"]["source"] == "file"
    assert by_name["x"]["source"] == "file"
    fid = [s["fidelity"] for s in rep["steps"] if s.get("fidelity")]
    assert fid and all(f["data"] == "eval" and f["samples"] == 1 and f["passed"] for f in fid)


def test_deploy_inputs_mismatch_is_one_line_error(gain, tmp_path, cli):
    np.savez(tmp_path / "in.npz", x=np.ones((1, 16), np.float32))
    r = cli("deploy", str(gain), "--profile", "x86-cpu", "--inputs", str(tmp_path / "in.npz"), "--no-bench")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "missing input(s) gain" in r.stderr and "in.npz" in r.stderr


def test_bench_with_inputs(gain, tmp_path, cli):
    np.savez(tmp_path / "in.npz", x=np.ones((1, 16), np.float32), gain=np.float32(3.0))
    r = cli("bench", str(gain), "--profile", "x86-cpu", "--inputs", str(tmp_path / "in.npz"),
            "--warmup-runs", "1", "--warmup-seconds", "0", "--min-runs", "3", "--min-seconds", "0", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert {i["name"]: i["source"] for i in res["inputs"]} == {"x": "file", "gain": "file"}
