"""The harness must stay Python 3.6 compatible (Jetson Nano / JetPack 4) and self-contained (no edgekit import),
and ship as one reproducible zipapp."""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit.core.registry import harness_path
from edgekit.runners import harness_pyz

HARNESS = Path(harness_path())  # the built zipapp
PACKAGE = harness_pyz.PACKAGE_DIR
FILES = sorted(PACKAGE.rglob("*.py"))
# vermin has no `python -m vermin`; call its console-script entry point with this interpreter.
VERMIN = [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())",
          "-t=3.6-", "--no-tips", "--violations", "--eval-annotations"]


def _vermin(*paths: Path):
    pytest.importorskip("vermin")
    return subprocess.run(VERMIN + [str(p) for p in paths], capture_output=True, text=True, timeout=120)


def test_vermin_reports_no_36_violation_in_any_file(tmp_path):
    entry = tmp_path / "__main__.py"
    entry.write_bytes(harness_pyz.ENTRY)  # the zipapp's own entry point
    assert len(FILES) >= 15  # the whole package: adapters/, energy/, spec, bench, probe, __main__ ...
    p = _vermin(PACKAGE, entry)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "requires" not in p.stdout


@pytest.mark.parametrize("snippet", [
    "import time\nT = time.perf_counter_ns()\n",
    "import subprocess\nP = subprocess.run(['true'], capture_output=True)\n",
    "from dataclasses import dataclass\n",
    "if (N := 1):\n    pass\n",
    "X = 1\nS = f'{X=}'\n",
])
def test_vermin_check_catches_37_features(tmp_path, snippet):
    copy = tmp_path / "harness"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    bad = copy / "energy" / "rapl.py"  # a file deep in the package: the check covers every file
    bad.write_text(bad.read_text() + "\n" + snippet)
    p = _vermin(copy)
    assert p.returncode != 0 and "Target versions not met" in p.stdout, p.stdout


def test_harness_imports_only_stdlib_numpy_and_runtimes():
    allowed_third_party = {"numpy", "onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime", "tensorflow",
                           "tensorrt", "cuda", "pycuda"}
    for path in FILES:
        tree = ast.parse(path.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        assert "edgekit" not in names, path
        third = {n for n in names if n not in sys.stdlib_module_names}
        assert third <= allowed_third_party, (path, third - allowed_third_party)
        # numpy and the runtimes are imported lazily (inside functions), never at module top
        top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        assert not (top & allowed_third_party), path


def test_two_builds_give_the_same_sha256_and_a_change_gives_another(tmp_path):
    a = harness_pyz.harness_pyz(tmp_path / "a")
    b = harness_pyz.harness_pyz(tmp_path / "b")
    assert a != b and hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()
    assert a.parent.name == hashlib.sha256(a.read_bytes()).hexdigest()[:16]  # the cache key is the content
    # the build must depend on the content: one more source file changes the sha256
    c = harness_pyz.harness_pyz(tmp_path / "c", extra={"harness/adapters/_note.py": b"# another file\n"})
    assert c.read_bytes() != a.read_bytes()
    z = zipfile.ZipFile(a)
    names = z.namelist()
    assert names == sorted(names) and "__main__.py" in names and "harness/adapters/onnxruntime.py" in names
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]
    assert {i.date_time for i in z.infolist()} == {harness_pyz.FIXED_TIME}
    assert a.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_a_pycache_in_the_source_tree_does_not_change_the_build(tmp_path):
    before = harness_pyz.build_bytes()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(PACKAGE)], check=True)  # what running tests leaves
    assert list(PACKAGE.rglob("__pycache__"))
    assert harness_pyz.build_bytes() == before


def _python36():
    """A real Python 3.6 interpreter if this machine has one (pyenv or PATH)."""
    candidates = [os.environ.get("EDGEKIT_PY36", "")] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))
    w = shutil.which("python3.6")
    if w:
        candidates.append(w)
    for c in candidates:
        if not c or not os.path.exists(c):
            continue
        try:
            out = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 6)":
            return c
    return None


PY36 = _python36()
needs36 = pytest.mark.skipif(PY36 is None, reason="no Python 3.6 interpreter on this machine (set EDGEKIT_PY36)")


@needs36
def test_probe_runs_under_python36():
    p = subprocess.run([PY36, str(HARNESS), "--probe"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["python"].startswith("3.6.") and "runtimes" in d and "energy" in d


@needs36
def test_spec_errors_and_missing_runtime_under_python36(tmp_path):
    p = subprocess.run([PY36, str(HARNESS), "-"], input='{"model_path": "m.onnx", "runtime": "onnxruntime"}',
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "'model_format' is required" in p.stderr
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x07")
    spec = {"model_path": str(model), "model_format": "onnx", "runtime": "tensorrt"}
    p = subprocess.run([PY36, str(HARNESS), "-"], input=json.dumps(spec), capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and "EDGEKIT-ERROR" in p.stderr


@needs36
def test_full_benchmark_under_python36_when_onnxruntime_is_there(tmp_path):
    has = subprocess.run([PY36, "-c", "import numpy, onnxruntime"], capture_output=True, timeout=60).returncode == 0
    if not has:
        pytest.skip(f"{PY36} has no numpy+onnxruntime (e.g. a venv with numpy==1.19.5 onnxruntime==1.10.0; set EDGEKIT_PY36)")
    import importlib.util

    det = Path(importlib.util.find_spec("rapidocr_onnxruntime").origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    spec = {"model_path": str(det), "model_format": "onnx", "runtime": "onnxruntime", "threads": 1,
            "inputs": [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}], "warmup_runs": 1,
            "warmup_seconds": 0.0, "min_runs": 3, "min_seconds": 0.0, "idle_seconds": 0.0}
    p = subprocess.run([PY36, str(HARNESS), "-"], input=json.dumps(spec), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    from edgekit.core.results import BenchmarkResult

    r = BenchmarkResult.model_validate_json(p.stdout)
    assert r.device.python.startswith("3.6.") and r.timing.runs == 3


def test_a_relative_cache_dir_still_gives_a_runnable_harness(tmp_path, monkeypatch):
    """Runners start the harness from their own work dir: the zipapp path must not depend on the caller's cwd."""
    from edgekit.core.profiles import load_profile
    from edgekit.runners.local import LocalRunner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", "relative-cache")
    path = Path(harness_path())
    assert path.is_absolute() and path.is_relative_to(tmp_path / "relative-cache")
    with LocalRunner(load_profile("x86-cpu")) as runner:
        assert runner.probe()["harness_version"] >= 1


@needs36
def test_evaluation_mode_under_python36(tmp_path):
    """The held-out feeds in, the runtime's outputs out, under JetPack 4's Python 3.6 and numpy 1.19."""
    has = subprocess.run([PY36, "-c", "import numpy, onnxruntime"], capture_output=True, timeout=60).returncode == 0
    if not has:
        pytest.skip(f"{PY36} has no numpy+onnxruntime (e.g. a venv with numpy==1.19.5 onnxruntime==1.10.0; set EDGEKIT_PY36)")
    import numpy as np

    from edgekit.core.artifact import Artifact
    from edgekit.quality.fidelity import predict, read_eval_outputs, write_eval_feeds
    from edgekit.zoo import models as zoo

    rec = zoo.resolve("zoo:ppocr-rec")
    art = rec.artifact()
    feeds = rec.eval_feeds(3)
    inputs = write_eval_feeds(art, feeds, tmp_path)
    outputs = tmp_path / "out" / "o.npz"
    spec = {"model_path": str(art.path), "model_format": "onnx", "runtime": "onnxruntime", "threads": 1, "warmup_runs": 0,
            "warmup_seconds": 0.0, "min_runs": 1, "min_seconds": 0.0, "idle_seconds": 0.0,
            "inputs": [{"name": "x", "shape": [1, 3, 48, 320], "dtype": "float32"}],
            "eval_inputs_file": str(inputs), "eval_outputs_file": str(outputs)}
    p = subprocess.run([PY36, str(HARNESS), "-"], input=json.dumps(spec), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["evaluation"]["samples"] == 3 and doc["evaluation"]["outputs_file"] == str(outputs)
    got = read_eval_outputs(outputs, art, 3)
    ref = predict(art, feeds)
    assert all(np.allclose(g[0], r[0], atol=1e-4) for g, r in zip(got, ref))
    assert rec.task_metric(ref, got) == 1.0
    # the zoo's reduction (top-2 classes per timestep) under numpy 1.19: kilobytes, same decoded text
    small = tmp_path / "out" / "small.npz"
    p = subprocess.run([PY36, str(HARNESS), "-"], input=json.dumps({**spec, "eval_outputs_file": str(small), "eval_reduce": rec.device_reduction()}),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["evaluation"]["reduce"] == ["topk:2"] and small.stat().st_size * 100 < outputs.stat().st_size
    kept = read_eval_outputs(small, art, 3)
    assert all(np.array_equal(k[0].argmax(-1), r[0].argmax(-1)) for k, r in zip(kept, ref)) and rec.task_metric(ref, kept) == 1.0
