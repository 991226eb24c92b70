"""The demo APK built once per session by `edgekit app build` on a real model (BlazeFace, tests/fixtures)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from android_util import MODEL, require_or_skip  # noqa: E402


@pytest.fixture(scope="session")
def android_tools():
    from edgekit.workflows.app import AndroidToolsMissing, find_tools

    try:
        return find_tools()
    except AndroidToolsMissing as exc:
        require_or_skip(False, str(exc))


@pytest.fixture(scope="session")
def litertjs_env():
    """Reuse an @litertjs/core already installed on this machine, else the build installs it into the test cache."""
    from edgekit.workflows.app import LITERTJS_VERSION

    if not os.environ.get("EDGEKIT_LITERTJS_DIR"):
        for base in (Path.home() / ".cache" / "edgekit",):
            core = base / "litertjs" / LITERTJS_VERSION / "node_modules" / "@litertjs" / "core"
            if (core / "dist" / "index.js").is_file():
                os.environ["EDGEKIT_LITERTJS_DIR"] = str(core)
    if not os.environ.get("EDGEKIT_LITERTJS_DIR"):
        require_or_skip(shutil.which("npm") is not None, "npm is not installed (apt-get install npm) to fetch @litertjs/core")


@pytest.fixture(scope="session")
def face_inputs(tmp_path_factory) -> Path:
    """Fixed inputs (a .npz keyed by the model's input name), so the app and desktop LiteRT see the same data."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("inputs") / "face.npz"
    np.savez(path, input=rng.uniform(-1.0, 1.0, size=(1, 128, 128, 3)).astype(np.float32))
    return path


@pytest.fixture(scope="session")
def demo_apk(tmp_path_factory, android_tools, litertjs_env, face_inputs) -> Path:
    from edgekit.workflows.app import build_apk

    out = tmp_path_factory.mktemp("apk") / "demo.apk"
    return build_apk(MODEL, out, inputs=face_inputs)
