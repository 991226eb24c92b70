"""Inputs a new user meets that used to end in a traceback or a leaked temp dir: each is a run or a one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

QUICK = ["--min-seconds", "0.05", "--min-runs", "2", "--warmup-runs", "0", "--warmup-seconds", "0"]


def _clean_error(r, *needles):
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def _leftovers(cache: Path):
    """Temp dirs a step left in the cache (entries are published by renaming `.<key>-*` dirs)."""
    return [p for p in cache.rglob(".*") if p.is_dir()] if cache.exists() else []


def _scalar_model(path: Path) -> Path:
    g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "scalar",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                          [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _string_model(path: Path) -> Path:
    g = helper.make_graph([helper.make_node("StringNormalizer", ["s"], ["y"], case_change_action="LOWER")], "str",
                          [helper.make_tensor_value_info("s", TensorProto.STRING, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, [1, 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_rank0_input_is_converted_checked_and_benchmarked(tmp_path, cli, runtime):
    m = _scalar_model(tmp_path / "scalar.onnx")
    cache = tmp_path / "c"
    r = cli("deploy", str(m), "-p", "x86-cpu", "--runtime", runtime, "--cache-dir", str(cache), "--out", str(tmp_path / "o"), *QUICK)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["benchmark"]["timing"]["runs"] >= 2
    assert rep["benchmark"]["inputs"][0]["shape"] == [], "fed as a rank-0 tensor"
    assert not _leftovers(cache)


def test_string_input_is_a_one_line_error(tmp_path, cli):
    m = _string_model(tmp_path / "string.onnx")
    cache = tmp_path / "c"
    _clean_error(cli("deploy", str(m), "-p", "x86-cpu", "--no-bench", "-q", "--cache-dir", str(cache)), "input 's'", "string.onnx", "numeric")
    assert not _leftovers(cache)


def test_a_crash_in_the_fidelity_check_leaves_no_cache_temp_dir(tmp_path, monkeypatch):
    """Fault injection: whatever goes wrong while checking a step's output, its temp dir does not survive."""
    import edgekit.core.pipeline as pipeline
    from edgekit.workflows.deploy import deploy

    def boom(*a, **k):
        raise RuntimeError("runtime blew up while checking")

    monkeypatch.setattr(pipeline, "predict", boom)
    with pytest.raises(RuntimeError):
        deploy(str(_scalar_model(tmp_path / "s.onnx")), "x86-cpu", runtime="openvino", run_benchmark=False, cache_dir=tmp_path / "c")
    assert not _leftovers(tmp_path / "c")
    assert not list((tmp_path / "c").rglob("entry.json"))


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_cache_on_a_full_disk_is_a_one_line_error(small_tmpfs, cli, runtime):
    import onnx as _onnx

    m = Path(_onnx.__file__).parent / "backend/test/data/light/light_shufflenet.onnx"
    cache = small_tmpfs("400k") / "c"  # a real full disk
    # OpenVINO's serializer fails with "basic_ios::clear", onnxsim with ENOSPC: both name the cache and the fix
    _clean_error(cli("deploy", str(m), "-p", "x86-cpu", "--runtime", runtime, "--no-bench", "-q", "--cache-dir", str(cache)),
                 "out of space", str(cache), "--cache-dir")
    assert not _leftovers(cache)


@pytest.mark.parametrize("option,value,needle", [
    ("--fidelity-samples", "0", "--fidelity-samples must be at least 1"),
    ("--threads", "-1", "--threads must be at least 1"),
    ("--warmup-seconds", "-5", "--warmup-seconds must be >= 0"),
    ("--min-seconds", "-1", "--min-seconds must be >= 0"),
    ("--max-seconds", "0", "--max-seconds must be > 0"),
])
def test_bad_numbers_are_refused_before_any_conversion(tmp_path, cli, option, value, needle):
    import onnx as _onnx

    m = Path(_onnx.__file__).parent / "backend/test/data/light/light_shufflenet.onnx"
    cache = tmp_path / "c"
    _clean_error(cli("deploy", str(m), "-p", "x86-cpu", "--cache-dir", str(cache), "--out", str(tmp_path / "o"), option, value), needle)
    assert not cache.exists(), "nothing was converted (and no good model moved to rejected/)"
    assert not (tmp_path / "o").exists()


def test_missing_external_data_file_is_named(tmp_path, cli):
    w = numpy_helper.from_array(np.random.default_rng(0).random((64, 64)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "ext", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    m = tmp_path / "ext.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(m), save_as_external_data=True, location="ext.weights", size_threshold=0)
    (tmp_path / "ext.weights").unlink()
    for runtime in ("openvino", "onnxruntime"):
        r = cli("deploy", str(m), "-p", "x86-cpu", "--runtime", runtime, "--no-bench", "-q", "--cache-dir", str(tmp_path / "c"))
        _clean_error(r, "ext.weights", "missing", str(tmp_path / "ext.weights"))
        assert "replace or remove that op" not in r.stderr


def test_extends_of_a_missing_profile_names_the_file_that_says_it(tmp_path, cli):
    (tmp_path / "board.yaml").write_text("name: board\ndescription: mine\nextends: jetsn-nano\n")
    r = cli("plan", str(_scalar_model(tmp_path / "s.onnx")), "-p", str(tmp_path / "board.yaml"))
    _clean_error(r, f"{tmp_path / 'board.yaml'} (extends: on line 3)", "unknown device profile 'jetsn-nano'", "did you mean jetson-nano")
