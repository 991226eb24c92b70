"""deploy --host probes the device BEFORE converting and plans only for the runtimes it has (real sshd on loopback).

The device's Python is this machine's, started through a wrapper that puts a package named `openvino` first on
its path whose import fails, as on a board where openvino is not installed: the real probe sees a real ImportError."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h


def _model(path: Path) -> Path:
    g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "relu", [h.make_tensor_value_info("x", T.FLOAT, [1, 8])], [h.make_tensor_value_info("y", T.FLOAT, [1, 8])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture
def python_without_openvino(tmp_path) -> Path:
    stub = tmp_path / "hide" / "openvino"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ImportError("No module named \'openvino\' (not installed on this device)")\n')
    wrapper = tmp_path / "python-no-openvino"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "hide"} exec {sys.executable} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


def _args(ssh_env, wd, python):
    return ["--profile", "x86-cpu", "--host", ssh_env.spec, "--known-hosts", str(ssh_env.known_hosts), "--identity-file", str(ssh_env.client_key),
            "--ssh-config", str(ssh_env.root / "ssh_config"), "--remote-workdir", str(wd), "--remote-python", str(python)]


def test_deploy_host_skips_runtime_the_device_lacks(ssh_env, tmp_path, cli, python_without_openvino):
    model = _model(tmp_path / "relu.onnx")
    cache = tmp_path / "cache"
    r = cli("deploy", str(model), *_args(ssh_env, tmp_path / "wd", python_without_openvino), "--cache-dir", str(cache),
            "--warmup-runs", "1", "--warmup-seconds", "0", "--min-runs", "3", "--min-seconds", "0", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["runtime"] == "onnxruntime"  # openvino is the profile's first choice, and the device lacks it
    assert any("openvino" in n and ("does not have it" in n or "not installed there" in n) for n in rep["plan_notes"]), rep["plan_notes"]
    assert rep["benchmark"]["runner"] == "ssh" and rep["benchmark"]["runtime"]["name"] == "onnxruntime"
    assert not list(cache.rglob("*.xml"))  # nothing was converted for openvino


def test_deploy_host_explicit_missing_runtime_fails_before_converting(ssh_env, tmp_path, cli, python_without_openvino):
    model = _model(tmp_path / "relu.onnx")
    cache = tmp_path / "cache"
    r = cli("deploy", str(model), *_args(ssh_env, tmp_path / "wd", python_without_openvino), "--cache-dir", str(cache), "--runtime", "openvino", "--no-bench")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "has no openvino" in r.stderr and "onnxruntime" in r.stderr
    assert not list(cache.rglob("*.xml"))  # refused before any conversion
