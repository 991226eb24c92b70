"""Memory guards: refuse, with the numbers, a run whose inputs cannot fit before allocating them."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from edgekit.core.errors import EdgekitError


class ResourceError(EdgekitError):
    """The run would need more memory than the host or the device has."""


def feed_bytes(inputs: Sequence) -> int:
    """Bytes of one feed (every input once) at the resolved shapes."""
    total = 0
    for s in inputs:
        total += int(np.prod(s.shape, dtype=np.float64)) * np.dtype(s.dtype).itemsize
    return total


def host_available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_fidelity_memory(inputs: Sequence, samples: int, model_bytes: int, where: str = "this machine",
                          available: Optional[int] = None) -> int:
    """The fidelity check holds `samples` feeds (plus a float64 draft of one while it is drawn) and runs the model
    and its converted copy: need ~ feed x samples + 2 x feed + 3 x model file. Refuses above what is available."""
    one = feed_bytes(inputs)
    need = one * samples + 2 * one + 3 * model_bytes
    have = host_available() if available is None else available
    if need > have:
        shapes = ", ".join(f"{s.name}={'x'.join(map(str, s.shape))}" for s in inputs)
        raise ResourceError(
            f"checking fidelity needs about {_gb(need)} of memory ({samples} reference inputs of {_gb(one)} each [{shapes}], "
            f"plus the model), but {where} has {_gb(have)} available",
            hint="lower --fidelity-samples, or pass a smaller --shape",
        )
    return need


def check_benchmark_memory(inputs: Sequence, model_bytes: int, device_mb: int, device: str, host_too: bool) -> int:
    """The harness holds one feed and the loaded model (~2x its file): refuse above the profile's device memory
    (and, when the device is this machine, above what is available here)."""
    one = feed_bytes(inputs)
    need = one + 2 * model_bytes
    limits = [(device_mb * 1024 * 1024, f"the profile's device ({device}: memory_mb {device_mb})")]
    if host_too:
        limits.append((host_available(), "this machine (available now)"))
    for have, what in limits:
        if need > have:
            raise ResourceError(
                f"benchmarking needs about {_gb(need)} of memory (one input set of {_gb(one)} plus the model), more than {what} has: {_gb(have)}",
                hint="pass a smaller --shape",
            )
    return need
