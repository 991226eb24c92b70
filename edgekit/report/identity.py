"""Device and software identity of a benchmark run: what the history stores, compare diffs and report.html shows."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

from edgekit.core.results import BenchmarkResult

_X86_CPU = re.compile(r"\b(intel|amd|xeon|epyc|ryzen|core\(tm\)|pentium|celeron)\b", re.I)
_ARM_ARCH = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")


def emulated(arch: Optional[str], cpu_model: Optional[str]) -> Optional[str]:
    """Reason string when an ARM 'device' reports an x86 CPU (qemu-user shows the host's /proc/cpuinfo), else None."""
    if arch in _ARM_ARCH and cpu_model and _X86_CPU.search(cpu_model):
        return f"{arch} userland on an x86 CPU ({cpu_model}): emulated (e.g. qemu-user); timings are not the device's"
    return None


def identity(b: BenchmarkResult, profile: Optional[str] = None, power_mode: Optional[str] = None) -> Dict[str, Any]:
    """Flat dict of everything about where and with what a run was measured (keys stable: the history stores it)."""
    d, rt = b.device, b.runtime
    opts = {k: v for k, v in rt.options.items() if k not in ("import_ms",)}
    return {
        "host": d.hostname,
        "target": b.host or b.runner,
        "arch": d.arch,
        "cpu_model": d.cpu_model,
        "cores": d.cores,
        "memory_mb": d.memory_mb,
        "device_model": d.device_model,
        "os": d.os,
        "kernel": d.kernel,
        "python": d.python,
        "runtime": rt.name,
        "runtime_version": rt.version,
        "threads": rt.threads,
        "providers": ",".join(rt.providers),
        "runtime_options": ", ".join(f"{k}={v}" for k, v in sorted(opts.items())),
        "governor": b.thermal.before.governor,
        "throttled": b.thermal.throttled,
        "energy_source": b.energy.source if b.energy.available else None,
        "profile": profile,
        "power_mode": power_mode,
        "emulated": emulated(d.arch, d.cpu_model),
        "precision": b.model.precision,
    }


# identity keys that make two runs' timings incomparable or worth a note when they differ
COMPARED_KEYS = ("host", "arch", "cpu_model", "cores", "device_model", "os", "kernel", "python", "runtime",
                 "runtime_version", "threads", "providers", "runtime_options", "governor", "throttled", "profile",
                 "power_mode", "emulated", "precision")


def differences(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, tuple]:
    """{key: (value in a, value in b)} for identity keys that differ."""
    return {k: (a.get(k), b.get(k)) for k in COMPARED_KEYS if a.get(k) != b.get(k)}
