"""Real benchmark results for the report tests: the harness runs the onnx wheel's light_* models on this machine."""

from __future__ import annotations

import pytest
from reporthelp import light_model


@pytest.fixture(scope="session")
def real_result():
    """One real BenchmarkResult: light_shufflenet on onnxruntime through the LocalRunner and the harness."""
    from edgekit.core.artifact import load_artifact
    from edgekit.workflows.deploy import benchmark, make_runner
    from edgekit.core.profiles import load_profile
    from edgekit.core.shapes import resolve_inputs

    prof = load_profile("x86-cpu")
    art = load_artifact(light_model("shufflenet"))
    with make_runner(prof) as runner:
        return benchmark(art, prof, runner, resolve_inputs(art.inputs, model="light_shufflenet"),
                         bench={"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 15, "min_seconds": 0.2})
