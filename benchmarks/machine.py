"""One line describing the benchmark machine: CPU model, core count and the ISA features that decide INT8/bf16 behaviour."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """CPU model and the ISA features that decide INT8/bf16 behaviour (VNNI, AVX-512, BF16)."""
    model, flags = platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == platform.machine():
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    feats = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8") if f in flags]
    return f"{model}, {os.cpu_count()} cpus, flags: {' '.join(feats) or 'n/a'}"
