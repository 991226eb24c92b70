"""`edgekit app build` gives a signed, verifiable APK with the model stored uncompressed, or names what is missing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from android_util import MODEL  # noqa: E402


def test_apksigner_verifies_v1_v2_v3(demo_apk, android_tools):
    out = subprocess.run([android_tools.apksigner, "verify", "--verbose", str(demo_apk)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for scheme in ("v1", "v2", "v3"):
        assert re.search(rf"Verified using {scheme} scheme.*: true", out.stdout), out.stdout


def test_badging_shows_package_and_sdk_levels(demo_apk, android_tools):
    out = subprocess.run([android_tools.aapt, "dump", "badging", str(demo_apk)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "package: name='dev.edgekit.demo'" in out.stdout
    assert "sdkVersion:'23'" in out.stdout and "targetSdkVersion:'34'" in out.stdout
    assert "launchable-activity: name='dev.edgekit.demo.MainActivity'" in out.stdout


def test_model_is_stored_uncompressed_and_byte_identical(demo_apk):
    with zipfile.ZipFile(demo_apk) as z:
        info = z.getinfo("assets/model.tflite")
        assert info.compress_type == zipfile.ZIP_STORED
        assert z.read("assets/model.tflite") == MODEL.read_bytes()
        spec = json.loads(z.read("assets/input_spec.json"))
        names = set(z.namelist())
    assert spec["inputs"] == [{"name": "input", "shape": [1, 128, 128, 3], "dtype": "float32", "file": "inputs/0.bin"}]
    assert [o["name"] for o in spec["outputs"]] == ["regressors", "classificators"]
    assert "assets/inputs/0.bin" in names and "classes.dex" in names
    assert "assets/web/litert/wasm/litert_wasm_internal.wasm" in names
    # the engine page's import of @litertjs/wasm-utils was rewritten to the vendored copy
    with zipfile.ZipFile(demo_apk) as z:
        assert '"./wasm-utils.js"' in z.read("assets/web/litert/index.js").decode()


def test_cli_builds_and_prints_the_apk(tmp_path, android_tools, litertjs_env, cli):
    out = cli("app", "build", "--model", str(MODEL), "--out", str(tmp_path / "x.apk"), "-q", timeout=600)
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and (tmp_path / "x.apk").stat().st_size > 1_000_000
    assert not list(tmp_path.glob(".*.part"))


def test_missing_tools_are_named_with_install_hints(monkeypatch, tmp_path):
    from edgekit.workflows import app

    monkeypatch.setattr(app, "sdk_roots", lambda: [tmp_path / "sdk"])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(app.AndroidToolsMissing) as ei:
        app.find_tools()
    msg = str(ei.value)
    for tool in ("aapt", "zipalign", "apksigner", "android.jar", "javac", "keytool", "dx"):
        assert tool in msg
    assert "android-sdk-build-tools" in msg and "ANDROID_HOME" in msg


def test_inputs_that_do_not_fit_the_model_are_refused(tmp_path):
    from edgekit.core.errors import ModelLoadError
    from edgekit.workflows.app import build_apk

    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ModelLoadError, match=r"'input' is float32\[1, 64, 64, 3\], the model wants float32\[1, 128, 128, 3\]"):
        build_apk(MODEL, tmp_path / "x.apk", inputs=bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=np.zeros((1, 128, 128, 3), np.float32))
    with pytest.raises(ModelLoadError, match="no array named 'input'"):
        build_apk(MODEL, tmp_path / "x.apk", inputs=wrong)
    assert not (tmp_path / "x.apk").exists()


def test_only_tflite_is_embedded(tmp_path, ppocr_det_path):
    from edgekit.core.errors import ModelLoadError
    from edgekit.workflows.app import build_apk

    with pytest.raises(ModelLoadError, match="embeds .tflite models"):
        build_apk(ppocr_det_path, tmp_path / "x.apk")


def test_assets_for_the_gradle_build(tmp_path, litertjs_env, cli):
    out = cli("app", "assets", "--model", str(MODEL), "--out", str(tmp_path / "assets"), "-q", timeout=600)
    assert out.returncode == 0, out.stderr
    a = tmp_path / "assets"
    assert (a / "model.tflite").read_bytes() == MODEL.read_bytes()
    assert json.loads((a / "input_spec.json").read_text())["inputs"][0]["name"] == "input"
    assert (a / "web" / "bench.js").is_file() and (a / "web" / "litert" / "wasm" / "litert_wasm_compat_internal.wasm").is_file()
