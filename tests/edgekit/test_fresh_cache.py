"""Every command on a fresh, empty cache whose path has square brackets (rich markup syntax) in it."""

from __future__ import annotations

from pathlib import Path

import pytest

QUICK = ["--min-seconds", "0.05", "--min-runs", "2", "--warmup-runs", "0", "--warmup-seconds", "0"]


def _model() -> str:
    import onnx

    return str(Path(onnx.__file__).parent / "backend/test/data/light/light_shufflenet.onnx")


COMMANDS = {
    "doctor": lambda t: ["doctor", "--profile", "x86-cpu"],
    "profiles list": lambda t: ["profiles", "list"],
    "profiles show": lambda t: ["profiles", "show", "x86-cpu"],
    "zoo list": lambda t: ["zoo", "list"],
    "plan": lambda t: ["plan", _model(), "-p", "x86-cpu"],
    "deploy": lambda t: ["deploy", _model(), "-p", "x86-cpu", "--out", str(t / "[out]"), *QUICK],
    "bench": lambda t: ["bench", _model(), "-p", "x86-cpu", *QUICK],
    "compress": lambda t: ["compress", "zoo:ppocr-rec", "--method", "weight-share", "--clusters", "16", "-p", "x86-cpu",
                           "--out", str(t / "[ws]"), "--eval-samples", "2"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_on_a_fresh_cache(name, tmp_path, cli):
    fresh = tmp_path / "[fresh cache]"
    fresh.mkdir()
    env = {"EDGEKIT_CACHE_DIR": str(fresh / "edgekit"), "XDG_CACHE_HOME": str(fresh), "COLUMNS": "400"}
    r = cli(*COMMANDS[name](tmp_path), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    if name == "doctor":
        # the onnx2tf tool env is not built in a fresh cache: its path is shown verbatim, brackets included
        assert str(fresh / "edgekit" / "tools" / "onnx2tf-") in r.stdout, r.stdout
    if name == "deploy":
        assert "[out]" in " ".join(r.stdout.split())


def test_doctor_prints_hints_and_paths_verbatim(capsys, monkeypatch):
    """A missing extra's hint keeps `[litert]`, and a bracketed path is not read as a markup tag (it crashed)."""
    from edgekit.cli.doctor import _render

    monkeypatch.setenv("COLUMNS", "300")
    report = {
        "target": "this machine",
        "device": {"hostname": "h[1]", "arch": "x86_64", "runtimes": {"openvino": {"available": False, "reason": "not installed"}}},
        "converters": [{"step": "litert-torch", "ok": False, "detail": "needs litert_torch: pip install 'edgekit[litert]'"},
                       {"step": "tflite", "ok": False, "detail": "onnx2tf env not built at /home/u/[x]/edgekit/tools/onnx2tf-1"}],
        "python_packages": [{"package": "litert-torch", "version": None, "ok": False, "install": "pip install 'edgekit[litert]'"}],
        "profile_mismatches": ["CPU lacks [avx512_vnni]"],
    }
    _render(report)
    out = capsys.readouterr().out
    assert out.count("pip install 'edgekit[litert]'") == 2
    assert "/home/u/[x]/edgekit/tools/onnx2tf-1" in out and "h[1]" in out and "[avx512_vnni]" in out
    assert "pip install 'edgekit[openvino]'" in out  # the runtime hint
