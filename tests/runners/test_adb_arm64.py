"""The adb harness path end to end on aarch64: Debian 13's arm64 adbd run inside the emulated arm64 board
(tests/boards/arm64-board; adbd-loopback with EDGEKIT_ADBD_ROOTFS), the board's Python running the harness.
Correctness only: under qemu-user the timings mean nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit.core.profiles import load_profile
from edgekit.core.runner_interface import HarnessSpec, InputSpec

REPO = Path(__file__).resolve().parents[2]
BOARD_ADBD = REPO / "tests" / "boards" / "adbd-loopback"
STATE = Path(os.environ.get("EDGEKIT_BOARDS_CACHE", str(Path.home() / ".cache/edgekit-boards"))) / "arm64-state"
FACE = REPO / "tests" / "fixtures" / "face_detection_front.tflite"
BOARD_PYTHON = "/opt/edgekit-sys/bin/python"  # the board's venv with numpy and ai-edge-litert (arm64-board)


def _board_rootfs() -> Path:
    if os.environ.get("EDGEKIT_ARM64_UNAVAILABLE"):
        pytest.skip(f"arm64 board unavailable: {os.environ['EDGEKIT_ARM64_UNAVAILABLE']}")
    env = {}
    if (STATE / "board.env").is_file():
        for line in (STATE / "board.env").read_text().splitlines():
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    root = Path(env.get("ROOTFS", ""))
    if not env.get("ROOTFS") or not (root / "bin" / "sh").exists():
        if os.environ.get("EDGEKIT_REQUIRE_ARM64"):
            pytest.fail(f"EDGEKIT_REQUIRE_ARM64 is set but the arm64 board is not up ({STATE / 'board.env'})")
        pytest.skip("the emulated arm64 board is not up (tests/boards/arm64-board up)")
    return root


@pytest.fixture(scope="module")
def arm64_serial():
    root = _board_rootfs()
    if shutil.which("adb") is None or os.geteuid() != 0:
        pytest.skip("needs the adb client and root")
    env = dict(os.environ, EDGEKIT_ADBD_ROOTFS=str(root))
    up = subprocess.run([str(BOARD_ADBD), "up"], capture_output=True, text=True, timeout=900, env=env)
    assert up.returncode == 0, up.stderr[-1000:]
    yield up.stdout.strip().splitlines()[-1]
    subprocess.run([str(BOARD_ADBD), "down"], capture_output=True, timeout=120, env=env)


def test_harness_runs_on_the_arm64_board_over_adb(arm64_serial, tmp_path):
    from edgekit.core.artifact import load_artifact
    from edgekit.runners.adb import AdbRunner

    r = AdbRunner(load_profile("android-arm64"), arm64_serial, workdir="/tmp/edgekit-adb-test", python=BOARD_PYTHON)
    assert r.probe()["arch"] == "aarch64"
    ok, why = r.harness_usable("tflite")
    assert ok, why
    art = load_artifact(FACE)
    remote = r.push(art)
    spec = HarnessSpec(model_path=remote, model_format="tflite", runtime="tflite", sha256=art.sha256, threads=1,
                       inputs=[InputSpec(name="input", shape=[1, 128, 128, 3], dtype="float32")],
                       warmup_runs=1, warmup_seconds=0.0, min_runs=2, min_seconds=0.0, idle_seconds=0.0)
    try:
        res = r.run_harness(spec)
    finally:
        r.exec(["rm", "-rf", "/tmp/edgekit-adb-test"])  # leave the board as it was
    assert (res.runner, res.host) == ("adb", arm64_serial)
    assert res.device.arch == "aarch64" and res.runtime.name == "tflite"
    assert res.timing.runs >= 2 and res.model.sha256 == art.sha256
