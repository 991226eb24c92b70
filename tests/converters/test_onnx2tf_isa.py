"""The onnx2tf tool env runs with ISA-independent settings, and a crash by signal is named as such (default tier).

The crash is a real one: the "Python" handed to the step is a shell script that records its environment and then
exec()s a Python that kills itself with SIGILL, as TensorFlow's oneDNN did on a Cascade Lake Xeon."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.converters import onnx2tf_env
from edgekit.converters.tflite import TfliteConfig, TfliteStep
from edgekit.core.artifact import load_artifact
from edgekit.core.errors import StepError
from edgekit.core.profiles import load_profile
from edgekit.core.steps import StepContext


def _conv(tmp_path: Path) -> Path:
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [w])
    p = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(p))
    return p


def test_tool_environment_is_isa_independent(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # a user's setting that brought the SIGILL back
    monkeypatch.setenv("PYTHONPATH", "/somewhere/edgekit")
    env = onnx2tf_env.tool_environment()
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert "PYTHONPATH" not in env
    # nothing in it comes from this machine: the same base gives the same environment everywhere
    assert onnx2tf_env.tool_environment({"PATH": "/bin"}) == {"PATH": "/bin", "TF_CPP_MIN_LOG_LEVEL": "2", **onnx2tf_env.ISA_INDEPENDENT_ENV}


def test_killed_by_names_the_signal():
    assert onnx2tf_env.killed_by(0) is None and onnx2tf_env.killed_by(1) is None and onnx2tf_env.killed_by(None) is None
    assert onnx2tf_env.killed_by(-4) == "SIGILL (signal 4)"
    assert onnx2tf_env.killed_by(-9) == "SIGKILL (signal 9)"


def test_crash_by_signal_is_reported_with_its_log_kept(tmp_path, monkeypatch):
    script = tmp_path / "fakepython"
    script.write_text(
        "#!/bin/sh\n"
        'env > "$PWD/env_seen.txt"\n'
        'echo "could not create a primitive descriptor for a convolution forward propagation primitive" >&2\n'
        f"exec {sys.executable} -c 'import os, signal; os.kill(os.getpid(), signal.SIGILL)'\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(onnx2tf_env, "ensure_env", lambda progress=None, timeout_s=1800.0: script)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    cache = tmp_path / "cache"
    ctx = StepContext(work_dir=tmp_path / "work", profile=load_profile("x86-cpu"), cache_dir=cache)
    with pytest.raises(StepError) as ei:
        TfliteStep().run(load_artifact(_conv(tmp_path)), TfliteConfig(precision="fp32"), ctx)
    msg = ei.value.message
    assert "onnx2tf was killed by SIGILL (signal 4)" in msg
    kept = [d for d in (cache / "failed").iterdir()]
    assert len(kept) == 1 and str(kept[0]) in msg
    log = (kept[0] / "onnx2tf.log").read_text()
    assert "primitive descriptor" in log
    seen = dict(line.split("=", 1) for line in (kept[0] / "env_seen.txt").read_text().splitlines() if "=" in line)
    assert seen["TF_ENABLE_ONEDNN_OPTS"] == "0" and seen["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_ordinary_failure_keeps_log_under_failed(tmp_path, monkeypatch):
    script = tmp_path / "fakepython"
    script.write_text("#!/bin/sh\necho 'ERROR: onnx_op_name: conv0' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(onnx2tf_env, "ensure_env", lambda progress=None, timeout_s=1800.0: script)
    cache = tmp_path / "cache"
    ctx = StepContext(work_dir=tmp_path / "work", profile=load_profile("x86-cpu"), cache_dir=cache)
    with pytest.raises(StepError) as ei:
        TfliteStep().run(load_artifact(_conv(tmp_path)), TfliteConfig(precision="fp32"), ctx)
    assert "killed" not in ei.value.message and "exit 1" in ei.value.message
    kept = list((cache / "failed").iterdir())
    assert len(kept) == 1 and (kept[0] / "onnx2tf.log").exists() and str(kept[0]) in ei.value.message


@pytest.mark.skipif(os.environ.get("EDGEKIT_TEST_ONNX2TF") != "1", reason="opt-in: EDGEKIT_TEST_ONNX2TF=1 (minutes per PP-OCR conversion)")
def test_deploy_ppocr_rec_runtime_tflite(tmp_path, cli):
    """`edgekit deploy zoo:ppocr-rec --profile x86-cpu --runtime tflite` (stopped at p2o.Conv.35 on a Cascade Lake Xeon)."""
    import json

    r = cli("deploy", "zoo:ppocr-rec", "--profile", "x86-cpu", "--runtime", "tflite", "--no-bench", "--cache-dir", str(tmp_path / "c"), "--json", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["runtime"] == "tflite" and rep["artifact"]["format"] == "tflite"
    assert rep["fidelity_end_to_end"]["task_score"] >= 0.99
