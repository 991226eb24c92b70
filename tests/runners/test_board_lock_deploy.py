"""Every device benchmark holds the board's lock: a deploy to a board that a sweep (or another deploy) is measuring
waits for it, and says so, instead of timing two models on one board at once (real sshd on loopback)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

import onnx
from onnx import TensorProto as T
from onnx import helper as h

from edgekit.fleet.lock import BoardLock


def _model(path):
    g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "relu", [h.make_tensor_value_info("x", T.FLOAT, [1, 8])], [h.make_tensor_value_info("y", T.FLOAT, [1, 8])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _args(ssh_env, wd, python):
    return ["--profile", "x86-cpu", "--host", ssh_env.spec, "--known-hosts", str(ssh_env.known_hosts), "--identity-file", str(ssh_env.client_key),
            "--ssh-config", str(ssh_env.root / "ssh_config"), "--remote-workdir", str(wd), "--remote-python", str(python)]


def test_deploy_to_a_locked_board_waits_then_fails_clearly(ssh_env, tmp_path, cli):
    data = tmp_path / "data"
    env = {"EDGEKIT_DATA_DIR": str(data), "EDGEKIT_LOCK_TIMEOUT_S": "1"}
    holder = subprocess.Popen([sys.executable, "-c", "import sys;from edgekit.fleet.lock import BoardLock\n"
                               f"l=BoardLock('ssh:{ssh_env.spec}', holder='a sweep in another terminal');l.acquire();print('locked',flush=True);sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    model = _model(tmp_path / "relu.onnx")
    args = [str(model), *_args(ssh_env, tmp_path / "wd", sys.executable), "--cache-dir", str(tmp_path / "c"), "--runtime", "onnxruntime",
            "--warmup-runs", "0", "--warmup-seconds", "0", "--min-runs", "2", "--min-seconds", "0"]
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = cli("deploy", *args, env=env)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert f"locked by pid {holder.pid} (a sweep in another terminal)" in r.stderr, r.stderr[-2000:]
        assert "EDGEKIT_LOCK_TIMEOUT_S" in r.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    r = cli("deploy", *args, env=env)  # the lock died with its holder
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_lock_is_reentrant_for_its_thread_only(tmp_path, monkeypatch, lock_from_another_thread):
    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(tmp_path))
    outer = BoardLock("ssh:board-x", timeout_s=0.2)
    outer.acquire()
    try:
        with BoardLock("ssh:board-x", timeout_s=0.2):  # a sweep cell's benchmark() re-enters its own lock
            pass
        errors = lock_from_another_thread("ssh:board-x", 0.3)
        assert errors and "ssh:board-x is locked" in errors[0].message, "another thread must still wait for the board"
    finally:
        outer.release()
    t = threading.Thread(target=lambda: BoardLock("ssh:board-x", timeout_s=0.2).acquire())
    t.start()
    t.join()  # released: another thread gets it (its fd closes with the object)


def test_a_bad_timeout_setting_is_named(tmp_path, monkeypatch):
    from edgekit.core.errors import UsageError
    from edgekit.fleet.lock import hold_runner_board

    class Ssh:
        name, host_spec, target = "ssh", "pi@board", "pi@board"

    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EDGEKIT_LOCK_TIMEOUT_S", "soon")
    with pytest.raises(UsageError, match="EDGEKIT_LOCK_TIMEOUT_S='soon'"):
        with hold_runner_board(Ssh(), "test"):
            pass
