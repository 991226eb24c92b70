"""SIGTERM is handled like Ctrl-C (no temp dir survives), and temp dirs that killed runs left are swept at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.core import tempdirs


def _start(args, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))
    env.pop("EDGEKIT_DEBUG", None)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "edgekit.cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(pred, proc, timeout=300.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = pred()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the point to interrupt it: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run never reached the point to interrupt it")


def _building(cache: Path):
    return list(cache.glob("??/.tmp-*"))


def test_sigterm_during_conversion_leaves_no_temp_dir(tmp_path):
    cache = tmp_path / "c"
    proc = _start(["deploy", "zoo:ppocr-det", "-p", "x86-cpu", "--runtime", "openvino", "--no-bench", "--cache-dir", str(cache),
                   "--out", str(tmp_path / "out")], tmp_path)
    _wait_for(lambda: _building(cache), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated" in err and "Traceback" not in err
    assert not _building(cache) and not list(cache.glob("??/.stale-*"))
    assert not (tmp_path / "out").exists(), "--out is untouched by an interrupted run"
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_sigterm_during_benchmark_removes_the_local_work_dir(tmp_path):
    import onnx

    m = Path(onnx.__file__).parent / "backend/test/data/light/light_shufflenet.onnx"
    proc = _start(["deploy", str(m), "-p", "x86-cpu", "--runtime", "onnxruntime", "--cache-dir", str(tmp_path / "c"),
                   "--min-seconds", "60", "--warmup-seconds", "0"], tmp_path)
    workdirs = _wait_for(lambda: list((tmp_path / "tmp").glob("edgekit-local-*/spec-*")), proc)
    time.sleep(0.5)  # the harness is running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert not workdirs[0].parent.exists()
    assert not list((tmp_path / "tmp").glob("edgekit-local-*"))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_dirs_of_dead_runs_are_swept_at_start(tmp_path, cli):
    """What a SIGKILLed run leaves (no handler can run) is removed by the next run; live and recent dirs are kept."""
    import onnx

    cache = tmp_path / "c"
    shard = cache / "ab"
    shard.mkdir(parents=True)
    host = tempdirs._host()
    dead = shard / f".tmp-{_dead_pid()}@{host}-abcdef012345-xyz"
    live = shard / f".tmp-{os.getpid()}@{host}-abcdef012345-xyz"
    old_unknown = shard / ".tmp-1@otherhost-abcdef012345-xyz"  # another host's run: judged by age alone
    new_unknown = shard / ".tmp-1@otherhost-abcdef012345-new"
    for d in (dead, live, old_unknown, new_unknown):
        d.mkdir()
        (d / "model.bin").write_bytes(b"x" * 10)
    two_days = time.time() - 2 * tempdirs.DAY_S
    os.utime(old_unknown, (two_days, two_days))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    local_dead = tmp / f"edgekit-local-{_dead_pid()}@{host}-q"
    local_dead.mkdir()
    m = Path(onnx.__file__).parent / "backend/test/data/light/light_shufflenet.onnx"
    r = cli("deploy", str(m), "-p", "x86-cpu", "--runtime", "onnxruntime", "--cache-dir", str(cache),
            "--min-seconds", "0.05", "--min-runs", "2", "--warmup-runs", "0", "--warmup-seconds", "0", env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert not dead.exists() and not old_unknown.exists() and not local_dead.exists()
    assert live.exists() and new_unknown.exists()
    assert "removed 2 temp dir(s)" in r.stderr
