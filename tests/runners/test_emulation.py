"""Emulation detection in the harness (qemu-user: aarch64 userland on an x86 CPU) and how reports mark timings."""

from __future__ import annotations

import platform

import pytest

from edgekit.core.results import BenchmarkResult
from edgekit.report import bench_rows
from edgekit.runners.harness.device import EMULATED_NOTE, emulation

HOST_CPUINFO = open("/proc/cpuinfo").read()
HOST_IS_X86 = platform.machine() in ("x86_64", "i686")


@pytest.mark.skipif(not HOST_IS_X86, reason="needs an x86 host's /proc/cpuinfo")
def test_aarch64_uname_with_this_x86_cpuinfo_is_emulated():
    why = emulation("aarch64", HOST_CPUINFO, "")
    assert why is not None and why.startswith("uname -m is aarch64 but /proc/cpuinfo describes an x86 CPU")


def test_native_process_is_not_emulated():
    assert emulation(platform.machine(), HOST_CPUINFO, open("/proc/self/maps").read()) is None


def test_arm_cpuinfo_on_arm_is_not_emulated():
    # the fields an aarch64 kernel prints (no vendor_id, no x86 flags)
    arm = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"
    assert emulation("aarch64", arm, "") is None


def test_qemu_mapped_into_the_process_is_emulated():
    maps = "5500000000-5500001000 r-xp 00000000 08:01 1234   /usr/bin/qemu-aarch64-static\n"
    assert "qemu" in emulation("aarch64", "", maps)


def _result(emulated: bool) -> BenchmarkResult:
    stats = dict(mean_ms=2.0, median_ms=2.0, p90_ms=2.5, p99_ms=3.0, min_ms=1.5, max_ms=3.0, std_ms=0.1)
    return BenchmarkResult.model_validate({
        "created": "2026-11-27T00:00:00Z",
        "model": {"path": "m.onnx", "format": "onnx", "size_bytes": 10},
        "runtime": {"name": "onnxruntime", "version": "1.23.2", "threads": 1},
        "device": {"hostname": "b", "arch": "aarch64", "os": "Debian", "kernel": "6", "python": "3.11.2",
                   "emulated": emulated, "emulation": "uname -m is aarch64 but ..." if emulated else None},
        "timing": {"load_ms": 1.0, "first_inference_ms": 2.0, "warmup_runs": 1, "warmup_s": 0.1, "runs": 3,
                   "duration_s": 0.01, "samples_ms": [2.0, 2.0, 2.0], "stats": stats, "throughput_ips": 300.0,
                   "note": EMULATED_NOTE if emulated else None},
        "memory": {}, "energy": {"available": False, "reason": "none"}, "thermal": {},
    })


def test_every_timing_row_is_marked_when_emulated():
    rows = dict(bench_rows(_result(True)))
    for key in ("latency median", "latency mean ± std", "latency p90 / p99", "latency min / max", "throughput", "load / first inference"):
        assert rows[key].endswith(f"({EMULATED_NOTE})"), key
    assert rows["device"].endswith("EMULATED")
    assert EMULATED_NOTE not in rows["peak RSS"]
    assert not any(EMULATED_NOTE in v for v in dict(bench_rows(_result(False))).values())
