"""`edgekit --help` and each command's help import no heavy library (they would cost seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "tensorflow", "openvino", "nncf", "transformers", "onnxruntime", "onnxsim", "paramiko", "onnx")


@pytest.mark.parametrize("argv", [["--help"], ["deploy", "--help"], ["plan", "--help"], ["bench", "--help"], ["doctor", "--help"], ["profiles", "--help"]])
def test_help_is_light(argv):
    code = (
        "import sys\nfrom edgekit.cli.main import main\n"
        f"rc = main({argv!r})\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy)\nsys.exit(rc)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Usage:" in p.stdout
    assert "HEAVY []" in p.stdout, p.stdout.splitlines()[-1]


def test_version():
    p = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and "edgekit" in p.stdout


def test_optional_package_import_noise_is_silenced():
    """litert-torch pulls in torchao, which transformers imports: its CUDA-kernel warnings must not reach the user."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao is not installed (it comes with edgekit[litert])")
    p = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "plan", "zoo:minilm", "--profile", "x86-cpu"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Failed to load" not in p.stderr and "Enum subclass" not in p.stderr, p.stderr[:500]
    assert "export" in p.stdout  # the plan itself is printed
