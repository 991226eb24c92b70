"""Energy parsers and samplers of the harness, on real captured sensor output (tests/fixtures, see SOURCES.md).

Sensors that cannot exist here (Jetson, Raspberry Pi, Android) are replaced by fakes that replay the real
captures: a `tegrastats`/`vcgencmd` script on PATH printing fixture lines, or a sysfs tree in a temp dir
laid out as documented. Expected numbers are computed by hand from the fixture text.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.core.registry import harness_path
from edgekit.runners.harness import energy
from edgekit.runners.harness.energy import android_battery, ina3221, rapl, tegrastats, vcgencmd_pmic
from fake_sensors import TEGRASTATS_REPLAY
from fake_sensors import fake_tool as _fake_tool

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def lines(name):
    return [ln for ln in (FIX / name).read_text().splitlines() if ln.strip()]


# ---------------------------------------------------------------- tegrastats


def test_tegrastats_nano_uses_total_input_rail_not_the_sum():
    got = [energy.select_power_mw(tegrastats.parse_tegrastats_line(ln)) for ln in lines("tegrastats_nano_jp4_lines.txt")]
    # POM_5V_IN x/y: x is the current value in mW; GPU and CPU rails are part of it, never added.
    assert got == [(1750.0, ["POM_5V_IN"]), (1022.0, ["POM_5V_IN"]), (1997.0, ["POM_5V_IN"]), (1388.0, ["POM_5V_IN"])]


def test_tegrastats_nano_rails_are_only_power_rails():
    rails = tegrastats.parse_tegrastats_line(lines("tegrastats_nano_jp4_lines.txt")[0])
    # RAM 1923/3964MB, SWAP 191/1982MB and IRAM 0/252kB look like x/y but are not rails.
    assert rails == {"POM_5V_IN": 1750.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 366.0}


def test_tegrastats_orin_nano_jp6_vdd_in_with_mw_units_and_date_prefix():
    got = [energy.select_power_mw(tegrastats.parse_tegrastats_line(ln)) for ln in lines("tegrastats_orin_nano_jp6_lines.txt")]
    assert got == [(12479.0, ["VDD_IN"]), (4824.0, ["VDD_IN"]), (4761.0, ["VDD_IN"])]
    rails = tegrastats.parse_tegrastats_line(lines("tegrastats_orin_nano_jp6_lines.txt")[0])
    assert rails == {"VDD_IN": 12479.0, "VDD_CPU_GPU_CV": 4667.0, "VDD_SOC": 2817.0}


def test_tegrastats_requested_rails_are_summed_and_missing_ones_reported():
    rails = tegrastats.parse_tegrastats_line(lines("tegrastats_orin_nano_jp6_lines.txt")[0])
    assert energy.select_power_mw(rails, ["VDD_CPU_GPU_CV", "VDD_SOC"]) == (4667.0 + 2817.0, ["VDD_CPU_GPU_CV", "VDD_SOC"])
    assert energy.select_power_mw(rails, ["VDD_GPU"]) == (None, ["VDD_GPU"])


def test_tegrastats_tx2_and_xavier_lines():
    tx2_a, tx2_b, xavier = [tegrastats.parse_tegrastats_line(ln) for ln in lines("tegrastats_tx2_xavier_lines.txt")]
    assert energy.select_power_mw(tx2_a) == (1931.0, ["VDD_IN"])
    assert energy.select_power_mw(tx2_b) == (3140.0, ["VDD_IN"])
    # AGX Xavier prints no input rail: all rails are summed.
    assert xavier == {"GPU": 463.0, "CPU": 618.0, "SOC": 2936.0, "CV": 0.0, "VDDRQ": 309.0, "SYS5V": 3306.0}
    assert energy.select_power_mw(xavier)[0] == 463 + 618 + 2936 + 0 + 309 + 3306


def test_tegrastats_jetpack7_three_values_per_rail_takes_the_first():
    rails = tegrastats.parse_tegrastats_line(lines("tegrastats_agx_orin_jp7_line.txt")[0])
    assert rails == {"VDD_GPU_SOC": 5139.0, "VDD_CPU_CV": 3268.0, "VIN_SYS_5V0": 5500.0}
    assert energy.select_power_mw(rails)[0] == 5139 + 3268 + 5500


def test_tegrastats_nc_rail_is_skipped():
    # Derived from the JP7 capture: an unconnected channel printed as `NC` must not count.
    line = lines("tegrastats_agx_orin_jp7_line.txt")[0] + " NC 120mW/120mW/120mW"
    assert "NC" not in tegrastats.parse_tegrastats_line(line)


def test_tegrastats_line_without_rails():
    # A non-root tegrastats on some images: the same line with the power section cut off.
    line = lines("tegrastats_nano_jp4_lines.txt")[0].split(" POM_5V_IN")[0]
    assert tegrastats.parse_tegrastats_line(line) == {}
    assert energy.select_power_mw({}) == (None, [])


# ---------------------------------------------------------------- Raspberry Pi 5 PMIC

# Pairs copied by hand from the fixture: current(i) and volt(j) indices do not line up, names do.
PI5_PAIRS = {
    "3V7_WL_SW": (0.09368929, 3.69977600), "3V3_SYS": (0.08783370, 3.31003300), "1V8_SYS": (0.18054710, 1.80512600),
    "DDR_VDD2": (0.22543980, 1.10476100), "DDR_VDDQ": (0.06666720, 0.60146460), "1V1_SYS": (0.17566740, 1.11025500),
    "0V8_SW": (0.37670900, 0.80146440), "VDD_CORE": (6.22421000, 0.86173300), "3V3_DAC": (0.00006105, 3.31318300),
    "3V3_ADC": (0.00036630, 3.30677300), "0V8_AON": (0.00305250, 0.80029220), "HDMI": (0.02417580, 5.08664000),
}


def test_vcgencmd_pmic_pairs_by_name_and_skips_voltage_only_rails():
    rails = vcgencmd_pmic.parse_vcgencmd_pmic((FIX / "rpi5_vcgencmd_pmic_read_adc_load.txt").read_text())
    assert set(rails) == set(PI5_PAIRS)  # EXT5V_V and BATT_V have no current: not rails
    for name, (a, v) in PI5_PAIRS.items():
        assert rails[name] == pytest.approx(a * v, rel=1e-12)
    assert sum(rails.values()) == pytest.approx(7.2398, abs=5e-4)  # by hand: VDD_CORE 5.3636 W + 11 small rails 1.8762 W


def test_vcgencmd_pmic_tolerates_nan():
    text = (FIX / "rpi5_vcgencmd_pmic_read_adc_load.txt").read_text().replace("0.02417580A", "nanA")
    rails = vcgencmd_pmic.parse_vcgencmd_pmic(text)
    assert "HDMI" not in rails and "VDD_CORE" in rails


# ---------------------------------------------------------------- Android battery


def test_dumpsys_battery_fields():
    d = android_battery.parse_dumpsys_battery((FIX / "android_dumpsys_battery.txt").read_text())
    assert d["USB powered"] == "true" and d["voltage"] == "4352" and d["status"] == "5"


def test_android_power_units_and_sign():
    volts_uv = 4352 * 1000  # the fixture's `voltage: 4352` (mV) as voltage_now reports it (uV)
    w, notes = android_battery.android_battery_power(-350000, volts_uv)  # uA, negative on some vendors
    assert w == pytest.approx(0.350 * 4.352)
    assert any("negative" in n for n in notes)
    w2, notes2 = android_battery.android_battery_power(350, volts_uv)  # some kernels report mA
    assert w2 == pytest.approx(0.350 * 4.352) and any("mA" in n for n in notes2)


# ---------------------------------------------------------------- RAPL and the energy arithmetic


def test_rapl_counter_wrap():
    assert rapl.rapl_delta_uj(1_000, 5_000, 262_143_328_850) == 4_000
    assert rapl.rapl_delta_uj(262_143_328_850 - 1_000, 500, 262_143_328_850) == 1_500


def test_summarize_energy_hand_computed():
    # idle 1.0 W, timed samples 2 W and 3 W over a 2 s window with 100 runs:
    # avg 2.5 W -> 2.5 W * 2 s / 100 = 50 mJ per inference; above idle (2.5 - 1.0) * 2 / 100 = 30 mJ.
    e = energy.summarize_energy([1.0, 1.0], [2.0, 3.0], 2.0, 100, "tegrastats", ["VDD_IN"])
    assert e["available"] and e["avg_power_w"] == 2.5 and e["idle_power_w"] == 1.0
    assert e["energy_per_inference_mj"] == pytest.approx(50.0)
    assert e["energy_above_idle_per_inference_mj"] == pytest.approx(30.0)
    assert e["samples"] == 2 and e["idle_samples"] == 2 and e["sample_rate_hz"] == 1.0


def test_summarize_energy_counter_based():
    # RAPL: 10 J over a 4 s window with 200 runs = 2.5 W, 50 mJ/inference; idle 3 J over 2 s = 1.5 W.
    e = energy.summarize_energy([], [], 4.0, 200, "rapl", ["package-0"], idle_energy_j=3.0, timed_energy_j=10.0, idle_s=2.0)
    assert e["avg_power_w"] == 2.5 and e["idle_power_w"] == 1.5
    assert e["energy_per_inference_mj"] == pytest.approx(50.0)
    assert e["energy_above_idle_per_inference_mj"] == pytest.approx(20.0)


def test_summarize_energy_no_sample_in_window_is_unavailable_not_zero():
    e = energy.summarize_energy([1.0], [], 0.05, 3, "tegrastats", ["VDD_IN"])
    assert e["available"] is False and "no power sample" in e["reason"]
    assert "energy_per_inference_mj" not in e


# ---------------------------------------------------------------- sysfs sources on documented layouts


def _write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_ina3221_jetpack4_iio_layout(tmp_path):
    # Values from the Nano capture's first line: POM_5V_IN 1750, POM_5V_GPU 0, POM_5V_CPU 366 (mW).
    dev = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for k, (name, mw) in enumerate([("POM_5V_IN", 1750), ("POM_5V_GPU", 0), ("POM_5V_CPU", 366)]):
        _write(dev / f"rail_name_{k}", name)
        _write(dev / f"in_power{k}_input", str(mw))
    src = ina3221.Ina3221Source([], {"sysfs_root": str(tmp_path)})
    assert src.read() == (1.75, ["POM_5V_IN"])
    assert ina3221.Ina3221Source(["POM_5V_CPU", "POM_5V_GPU"], {"sysfs_root": str(tmp_path)}).read() == (0.366, ["POM_5V_CPU", "POM_5V_GPU"])


def test_ina3221_jetpack5_hwmon_layout_skips_channel7(tmp_path):
    dev = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"  # hwmonN differs per boot
    chans = {1: ("VDD_IN", 5000, 2496), 2: ("VDD_CPU_GPU_CV", 5000, 933), 3: ("VDD_SOC", 5000, 563)}
    for k, (label, mv, ma) in chans.items():
        _write(dev / f"in{k}_label", label)
        _write(dev / f"in{k}_input", str(mv))
        _write(dev / f"curr{k}_input", str(ma))
    _write(dev / "in7_label", "sum of shunt voltages")
    _write(dev / "in7_input", "40")
    _write(dev / "curr7_input", "4000")
    src = ina3221.Ina3221Source([], {"sysfs_root": str(tmp_path)})
    assert src.read_rails() == {"VDD_IN": 12480.0, "VDD_CPU_GPU_CV": 4665.0, "VDD_SOC": 2815.0}
    assert src.read() == (12.48, ["VDD_IN"])


def test_ina3221_absent_gives_reason(tmp_path):
    with pytest.raises(energy.EnergyUnavailable, match="no INA3221 rails"):
        ina3221.Ina3221Source([], {"sysfs_root": str(tmp_path)})


def test_android_battery_sysfs(tmp_path):
    base = tmp_path / "sys/class/power_supply/battery"
    _write(base / "current_now", "-350000")
    _write(base / "voltage_now", "4352000")
    _write(base / "status", "Charging")
    src = android_battery.AndroidBatterySource({"sysfs_root": str(tmp_path)})
    w, rails = src.read()
    assert w == pytest.approx(1.5232) and rails == ["battery"]
    assert any("Charging" in n for n in src.notes)


def test_rapl_source_on_powercap_layout(tmp_path):
    z = tmp_path / "sys/class/powercap/intel-rapl:0"
    _write(z / "name", "package-0")
    _write(z / "energy_uj", "1000000")
    _write(z / "max_energy_range_uj", "262143328850")
    _write(tmp_path / "sys/class/powercap/intel-rapl:0:0/energy_uj", "5")  # subzone: not a package
    src = rapl.RaplSource([], {"sysfs_root": str(tmp_path)})
    c0 = src.counters()
    _write(z / "energy_uj", "3500000")
    assert src.energy_j(c0, src.counters()) == pytest.approx(2.5)
    assert [n for n, _p, _m in src.zones] == ["package-0"]


def test_rapl_unavailable_on_this_machine_says_why():
    if os.path.isdir("/sys/class/powercap"):
        pytest.skip("this machine has powercap")
    with pytest.raises(energy.EnergyUnavailable, match=r"/sys/class/powercap absent: kernel without powercap \(RAPL\)"):
        energy.open_energy_source("rapl", 100, [], {})


# ---------------------------------------------------------------- whole sampler through the harness, fake sensors


def _det_model() -> str:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    return str(Path(spec.origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx")


def _run_harness(spec: dict, tmp_path: Path, path_prefix: Path):
    sp = tmp_path / "spec.json"
    sp.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    proc = subprocess.run([sys.executable, str(harness_path()), str(sp)], capture_output=True, text=True, env=env,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _spec(**over):
    spec = {"model_path": _det_model(), "model_format": "onnx", "runtime": "onnxruntime", "threads": 1,
            "inputs": [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}],
            "warmup_runs": 1, "warmup_seconds": 0.0, "min_runs": 3, "min_seconds": 1.0, "idle_seconds": 0.6,
            "energy_interval_ms": 50}
    spec.update(over)
    return spec


TEGRASTATS_FAKE = TEGRASTATS_REPLAY


def test_tegrastats_sampler_end_to_end_jp7(tmp_path):
    _fake_tool(tmp_path / "bin", "tegrastats", TEGRASTATS_FAKE.format(fixture=str(FIX / "tegrastats_agx_orin_jp7_line.txt")))
    r = _run_harness(_spec(energy_source="tegrastats"), tmp_path, tmp_path / "bin")
    e, t = r["energy"], r["timing"]
    assert e["available"] is True, e
    watts = (5139 + 3268 + 5500) / 1000.0  # constant capture -> every sample is this
    assert e["avg_power_w"] == pytest.approx(watts) and e["idle_power_w"] == pytest.approx(watts)
    assert e["window_s"] == pytest.approx(t["duration_s"])
    assert e["energy_per_inference_mj"] == pytest.approx(watts * t["duration_s"] / t["runs"] * 1000)
    assert e["energy_above_idle_per_inference_mj"] == pytest.approx(0.0, abs=1e-9)
    assert e["samples"] >= 5 and e["idle_samples"] >= 3  # 50 ms interval over >= 1 s / 0.6 s
    assert set(e["rails"]) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"}
    # the power trace behind report.html's chart: idle samples before 0, timed ones up to the window's end
    lo, hi = e["idle_window"]
    assert lo < hi <= 0 and hi - lo == pytest.approx(0.6, abs=0.05)
    ts = [p[0] for p in e["trace"]]
    assert ts == sorted(ts) and ts[0] >= lo and ts[-1] <= t["duration_s"] + 1e-3
    assert {p[1] for p in e["trace"]} == {round(watts, 4)}
    assert sum(1 for x in ts if x >= 0) >= e["samples"]
    from edgekit.core.results import BenchmarkResult

    BenchmarkResult.model_validate(r)


def test_tegrastats_sampler_nano_lines_average_within_capture(tmp_path):
    _fake_tool(tmp_path / "bin", "tegrastats", TEGRASTATS_FAKE.format(fixture=str(FIX / "tegrastats_nano_jp4_lines.txt")))
    r = _run_harness(_spec(energy_source="tegrastats"), tmp_path, tmp_path / "bin")
    e = r["energy"]
    assert e["available"] and e["rails"] == ["POM_5V_IN"]
    assert 1.022 <= e["avg_power_w"] <= 1.997  # average of the captured POM_5V_IN values only (never the rail sum)


def test_tegrastats_without_rails_is_unavailable_with_reason(tmp_path):
    norails = tmp_path / "norails.txt"
    norails.write_text(lines("tegrastats_nano_jp4_lines.txt")[0].split(" POM_5V_IN")[0] + "\n")
    _fake_tool(tmp_path / "bin", "tegrastats", TEGRASTATS_FAKE.format(fixture=str(norails)))
    r = _run_harness(_spec(energy_source="tegrastats"), tmp_path, tmp_path / "bin")
    assert r["energy"]["available"] is False
    assert "no power rails" in r["energy"]["reason"] and "root" in r["energy"]["reason"]


def test_vcgencmd_pmic_sampler_end_to_end(tmp_path):
    body = (
        "import sys\n"
        "if sys.argv[1:] == ['get_throttled']:\n"
        "    print('throttled=0x0')  # the documented reply of an unthrottled Pi\n"
        "    sys.exit(0)\n"
        "assert sys.argv[1:] == ['pmic_read_adc'], sys.argv\n"
        f"sys.stdout.write(open({str(FIX / 'rpi5_vcgencmd_pmic_read_adc_load.txt')!r}).read())\n"
    )
    _fake_tool(tmp_path / "bin", "vcgencmd", body)
    r = _run_harness(_spec(energy_source="vcgencmd_pmic"), tmp_path, tmp_path / "bin")
    e = r["energy"]
    watts = sum(a * v for a, v in PI5_PAIRS.values())
    assert e["available"] and e["avg_power_w"] == pytest.approx(watts)
    assert e["sample_rate_hz"] <= 11  # capped at ~10 Hz although 50 ms was asked
    assert r["thermal"]["before"]["throttled_raw"] == "throttled=0x0" and r["thermal"]["throttled"] is False


def test_ina3221_sampler_end_to_end(tmp_path):
    dev = tmp_path / "root/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for k, (name, mw) in enumerate([("POM_5V_IN", 1750), ("POM_5V_GPU", 0), ("POM_5V_CPU", 366)]):
        _write(dev / f"rail_name_{k}", name)
        _write(dev / f"in_power{k}_input", str(mw))
    r = _run_harness(_spec(energy_source="ina3221", energy_options={"sysfs_root": str(tmp_path / "root")}),
                     tmp_path, tmp_path)
    e, t = r["energy"], r["timing"]
    assert e["available"] and e["avg_power_w"] == pytest.approx(1.75)
    assert e["energy_per_inference_mj"] == pytest.approx(1.75 * t["duration_s"] / t["runs"] * 1000)
    assert e["sample_rate_hz"] == pytest.approx(20, rel=0.5)


def test_energy_none_on_this_machine(tmp_path):
    r = _run_harness(_spec(min_seconds=0.0, idle_seconds=0.0), tmp_path, tmp_path)
    assert r["energy"]["available"] is False and "energy_source: none" in r["energy"]["reason"]
    assert r["energy"].get("avg_power_w") is None
    if not os.path.isdir("/sys/class/powercap"):
        r2 = _run_harness(_spec(min_seconds=0.0, idle_seconds=0.0, energy_source="rapl"), tmp_path, tmp_path)
        assert r2["energy"]["available"] is False and "powercap" in r2["energy"]["reason"]
        assert not math.isnan(r2["timing"]["stats"]["median_ms"])


def test_collector_separates_idle_and_timed_windows(tmp_path):
    # The real INA3221 reader on a sysfs tree whose value changes between the idle and the timed window.
    dev = tmp_path / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    _write(dev / "rail_name_0", "POM_5V_IN")
    _write(dev / "in_power0_input", "1000")
    import time

    col = energy.EnergyCollector(ina3221.Ina3221Source([], {"sysfs_root": str(tmp_path)}), 20)
    col.start()
    try:
        i0 = time.perf_counter()
        time.sleep(0.3)
        i1 = time.perf_counter()
        _write(dev / "in_power0_input", "3000")
        time.sleep(0.1)  # samples taken during the switch belong to neither window
        t0 = time.perf_counter()
        time.sleep(0.4)
        t1 = time.perf_counter()
    finally:
        col.stop()
    idle, timed = col.window(i0, i1), col.window(t0, t1)
    assert idle and set(idle) == {1.0} and timed and set(timed) == {3.0}
    e = energy.summarize_energy(idle, timed, t1 - t0, 10, "ina3221", col.rails)
    # (3 W - 1 W) x window / 10 runs, in mJ
    assert e["energy_above_idle_per_inference_mj"] == pytest.approx(2.0 * (t1 - t0) / 10 * 1000)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_sensor_child_never_outlives_the_harness(tmp_path, sig):
    import signal
    import time

    pidfile = tmp_path / "tegrastats.pid"
    body = f"import os\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\n" + TEGRASTATS_FAKE.format(
        fixture=str(FIX / "tegrastats_orin_nano_jp6_lines.txt"))
    _fake_tool(tmp_path / "bin", "tegrastats", body)
    sp = tmp_path / "spec.json"
    sp.write_text(json.dumps(_spec(energy_source="tegrastats", min_seconds=120.0, max_seconds=120.0, idle_seconds=0.2)))
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen([sys.executable, str(harness_path()), str(sp)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:  # wait until the timed phase runs with the sensor attached
            if line.startswith("EDGEKIT-PROGRESS") and '"timed"' in line:
                break
        deadline = time.time() + 20  # the stand-in writes its pid after its own interpreter start (slow when loaded)
        while not pidfile.exists() and time.time() < deadline:
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert _pid_alive(child)
        proc.send_signal(getattr(signal, sig))
        rest = proc.stderr.read()
        rc = proc.wait(timeout=30)
        if sig == "SIGTERM":
            assert rc == 130 and '"kind": "interrupted"' in rest
        deadline = time.time() + 10
        while _pid_alive(child) and time.time() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(child), f"tegrastats stand-in {child} still running after the harness got {sig}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _logging_vcgencmd(tmp_path: Path) -> Path:
    """The Pi 5 vcgencmd stand-in replaying the real capture, also logging which process started each call."""
    log = tmp_path / "calls.log"
    body = (
        "import os, sys\n"
        f"open({str(log)!r}, 'a').write('%s %d\\n' % (sys.argv[1], os.getppid()))\n"
        "if sys.argv[1:] == ['get_throttled']:\n"
        "    print('throttled=0x0')\n"
        "    sys.exit(0)\n"
        f"sys.stdout.write(open({str(FIX / 'rpi5_vcgencmd_pmic_read_adc_load.txt')!r}).read())\n"
    )
    _fake_tool(tmp_path / "bin", "vcgencmd", body)
    return log


def _calls(log: Path):
    return [(c, int(p)) for c, p in (ln.split() for ln in log.read_text().splitlines())]


def test_vcgencmd_is_sampled_by_a_separate_process(tmp_path):
    # issue 15 §6: spawning vcgencmd at ~10 Hz from the timed process costs it CPU (fork+exec); a sampler child does it
    log = _logging_vcgencmd(tmp_path)
    r = _run_harness(_spec(energy_source="vcgencmd_pmic", min_seconds=2.0, idle_seconds=0.3), tmp_path, tmp_path / "bin")
    e = r["energy"]
    assert e["available"] and e["avg_power_w"] == pytest.approx(sum(a * v for a, v in PI5_PAIRS.values()))
    calls = _calls(log)
    harness_pid = {p for c, p in calls if c == "get_throttled"}  # thermal snapshots run in the harness process
    assert len(harness_pid) == 1
    pmic = [p for c, p in calls if c == "pmic_read_adc"]
    assert pmic[0] in harness_pid  # the one availability check before any timing
    sampled = pmic[1:]
    assert len(sampled) >= e["samples"] >= 2  # (a Python stand-in on a loaded 2-core machine: a few reads a second)
    assert not harness_pid & set(sampled)  # every sample during idle + timed came from the sampler process
    assert len(set(sampled) - {1}) == 1  # one sampler (a read still running when it stopped is re-parented to init)
    assert any("separate process" in w for w in r["warnings"])


def test_vcgencmd_thread_sampler_spawns_from_the_timed_process(tmp_path):
    log = _logging_vcgencmd(tmp_path)
    r = _run_harness(_spec(energy_source="vcgencmd_pmic", energy_options={"sampler": "thread"}, min_seconds=1.0,
                           idle_seconds=0.3), tmp_path, tmp_path / "bin")
    assert r["energy"]["available"]
    calls = _calls(log)
    harness_pid = {p for c, p in calls if c == "get_throttled"}
    assert {p for c, p in calls if c == "pmic_read_adc"} == harness_pid


def test_vcgencmd_unknown_sampler_is_a_clear_reason(tmp_path):
    _logging_vcgencmd(tmp_path)
    r = _run_harness(_spec(energy_source="vcgencmd_pmic", energy_options={"sampler": "fork"}), tmp_path, tmp_path / "bin")
    assert r["energy"]["available"] is False and "energy_options.sampler 'fork'" in r["energy"]["reason"]
