"""LocalRunner: the harness as a subprocess on this machine, with real onnxruntime and PP-OCRv4 det."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from edgekit.core.artifact import load_artifact
from edgekit.core.errors import ModelLoadError, RunnerError
from edgekit.core.registry import get_runner
from edgekit.core.results import BenchmarkResult
from edgekit.core.runner_interface import HarnessSpec, InputSpec

DET = Path(importlib.util.find_spec("rapidocr_onnxruntime").origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
LocalRunner = get_runner("local")


def spec(**over) -> HarnessSpec:
    kw = dict(model_path=str(DET), model_format="onnx", runtime="onnxruntime", threads=1,
              inputs=[InputSpec(name="x", shape=[1, 3, 64, 64], dtype="float32")],
              warmup_runs=1, warmup_seconds=0.0, min_runs=4, min_seconds=0.0, idle_seconds=0.0)
    kw.update(over)
    return HarnessSpec(**kw)


def test_run_harness_returns_result_and_streams_progress():
    events = []
    with LocalRunner(None, on_progress=events.append) as r:
        res = r.run_harness(spec())
        wd = r.workdir
        assert wd.is_dir() and not list(wd.glob("spec-*.json"))  # the spec file is removed after the run
    assert not wd.exists()  # own temp work dir removed on close
    assert isinstance(res, BenchmarkResult) and res.runner == "local" and res.host
    assert res.timing.runs == len(res.timing.samples_ms) == 4
    phases = [e["phase"] for e in events]
    assert phases[0] == "load" and phases.index("warmup") < phases.index("timed")
    assert events[-1] == {"phase": "timed", "runs": 4, "elapsed_s": events[-1]["elapsed_s"], "state": "done"}


def test_push_returns_the_artifacts_own_path(tmp_path):
    art = load_artifact(DET)
    with LocalRunner(None, workdir=str(tmp_path / "wd")) as r:
        assert r.push(art) == str(DET.resolve())
        assert not any((tmp_path / "wd").iterdir())  # nothing copied
    assert (tmp_path / "wd").is_dir()  # a given work dir is the user's: kept


def test_push_missing_file(tmp_path):
    m = tmp_path / "m.onnx"
    m.write_bytes(DET.read_bytes())
    art = load_artifact(m)
    m.unlink()
    with LocalRunner(None) as r, pytest.raises(ModelLoadError, match="m.onnx"):
        r.push(art)


def test_probe():
    with LocalRunner(None) as r:
        p = r.probe()
    assert p["python_executable"] == sys.executable and p["runtimes"]["onnxruntime"]["available"]
    assert p["workdir"] and p["free_disk_bytes"] > 0


def test_harness_error_becomes_runner_error():
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with LocalRunner(None) as r, pytest.raises(RunnerError) as ei:
        r.run_harness(spec(runtime="tensorrt", model_format="tensorrt"))
    e = ei.value
    assert e.remote_exit_code == 3 and e.kind == "runtime_missing"
    assert "harness.py" in e.command and "spec-" in e.command
    assert "JetPack" in e.hint and "EDGEKIT-ERROR" in e.stderr_tail


def test_bad_inputs_error_names_the_input(tmp_path):
    import numpy as np

    np.savez(tmp_path / "in.npz", image=np.zeros((1, 3, 64, 64), np.float32))
    with LocalRunner(None) as r, pytest.raises(RunnerError) as ei:
        r.run_harness(spec(inputs_file=str(tmp_path / "in.npz")))
    assert ei.value.remote_exit_code == 2 and "missing x" in str(ei.value)


def test_wrong_python_is_a_clear_error(tmp_path):
    with LocalRunner(None, python=str(tmp_path / "no-python")) as r, pytest.raises(RunnerError, match="cannot start"):
        r.run_harness(spec())


CTRL_C_SCRIPT = """
import os, signal, sys, threading
sys.path.insert(0, {tests!r})
from test_local import LocalRunner, spec
seen = threading.Event()

def on_progress(ev):
    if ev["phase"] == "timed" and not seen.is_set():
        seen.set()
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to the host process

r = LocalRunner(None, on_progress=on_progress)
try:
    r.run_harness(spec(min_seconds=120.0, max_seconds=120.0))
    print("NO-INTERRUPT")
except KeyboardInterrupt:
    print("INTERRUPTED", "child-gone" if r.last_proc is not None and r.last_proc.poll() is not None else "child-running")
r.close()
"""


def test_ctrl_c_kills_the_harness():
    """In a fresh interpreter: SIGINT delivered to pytest's own process, after torch/jax/litert were imported by
    other tests, crashed it (segfault) — and the default SIGINT handler must be in place, as in a terminal."""
    import subprocess

    code = CTRL_C_SCRIPT.format(tests=str(Path(__file__).parent))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    assert "INTERRUPTED child-gone" in p.stdout, (p.stdout, p.stderr[-2000:])


def test_timeout_stops_the_harness():
    r = LocalRunner(None, timeout=3.0)
    with pytest.raises(RunnerError, match="did not finish within 3.0 s"):
        r.run_harness(spec(min_seconds=120.0, max_seconds=120.0))
    assert r.last_proc.poll() is not None
    r.close()


def test_peak_rss_is_the_harness_own_not_its_parents():
    """Linux keeps ru_maxrss across exec: a big parent must not inflate the harness's reported peak."""
    import numpy as np

    ballast = np.ones(700 * 1024 * 1024 // 8)  # ~700 MB resident in this (parent) process
    try:
        with LocalRunner(None) as r:
            res = r.run_harness(spec())
    finally:
        del ballast
    assert res.memory.peak_rss_mb is not None
    assert res.memory.peak_rss_mb < 500, res.memory
    assert res.memory.peak_rss_mb >= res.memory.rss_after_load_mb
