"""Under --json, stdout carries one JSON document and nothing else, for every command that has --json."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest

QUICK = ["--min-seconds", "0.05", "--min-runs", "2", "--warmup-runs", "0", "--warmup-seconds", "0"]
LIGHT = "backend/test/data/light/light_shufflenet.onnx"


def _model() -> str:
    import onnx

    return str(Path(onnx.__file__).parent / LIGHT)


def _calib(tmp: Path) -> str:
    p = tmp / "calib.npy"
    np.save(p, np.random.default_rng(0).random((12, 3, 224, 224), dtype=np.float32))
    return str(p)


# command path -> arguments (built per test: some need files). distill's --json run is
# tests/edgekit/test_distill.py::test_cli_distill_minilm_writes_onnx_and_report (it trains; marked slow there).
CASES = {
    "profiles list": lambda t: ["profiles", "list"],
    "profiles show": lambda t: ["profiles", "show", "x86-cpu"],
    "zoo list": lambda t: ["zoo", "list"],
    "plan": lambda t: ["plan", _model(), "-p", "x86-cpu"],
    "doctor": lambda t: ["doctor", "--profile", "x86-cpu"],
    # OpenVINO INT8: NNCF draws rich progress bars on stdout unless edgekit keeps stdout for the JSON
    "deploy": lambda t: ["deploy", _model(), "-p", "x86-cpu", "--runtime", "openvino", "--precision", "int8", "--calib", _calib(t),
                         "--no-bench", "--cache-dir", str(t / "c"), "--out", str(t / "o"), "--fidelity-samples", "2"],
    "bench": lambda t: ["bench", _model(), "-p", "x86-cpu", "--runtime", "onnxruntime", *QUICK],
    "compress": lambda t: ["compress", "zoo:ppocr-rec", "--method", "weight-share", "--clusters", "16", "-p", "x86-cpu", "--out", str(t / "ws"), "--eval-samples", "2"],
}
# stdout parsed as JSON by their own tests: compare (tests/report/test_report_compare_cli.py), sweep
# (tests/fleet/test_sweep.py, the Ray run), setup (tests/runners/test_setup_ssh.py, needs the loopback sshd)
COVERED_ELSEWHERE = {"distill", "compare", "sweep", "setup"}


def _json_commands():
    from edgekit.cli.main import cli

    found = set()

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])
        elif any("--json" in p.opts for p in cmd.params):
            found.add(" ".join(path))

    walk(cli, [])
    return found


def test_every_command_with_json_is_tested_here():
    assert _json_commands() == set(CASES) | COVERED_ELSEWHERE


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_stdout_is_json_only(name, tmp_path, cli):
    r = cli(*CASES[name](tmp_path), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    json.loads(r.stdout)  # the whole of stdout is one JSON document


def test_compress_that_cannot_apply_is_a_one_line_error(tmp_path, cli):
    """light_shufflenet builds its weights at run time (no initializer to share): a clear error, not a traceback."""
    r = cli("compress", _model(), "--method", "weight-share", "-p", "x86-cpu", "--out", str(tmp_path / "ws"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: weight-share cannot compress") and "light_shufflenet.onnx" in r.stderr
