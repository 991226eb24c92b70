"""Shared fixtures: real model paths, an isolated cache, and a helper to run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_history(tmp_path_factory):
    """Runs recorded by tests go to a throw-away history, never the user's (tests wanting their own pass --history)."""
    path = tmp_path_factory.mktemp("edgekit-history") / "history.sqlite"
    old = os.environ.get("EDGEKIT_HISTORY")
    os.environ["EDGEKIT_HISTORY"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EDGEKIT_HISTORY", None)
    else:
        os.environ["EDGEKIT_HISTORY"] = old


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep tests out of the user's real cache; every test session starts cold."""
    cache = tmp_path_factory.mktemp("edgekit-cache")
    old = os.environ.get("EDGEKIT_CACHE_DIR")
    os.environ["EDGEKIT_CACHE_DIR"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield cache
    if old is None:
        os.environ.pop("EDGEKIT_CACHE_DIR", None)
    else:
        os.environ["EDGEKIT_CACHE_DIR"] = old


def _models_dir() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models"


@pytest.fixture(scope="session")
def ppocr_det_path() -> Path:
    return _models_dir() / "ch_PP-OCRv4_det_infer.onnx"


@pytest.fixture(scope="session")
def ppocr_rec_path() -> Path:
    return _models_dir() / "ch_PP-OCRv4_rec_infer.onnx"


def run_cli(*args: str, env=None, timeout: float = 600, cwd=None) -> subprocess.CompletedProcess:
    """Run `edgekit ARGS` in a subprocess exactly as a user would, capturing output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.pop("EDGEKIT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "edgekit.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def small_tmpfs(tmp_path):
    """mount(size) -> a real, small file system (tmpfs) that fills up; skipped with the reason without mount rights."""
    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs-{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture(autouse=True)
def _no_tool_env_downloads(request, monkeypatch):
    """The onnx2tf tool env is ~2.6 GB from PyPI: only tests marked onnx2tf (opt-in, EDGEKIT_TEST_ONNX2TF=1) may
    create it. Any other test that reaches the creation fails here instead of downloading into the user's cache."""
    if request.node.get_closest_marker("onnx2tf") and os.environ.get("EDGEKIT_TEST_ONNX2TF") == "1":
        return
    try:
        from edgekit.converters import onnx2tf_env
    except ImportError:
        return

    def refuse(*args, **kwargs):
        pytest.fail(f"{request.node.nodeid} would create the onnx2tf tool env (~2.6 GB): mark it onnx2tf and opt-in")

    monkeypatch.setattr(onnx2tf_env, "_create", refuse)


@pytest.fixture
def lock_from_another_thread():
    """attempt(board, timeout_s) -> the BoardBusy errors another thread of this process got trying to take `board`
    (empty: it got the board)."""
    import threading

    from edgekit.fleet.lock import BoardBusy, BoardLock

    def attempt(board: str, timeout_s: float) -> list:
        errors = []

        def other():
            try:
                BoardLock(board, timeout_s=timeout_s).acquire()
            except BoardBusy as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        return errors

    return attempt
