"""Helpers of the report tests: the onnx wheel's light_* models and quick benchmark options."""

from __future__ import annotations

from pathlib import Path

QUICK = ["--warmup-runs", "2", "--warmup-seconds", "0", "--min-runs", "15", "--min-seconds", "0.2"]


def light_model(name: str) -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


def edgekit_cli(*args: str, env=None, timeout: float = 600):
    """`edgekit ARGS` in a subprocess, for module-scoped fixtures (the `cli` fixture is per test)."""
    import os
    import subprocess
    import sys

    full = {k: v for k, v in os.environ.items() if k != "EDGEKIT_DEBUG"}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], capture_output=True, text=True, timeout=timeout, env=full)
