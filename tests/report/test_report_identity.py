"""Device identity: emulation is detected from what qemu-user shows (ARM userland, the x86 host's /proc/cpuinfo)."""

from __future__ import annotations

from edgekit.report.compare import compare_runs
from edgekit.report.identity import differences, emulated, identity


def test_emulated_when_arm_userland_reports_an_x86_cpu():
    # what `edgekit doctor --host` printed against the qemu-user arm64 board here (NOTES.md): aarch64 + host CPU
    assert "emulated" in emulated("aarch64", "AMD EPYC 7B13 64-Core Processor")
    assert emulated("aarch64", "Cortex-A76") is None  # a real Pi 5
    assert emulated("x86_64", "AMD EPYC") is None
    assert emulated("aarch64", None) is None


def test_identity_and_differences_from_a_real_result(real_result):
    a = identity(real_result, profile="x86-cpu")
    assert a["runtime"] == real_result.runtime.name and a["cpu_model"] == real_result.device.cpu_model and a["emulated"] is None
    board = real_result.model_copy(update={"device": real_result.device.model_copy(update={"arch": "aarch64"})})
    b = identity(board, profile="raspberry-pi-5", power_mode="performance")
    d = differences(a, b)
    assert set(d) >= {"arch", "profile", "power_mode", "emulated"} and d["arch"] == (real_result.device.arch, "aarch64")
    res = compare_runs({"ref": "a", "label": "a", "median_ms": 1.0, "samples": real_result.timing.samples_ms, "identity": a},
                       {"ref": "b", "label": "b", "median_ms": 1.0, "samples": real_result.timing.samples_ms, "identity": b})
    assert res["verdict"] == "no detectable difference" and any("run B was emulated" in n for n in res["notes"])
