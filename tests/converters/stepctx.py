"""A minimal StepContext for running one step in a test (plain x86 profile, fresh work dir)."""

from __future__ import annotations

from edgekit.core.profiles import CPU, DeviceProfile
from edgekit.core.steps import StepContext


def minimal_context(tmp_path, name: str = "work") -> StepContext:
    work = tmp_path / name
    work.mkdir()
    profile = DeviceProfile(
        name="test-x86", os="linux", cpu=CPU(model="test", cores=2, isa="x86_64"), memory_mb=4096,
        runtimes=["onnxruntime"], precisions=["fp32"], threads=2,
    )
    return StepContext(work_dir=work, profile=profile)
