"""Packaging: the wheel installs into a fresh venv with only the core dependencies and the CLI works there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
        check=True,
    )
    (whl,) = dist.glob("edgekit-*.whl")
    return whl


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgekit/converters/__init__.py" in names
    # the harness package the zipapp is built from, every runtime adapter and energy source included
    for f in ("__main__.py", "schema.py", "bench.py", "adapters/onnxruntime.py", "energy/tegrastats.py"):
        assert f"edgekit/runners/harness/{f}" in names
    assert "edgekit/runners/harness_pyz.py" in names
    assert "edgekit/device_profiles/x86-cpu.yaml" in names
    # every subpackage and the zoo's data files (read at run time by edgekit.zoo.datasets)
    for pkg in ("core", "quality", "zoo", "workflows", "cli"):
        assert f"edgekit/{pkg}/__init__.py" in names
    assert {"edgekit/zoo/data/sentences.txt", "edgekit/zoo/data/distill_sentences.txt"} <= set(names)
    # no top-level `converters`/`runners` package leaks into site-packages
    assert not [n for n in names if n.split("/")[0] in ("converters", "runners", "device_profiles", "tests")]


@pytest.mark.slow
def test_fresh_venv_runs_profiles_list(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900)
    # run outside the source tree so the checkout's own edgekit/ cannot shadow the installed package
    out = subprocess.run([str(venv / "bin" / "edgekit"), "profiles", "list", "--json"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for name in ("jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5", "android-arm64", "x86-cpu"):
        assert name in out.stdout
    where = subprocess.run([str(py), "-c", "import edgekit, edgekit.converters; print(edgekit.__file__)"], capture_output=True, text=True, cwd=tmp_path)
    assert str(venv) in where.stdout
    # heavy optional libraries are not needed for the core CLI
    has_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True, cwd=tmp_path)
    assert has_torch.returncode != 0
