"""ARM code end to end on the emulated arm64 board: the harness under the board's Python, emulation detection,
`edgekit setup` + `edgekit deploy` for the Raspberry Pi 5 profile, replayed Pi/Jetson sensors, and doctor.

Energy figures are checked against values worked out by hand from the captures in tests/fixtures.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from edgekit.core.profiles import load_profile
from edgekit.core.runner_interface import HarnessSpec
from edgekit.runners.ssh import SSHRunner

pytestmark = [pytest.mark.arm64, pytest.mark.slow]

EMULATED = "emulated: not representative"
# Pi 5 `vcgencmd pmic_read_adc` capture (tests/fixtures/rpi5_vcgencmd_pmic_read_adc_load.txt), P = sum of A x V over
# the 12 rails that have both (EXT5V_V and BATT_V have no current):
#   3V7_WL_SW 0.09368929*3.699776 + 3V3_SYS 0.0878337*3.310033 + 1V8_SYS 0.1805471*1.805126 + DDR_VDD2 0.2254398*1.104761
#   + DDR_VDDQ 0.0666672*0.6014646 + 1V1_SYS 0.1756674*1.110255 + 0V8_SW 0.376709*0.8014644 + VDD_CORE 6.22421*0.861733
#   + 3V3_DAC 0.00006105*3.313183 + 3V3_ADC 0.0003663*3.306773 + 0V8_AON 0.0030525*0.8002922 + HDMI 0.0241758*5.08664
#   = 0.34663 + 0.29073 + 0.32591 + 0.24905 + 0.04010 + 0.19504 + 0.30192 + 5.36361 + 0.00020 + 0.00121 + 0.00244 + 0.12297
PI5_WATTS = 7.2398
# Orin Nano JetPack 6 tegrastats capture (tests/fixtures/tegrastats_orin_nano_jp6_lines.txt): VDD_IN now-values, mW
ORIN_VDD_IN_MW = (12479, 4824, 4761)


def _pi5():
    return load_profile("raspberry-pi-5")


def test_board_is_aarch64_and_the_harness_detects_emulation(board):
    with SSHRunner(board.alias, _pi5(), python="python3", **board.ssh_kwargs()) as r:
        rc, out, _ = r.exec(["uname", "-m"])
        assert rc == 0 and out.strip() == "aarch64"
        probe = r.probe()  # the harness zipapp, run by the board's aarch64 python3
    assert probe["arch"] == "aarch64"
    assert probe["emulated"] is True
    assert "aarch64" in probe["emulation"] and "x86" in probe["emulation"]
    assert probe["python_executable"] == "/usr/bin/python3"


def test_doctor_under_jetson_orin_nano_says_what_is_missing(board, cli):
    p = cli("doctor", *board.ssh_args(), "--remote-python", "python3", "--profile", "jetson-orin-nano", "--json", timeout=600)
    assert p.returncode == 0, p.stderr
    miss = json.loads(p.stdout)["profile_mismatches"]
    text = "\n".join(miss)
    assert "profile runtime 'tensorrt' is not usable" in text
    assert re.search(r"accelerator 'NVIDIA Ampere GPU.*' needs CUDA: no CUDA", text)
    assert re.search(r"energy source 'tegrastats' is not readable: .*tegrastats", text)
    assert not any("aarch64" in m and "x86" in m for m in miss if not m.startswith("emulated"))  # the arch matches the profile
    # /proc/cpuinfo under qemu is the x86 host's: doctor says so instead of comparing its cores/features with the Orin's
    emul = [m for m in miss if m.startswith("emulated")]
    assert len(emul) == 1 and "emulator host's" in emul[0] and "not checked against the profile" in emul[0]
    assert not any(m.startswith("host has") or "host CPU" in m for m in miss)
    # with the tegrastats stand-in installed, that line goes away and nothing else changes
    with board.sensors("jetson-orin"):
        p2 = cli("doctor", *board.ssh_args(), "--remote-python", "python3", "--profile", "jetson-orin-nano", "--json", timeout=600)
    miss2 = json.loads(p2.stdout)["profile_mismatches"]
    assert [m for m in miss if "energy source" not in m] == miss2


def _small_spec(remote_model, **over):
    spec = dict(model_path=remote_model, model_format="onnx", runtime="onnxruntime", sha256=None, precision="fp32",
                threads=1, inputs=[{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}], warmup_runs=1,
                warmup_seconds=0.0, min_runs=3, min_seconds=2.0, max_seconds=120.0, idle_seconds=3.0, energy_interval_ms=100)
    # idle 3 s: the sensor stand-in is a Python process started under qemu, which takes a while to print its first line
    spec.update(over)
    return HarnessSpec(**spec)


def test_jetson_tegrastats_and_ina3221_replayed_over_ssh(board, ppocr_det_path):
    orin = load_profile("jetson-orin-nano")
    with board.sensors("jetson-orin"), SSHRunner(board.alias, orin, python="/opt/edgekit-sys/bin/python", **board.ssh_kwargs()) as r:
        remote = r.push_files([ppocr_det_path])[0]
        res = r.run_harness(_small_spec(remote, energy_source="tegrastats", energy_rails=["VDD_IN"]))
        e = res.energy
        assert e.available and e.rails == ["VDD_IN"]
        lo, hi = min(ORIN_VDD_IN_MW) / 1000, max(ORIN_VDD_IN_MW) / 1000
        assert lo <= e.idle_power_w <= hi and lo <= e.avg_power_w <= hi  # averages of the replayed VDD_IN values only
        assert e.energy_per_inference_mj == pytest.approx(e.avg_power_w * res.timing.duration_s / res.timing.runs * 1000)
        assert res.device.arch == "aarch64" and res.device.emulated and res.timing.note == EMULATED
        # INA3221, JetPack 4 iio layout, laid out on the board (POM_5V_IN 1750 mW is the total input rail)
        root = "/opt/edgekit-fixtures/ina3221-jp4"
        dev = board.on_board(root + "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0")
        dev.mkdir(parents=True, exist_ok=True)
        for k, (name, mw) in enumerate([("POM_5V_IN", 1750), ("POM_5V_GPU", 0), ("POM_5V_CPU", 366)]):
            (dev / f"rail_name_{k}").write_text(name + "\n")
            (dev / f"in_power{k}_input").write_text(f"{mw}\n")
        res2 = r.run_harness(_small_spec(remote, energy_source="ina3221", energy_options={"sysfs_root": root}))
    e2 = res2.energy
    assert e2.available and e2.avg_power_w == pytest.approx(1.75) and e2.idle_power_w == pytest.approx(1.75)
    assert e2.energy_per_inference_mj == pytest.approx(1.75 * res2.timing.duration_s / res2.timing.runs * 1000)


def test_setup_then_deploy_ppocr_det_on_raspberry_pi_5(board, cli, tmp_path):
    """The issue's done-when path: setup (offline wheelhouse) then deploy; report shows aarch64, emulated, PMIC energy."""
    wd = board.workdir
    s = cli("setup", *board.ssh_args(wd), "--profile", "raspberry-pi-5", "--wheelhouse", str(tmp_path / "wheels"), "--json",
            timeout=1800)
    assert s.returncode == 0, s.stderr
    res = json.loads(s.stdout)
    assert res["machine"] == "aarch64" and res["installed"]["onnxruntime"] == "1.23.2"
    assert res["installed"]["ai-edge-litert"] == "2.1.0" and res["installed"]["numpy"] == "1.26.4"
    # deploy without --runtime takes the first of the profile's runtimes that the board has: after setup, tflite
    from edgekit.core.errors import PlanError
    from edgekit.workflows.deploy import runtime_on_device

    rt, note = runtime_on_device(_pi5(), board.alias, board.ssh_kwargs(wd), lambda m: None)
    assert rt == "tflite" and "venv/bin/python" in note and "aarch64" in note
    with pytest.raises(PlanError, match=r"(?s)none of the runtimes of profile 'raspberry-pi-5'.*edgekit setup"):
        runtime_on_device(_pi5(), board.alias, dict(board.ssh_kwargs(wd), python="/usr/bin/python3"), lambda m: None)
    out = tmp_path / "out"
    with board.sensors("pi5"):
        d = cli("deploy", "zoo:ppocr-det", "--profile", "raspberry-pi-5", *board.ssh_args(wd), "--runtime", "onnxruntime",
                "--shape", "x=1x3x320x320", "--out", str(out), "--warmup-runs", "1", "--warmup-seconds", "0",
                "--min-runs", "3", "--min-seconds", "6", "--fidelity-samples", "2", timeout=2400)
    assert d.returncode == 0, d.stderr
    assert EMULATED in d.stdout  # the terminal marks the timings
    rep = json.loads((out / "report.json").read_text())
    b = rep["benchmark"]
    assert b["device"]["arch"] == "aarch64" and b["device"]["emulated"] is True
    assert b["timing"]["note"] == EMULATED
    assert b["runtime"]["name"] == "onnxruntime" and b["runtime"]["version"] == "1.23.2"  # the setup venv's
    e = b["energy"]
    assert e["available"] and e["source"] == "vcgencmd_pmic"
    assert e["avg_power_w"] == pytest.approx(PI5_WATTS, abs=5e-4) and e["idle_power_w"] == pytest.approx(PI5_WATTS, abs=5e-4)
    assert e["energy_per_inference_mj"] == pytest.approx(PI5_WATTS * b["timing"]["duration_s"] / b["timing"]["runs"] * 1000, rel=1e-3)
    assert b["thermal"]["throttled"] is False and b["thermal"]["before"]["throttled_raw"] == "throttled=0x0"
    md = (out / "report.md").read_text()
    assert f"— {EMULATED}" in md and md.count(f"({EMULATED})") >= 6
    # fidelity measured ON the board (its aarch64 onnxruntime ran the 2 held-out pages) next to the host's score
    assert b["evaluation"]["samples"] == 2
    dev = rep["fidelity_device"]
    assert dev["where"] == "device" and dev["device"].startswith("aarch64 (emulated)") and "onnxruntime 1.23.2" in dev["device"]
    assert dev["samples"] == 2 and dev["task_metric"] == "text-mask IoU" and 0.0 <= dev["task_score"] <= 1.0
    host, device = rep["fidelity_check"]["rows"]
    assert host["where"] == "host" and host["measured"] and host["samples"] == 2 and host["device"] is None
    assert device["measured"] and device["score"] == pytest.approx(dev["task_score"], abs=1e-6)
    assert rep["fidelity_check"]["decided_by"] == "host" and device["interval"]["lo"] <= device["score"] <= device["interval"]["hi"]
    assert "Fidelity on the held-out set: host and device" in md and "device aarch64 (emulated)" in md


def test_pi5_pmic_sampled_by_a_sampler_process_and_progress_streams_over_ssh(board, ppocr_det_path):
    # issue 15 §6: vcgencmd is spawned by a separate sampler process on the board (not by the timed process), and the
    # harness's progress lines reach the host's on_progress while the remote benchmark runs
    events = []
    pi5 = _pi5()
    with board.sensors("pi5"), SSHRunner(board.alias, pi5, python="/opt/edgekit-sys/bin/python", on_progress=events.append,
                                         **board.ssh_kwargs()) as r:
        remote = r.push_files([ppocr_det_path])[0]
        res = r.run_harness(_small_spec(remote, energy_source="vcgencmd_pmic", idle_seconds=1.0))
    e = res.energy
    assert e.available and e.source == "vcgencmd_pmic"
    assert e.avg_power_w == pytest.approx(PI5_WATTS, abs=5e-4) and e.idle_power_w == pytest.approx(PI5_WATTS, abs=5e-4)
    assert any("separate process" in w for w in res.warnings)
    phases = [ev["phase"] for ev in events]
    assert phases[0] == "load" and "warmup" in phases and "idle" in phases
    assert events[-1]["phase"] == "timed" and events[-1]["state"] == "done" and events[-1]["runs"] == res.timing.runs
