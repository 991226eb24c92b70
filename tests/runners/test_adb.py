"""AdbRunner against a real adbd (Debian trixie's, on 127.0.0.1:15555 via tests/boards/adbd-loopback).

That "device" is a real adbd whose shell sees this machine's filesystem, with no getprop/pm/am/dumpsys: the push
cache rules, exit codes, typed errors, the harness path (with this machine's Python as the device's) and the stop
of the demo-app path are all exercised for real."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.core.errors import ConnectionFailed
from edgekit.core.profiles import load_profile
from edgekit.core.runner_interface import HarnessSpec, InputSpec
from edgekit.runners.adb import AdbNotFound, AdbRunner, parse_devices, parse_df_available_kb
from edgekit.runners.harness_protocol import CommandKilled
from edgekit.runners.transport import DeviceCommandMissing, DeviceDiskFull, DeviceOffline, DeviceUnauthorized

REPO = Path(__file__).resolve().parents[2]
BOARD = REPO / "tests" / "boards" / "adbd-loopback"
FACE = REPO / "tests" / "fixtures" / "face_detection_front.tflite"


def _unavailable(why: str):
    if os.environ.get("EDGEKIT_REQUIRE_ADBD"):
        pytest.fail(f"EDGEKIT_REQUIRE_ADBD is set but {why}: .ci/run must provide it")
    pytest.skip(why)


@pytest.fixture(scope="module")
def serial():
    if shutil.which("adb") is None:
        _unavailable("no adb client (apt-get install adb)")
    if os.geteuid() != 0:
        _unavailable("the test adbd needs root (unshare -n)")
    up = subprocess.run([str(BOARD), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        _unavailable(f"tests/boards/adbd-loopback up failed: {up.stderr.strip()[-500:]}")
    yield up.stdout.strip().splitlines()[-1]
    subprocess.run([str(BOARD), "down"], capture_output=True, timeout=120)


@pytest.fixture
def profile():
    return load_profile("android-arm64")


@pytest.fixture
def runner(serial, profile, tmp_path):
    r = AdbRunner(profile, serial, workdir=str(tmp_path / "device-wd"))
    r.connect()
    yield r
    r.close()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_push_sends_once_then_nothing_and_repairs_a_changed_copy(runner, tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(os.urandom(1 << 20))
    (remote,) = runner.push_files([f])
    assert runner.bytes_uploaded == 1 << 20 and runner.uploads_skipped == 0
    assert f"/models/{_sha(f)}/blob.bin" in remote
    rc, out, _ = runner.exec(["sha256sum", remote])
    assert rc == 0 and out.split()[0] == _sha(f)
    assert not list(Path(remote).parent.glob(".*.part"))  # the upload went to a .part name and was renamed
    runner.push_files([f])
    assert runner.bytes_uploaded == 1 << 20 and runner.uploads_skipped == 1  # 0 bytes sent the second time
    runner.exec(["sh", "-c", f"printf x >> {remote}"])  # the device copy goes bad: sent again, verified
    runner.push_files([f])
    assert runner.bytes_uploaded == 2 << 20
    assert runner.exec(["sha256sum", remote])[1].split()[0] == _sha(f)


def test_exit_codes_and_streams_come_back(runner):
    rc, out, err = runner.exec(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (rc, out, err) == (7, "out\n", "err\n")
    rc, out, _ = runner.exec(["printf", "%s|", "a b", "it's"])  # arguments survive quoting
    assert (rc, out) == (0, "a b|it's|")


def test_a_killed_device_command_is_typed(serial, profile, tmp_path):
    # a "python" that is SIGKILLed, as the out-of-memory killer would do to the harness
    fake = tmp_path / "killed-python"
    fake.write_text("#!/bin/sh\nkill -9 $$\n")
    fake.chmod(0o755)
    r = AdbRunner(profile, serial, workdir=str(tmp_path / "wd"), python=str(fake), mode="harness")
    spec = HarnessSpec(model_path="/nonexistent.tflite", model_format="tflite", runtime="tflite")
    with pytest.raises(CommandKilled, match="killed") as ei:
        r.run_harness(spec)
    assert ei.value.remote_exit_code == 137


def test_a_full_device_disk_is_typed_and_leaves_nothing(serial, profile, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True).returncode != 0:
        _unavailable("cannot mount a small tmpfs for the disk-full case")
    try:
        r = AdbRunner(profile, serial, workdir=str(small / "wd"))
        f = tmp_path / "big.bin"
        f.write_bytes(os.urandom(1 << 20))
        with pytest.raises(DeviceDiskFull, match="disk is full") as ei:
            r.push_files([f])
        assert "df -h" in ei.value.hint
        assert not [p for p in (small / "wd").rglob("*") if p.is_file()]
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_a_device_that_is_not_there(serial, profile):
    r = AdbRunner(profile, "127.0.0.1:1")
    with pytest.raises(ConnectionFailed, match="127.0.0.1:1 is not attached"):
        r.connect()


def test_adb_failures_map_to_typed_errors(serial, profile):
    # adb 29's own messages (strings in Debian's /usr/bin/adb)
    r = AdbRunner(profile, serial)
    assert isinstance(r._device_error("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set", "x"), DeviceUnauthorized)
    assert isinstance(r._device_error("error: device offline", "x"), DeviceOffline)
    assert isinstance(r._device_error("error: device '127.0.0.1:9' not found", "x"), DeviceOffline)
    assert r._device_error("sh: 1: foo: not found", "x") is None  # the device command's own error is not adb's
    assert parse_devices("List of devices attached\n127.0.0.1:15555\tdevice\nR58M\tunauthorized\nemulator-5554\toffline\n\n") == {
        "127.0.0.1:15555": "device", "R58M": "unauthorized", "emulator-5554": "offline"}
    assert parse_df_available_kb("Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/block/dm-5 5000 1000 4000 20% /data\n") == 4000


def test_no_adb_client_says_how_to_install_it(profile, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ADB", raising=False)
    with pytest.raises(AdbNotFound, match="adb was not found on PATH") as ei:
        AdbRunner(profile, "x")
    assert "apt-get install adb" in ei.value.hint


def test_harness_path_runs_end_to_end(serial, profile, tmp_path):
    # the device's Python here is this interpreter (it has numpy and ai-edge-litert), reached through adbd
    from edgekit.core.artifact import load_artifact

    events = []  # the harness's progress lines, streamed back through adb while it runs (the CLI's live status line)
    r = AdbRunner(profile, serial, workdir=str(tmp_path / "wd"), python=sys.executable, on_progress=events.append)
    art = load_artifact(FACE)
    remote = r.push(art)
    spec = HarnessSpec(model_path=remote, model_format="tflite", runtime="tflite", sha256=art.sha256, threads=1,
                       inputs=[InputSpec(name="input", shape=[1, 128, 128, 3], dtype="float32")],
                       warmup_runs=1, warmup_seconds=0.0, min_runs=3, min_seconds=0.0, idle_seconds=0.0)
    res = r.run_harness(spec)
    assert (res.runner, res.host) == ("adb", serial)
    assert res.model.sha256 == art.sha256 and res.runtime.name == "tflite"
    assert res.timing.runs >= 3 and len(res.timing.samples_ms) == res.timing.runs
    assert not r.notes  # no fallback to the app happened
    assert [e["phase"] for e in events][0] == "load" and events[-1]["phase"] == "timed"
    assert events[-1]["state"] == "done" and events[-1]["runs"] == res.timing.runs


def test_app_path_stops_naming_the_missing_device_commands(serial, profile, tmp_path):
    r = AdbRunner(profile, serial, workdir=str(tmp_path / "wd"), python="/nonexistent/python3")
    spec = HarnessSpec(model_path="/x/model.tflite", model_format="tflite", runtime="tflite")
    with pytest.raises(DeviceCommandMissing) as ei:
        r.run_harness(spec)
    msg = str(ei.value)
    assert "no '/nonexistent/python3' on the device" in msg and "`pm` and `am` commands" in msg
    assert "Termux" in ei.value.hint


def test_battery_and_thermal_are_read_from_the_device(serial, profile, tmp_path):
    root = tmp_path / "sysroot"
    bat = root / "sys/class/power_supply/battery"
    bat.mkdir(parents=True)
    (bat / "current_now").write_text("-512000\n")  # uA, negative while discharging on this vendor
    (bat / "voltage_now").write_text("4352000\n")  # uV (the dumpsys fixture's 4352 mV)
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-0-0-usr\n")
    (zone / "temp").write_text("41500\n")
    r = AdbRunner(profile, serial, sysfs_root=str(root))
    r.connect()
    b = r.battery()
    assert b["available"] and b["power_w"] == pytest.approx(0.512 * 4.352)
    assert any("negative" in n for n in b["notes"])
    assert r.thermal() == {"cpu-0-0-usr": 41.5}
    r2 = AdbRunner(profile, serial, sysfs_root=str(tmp_path / "empty"))
    r2.connect()
    assert r2.battery()["available"] is False  # no battery files and no dumpsys on this device
    assert r2.thermal() == {}


def test_deploy_runs_push_and_probe_then_stops_at_the_app_path(serial, tmp_path, cli):
    wd = tmp_path / "deploy-wd"
    out = cli("deploy", str(FACE), "--profile", "android-arm64", "--serial", serial, "--remote-workdir", str(wd),
              "--remote-python", "/nonexistent/python3", "--min-runs", "1", "--min-seconds", "0", timeout=600)
    assert out.returncode != 0
    assert f"pushing face_detection_front.tflite to adb:{serial}" in out.stderr
    assert "`pm` and `am` commands" in out.stderr and "Traceback" not in out.stderr
    pushed = list(wd.glob("models/*/face_detection_front.tflite"))
    assert len(pushed) == 1 and _sha(pushed[0]) == _sha(FACE)


def test_doctor_reports_the_adb_device(serial, cli):
    out = cli("doctor", "--serial", serial, "--json", timeout=300)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["target"] == f"adb:{serial}"
    adb = rep["device"]["adb"]
    assert adb["commands"]["pm"] is False and adb["commands"]["sha256sum"] is True
    assert adb["python_version"] and rep["device"]["arch"] == os.uname().machine


def test_a_device_that_goes_offline_is_typed(serial, profile, tmp_path):
    # cut the link under a connected runner (the loopback forwarder of adbd-loopback): adb reports it offline
    r = AdbRunner(profile, serial, workdir=str(tmp_path / "wd"))
    r.connect()
    port = serial.rsplit(":", 1)[1]
    pid = int(Path(f"/tmp/edgekit-adbd-{port}/forward.pid").read_text())
    os.kill(pid, 15)
    try:
        with pytest.raises(DeviceOffline):
            r.exec(["true"])
        with pytest.raises(DeviceOffline, match="offline during connect"):
            AdbRunner(profile, serial).connect()
    finally:
        up = subprocess.run([str(BOARD), "up"], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
