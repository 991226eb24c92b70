"""The Python API in one place: deploy, plan, benchmark, profiles, artifacts from in-memory modules."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from edgekit.core.artifact import Artifact, load_artifact
from edgekit.workflows.deploy import deploy, resolve_model
from edgekit.core.plan import Plan, PlanOptions, make_plan
from edgekit.core.profiles import DeviceProfile, load_profile
from edgekit.core.results import BenchmarkResult, DeployReport


def plan(model: Union[str, Artifact], profile: Union[str, DeviceProfile], **options: Any) -> Plan:
    """What `deploy` would do for this model and profile (same options as PlanOptions)."""
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    resolved = resolve_model(model)
    options.setdefault("has_calib", resolved.zoo is not None)
    return make_plan(resolved.artifact, resolved.label, prof, PlanOptions(**options))


def bench(
    artifact: Union[str, Artifact],
    profile: Union[str, DeviceProfile],
    *,
    host: Optional[str] = None,
    ssh: Optional[Dict[str, Any]] = None,
    shapes: Optional[Dict[str, List[int]]] = None,
    bench: Optional[Dict[str, Any]] = None,
    history: Optional[str] = None,
    inputs_file: Optional[str] = None,
) -> BenchmarkResult:
    """Benchmark an existing artifact on a profile's device (locally or over SSH); `inputs_file` = --inputs FILE.npz;
    on deploy's own output it feeds what deploy fed (manifest.json beside it), like `edgekit bench`;
    the run is recorded in the history (`history` path, else $EDGEKIT_HISTORY, else the user data dir; "off" records
    nothing)."""
    from edgekit.report import history as hist
    from edgekit.workflows.bench import inputs_for
    from edgekit.workflows.deploy import benchmark, make_runner

    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    art, inputs, feed = inputs_for(art, shapes, inputs_file)
    hist.check_writable(history)
    with make_runner(prof, host, ssh) as runner:
        result = benchmark(art, prof, runner, inputs, bench=bench, feed=feed)
    hist.append_benchmark(history, result, kind="bench", command="edgekit.api.bench(...)", profile=prof.name, power_mode=prof.power_mode)
    return result


__all__ = ["Artifact", "BenchmarkResult", "DeployReport", "DeviceProfile", "Plan", "bench", "deploy", "load_artifact", "load_profile", "plan"]
