"""Planner: (source artifact, device profile, options) -> an ordered, explained list of steps. Pure."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field

from edgekit.core.artifact import Artifact
from edgekit.core.errors import PlanError
from edgekit.core import runtimes
from edgekit.core.profiles import DeviceProfile
from edgekit.core.runtimes import TORCH_FORMATS
from edgekit.core.steps import PlannedStep

class PlanOptions(BaseModel):
    """Everything the user chose that changes the plan."""

    model_config = ConfigDict(extra="forbid")
    runtime: Optional[str] = None
    precision: Optional[str] = None
    max_drop: Optional[float] = Field(default=None, description="accuracy budget as a fraction, e.g. 0.005")
    simplify: bool = True
    has_calib: bool = False
    host: Optional[str] = None
    shapes: Optional[Dict[str, List[int]]] = Field(default=None, description="--shape values: example inputs for export, test shapes for onnxsim")
    device_runtimes: Optional[List[str]] = Field(default=None, description="runtimes the probed --host device has (None: not probed)")
    exclude_runtimes: Dict[str, str] = Field(default_factory=dict, description="runtimes already tried in this deploy and why they failed (fallback)")


class Plan(BaseModel):
    """The steps to run, the runtime and precision chosen, where it runs, and why."""

    model_config = ConfigDict(extra="forbid")
    model: str
    source_format: str
    profile: str
    runtime: str
    precision: str
    target: str
    steps: List[PlannedStep]
    notes: List[str] = Field(default_factory=list)

    def describe(self) -> List[str]:
        lines = [
            f"model    {self.model} ({self.source_format})",
            f"profile  {self.profile}",
            f"runtime  {self.runtime}   precision {self.precision}",
            f"runs on  {self.target}",
        ]
        for i, s in enumerate(self.steps, 1):
            cfg = ", ".join(f"{k}={v}" for k, v in s.config.items())
            lines.append(f"  {i}. {s.step}" + (f" [{cfg}]" if cfg else "") + f" — {s.reason}")
        if not self.steps:
            lines.append("  (no conversion needed)")
        for n in self.notes:
            lines.append(f"note: {n}")
        return lines


def runtime_available_locally(runtime: str) -> bool:
    return runtimes.get(runtime).available_here()


def _step_available(name: str) -> tuple:
    from edgekit.core.registry import get_step

    from edgekit.core.errors import EdgekitError

    try:
        return get_step(name).availability()
    except EdgekitError as exc:  # the step's module itself is not present in this install
        return False, exc.message


def _reachable(source_format: str, runtime: str) -> bool:
    """Every runtime runs its own formats, and edgekit converts ONNX and PyTorch sources for any of them."""
    return source_format in runtimes.get(runtime).formats or source_format in ("onnx", *TORCH_FORMATS)


def make_plan(
    artifact: Artifact,
    model_label: str,
    profile: DeviceProfile,
    options: PlanOptions,
    step_available: Callable[[str], tuple] = _step_available,
    runtime_available: Callable[[str], bool] = runtime_available_locally,
) -> Plan:
    """Choose runtime, precision and steps. Same inputs (incl. what is installed here), same plan."""
    fmt = artifact.format
    local = options.host is None and profile.connection.type == "local"
    notes: List[str] = []
    runtime = _choose_runtime(fmt, profile, options, local, notes, step_available, runtime_available)
    precision = _choose_precision(runtime, profile, options, notes)
    steps = _plan_steps(fmt, runtime, precision, profile, options, notes, step_available)
    if local:
        target = "local (this machine)"
    elif options.host:
        target = f"ssh:{options.host}"
    else:
        target = f"the {profile.name} device over {profile.connection.type} (pass {'--serial' if profile.connection.type == 'adb' else '--host'} to pick it)"
    return Plan(model=model_label, source_format=fmt, profile=profile.name, runtime=runtime, precision=precision,
                target=target, steps=steps, notes=notes)


def _choose_runtime(fmt: str, profile: DeviceProfile, options: PlanOptions, local: bool, notes: List[str],
                    step_available: Callable[[str], tuple], runtime_available: Callable[[str], bool]) -> str:
    """--runtime if it fits the profile and the model, else the profile's first runtime usable here (notes say why)."""
    if options.runtime:
        runtimes.get(options.runtime)  # PlanError naming the known runtimes
        if options.runtime not in profile.runtimes:
            raise PlanError(
                f"profile '{profile.name}' does not list runtime '{options.runtime}'",
                hint=f"it lists {', '.join(profile.runtimes)}; pick one of those or use a profile that has {options.runtime}",
            )
        if options.device_runtimes is not None and options.runtime not in options.device_runtimes:
            rt = runtimes.get(options.runtime)
            raise PlanError(
                f"the device {options.host or ''} has no {options.runtime} (probed before converting)".replace("  ", " "),
                hint=f"install it on the device ({rt.install_hints.get(rt.probe_keys[0], 'install ' + rt.name)}), or choose --runtime among what it has: {', '.join(options.device_runtimes) or 'none'}",
            )
        if not _reachable(fmt, options.runtime):
            raise PlanError(
                f"a {fmt} model cannot be converted for {options.runtime}",
                hint=f"{fmt} models run on {', '.join(r for r in profile.runtimes if _reachable(fmt, r)) or 'no runtime of this profile'}",
            )
        notes.insert(0, f"runtime {options.runtime}: requested with --runtime")
        return options.runtime
    for cand in profile.runtimes:
        if cand in options.exclude_runtimes:
            notes.append(f"fallback: {cand} was tried first and failed ({options.exclude_runtimes[cand]}); trying the next runtime")
            continue
        if not _reachable(fmt, cand):
            notes.append(f"{cand} skipped: a {fmt} model cannot be converted for it")
            continue
        if options.device_runtimes is not None and cand not in options.device_runtimes:
            notes.append(f"{cand} is preferred by the profile but the device {options.host or ''} does not have it (probed before converting); trying the next runtime".replace("  ", " "))
            continue
        if local and not runtime_available(cand):
            notes.append(f"{cand} is preferred by the profile but is not installed here ({runtimes.get(cand).install}); trying the next runtime")
            continue
        conv = _conversion_step(fmt, cand)
        if conv is not None:
            ok, detail = step_available(conv)
            if not ok:
                notes.append(f"{cand} is preferred by the profile but its converter '{conv}' is unavailable here: {detail}")
                continue
        after = f", after {', '.join(options.exclude_runtimes)} failed (fallback)" if options.exclude_runtimes else ""
        notes.insert(0, f"runtime {cand}: first usable runtime in the profile's preference order ({', '.join(profile.runtimes)}){after}")
        return cand
    raise PlanError(
        f"no runtime of profile '{profile.name}' can run this {fmt} model here",
        hint="; ".join(notes) or f"the profile lists {', '.join(profile.runtimes)}",
    )


def _choose_precision(runtime: str, profile: DeviceProfile, options: PlanOptions, notes: List[str]) -> str:
    """--precision (auto shows the fp32 plan) or the profile's default for this runtime; checked against both."""
    precision = options.precision or profile.default_precision_for(runtime)
    if precision == "auto":
        precision = "fp32"
        notes.append("precision auto: `deploy` builds every runtime x precision of the profile, measures each on the target and keeps the fastest within --max-drop (default 1%); shown here: the fp32 plan of the preferred runtime")
    if precision not in ("fp32", "fp16", "int8"):
        raise PlanError(f"unknown precision '{precision}'", hint="choose fp32, fp16 or int8")
    rt = runtimes.get(runtime)
    if precision not in rt.precisions:
        raise PlanError(f"edgekit builds {', '.join(rt.precisions)} for {runtime}, not {precision}",
                        hint=f"use --precision {' or '.join(rt.precisions)}, or another runtime")
    if not profile.supports_precision(precision, runtime):
        accel = [a for a in profile.accelerators if runtime in a.runtimes]
        why = f" ({accel[0].name}: {accel[0].note})" if accel and accel[0].note else ""
        supported = [p for p in ("fp32", "fp16", "int8") if profile.supports_precision(p, runtime)]
        raise PlanError(
            f"profile '{profile.name}' cannot run {precision} on {runtime}{why}",
            hint=f"use --precision {' or '.join(supported)}",
        )
    if precision == "int8" and options.max_drop is not None and not options.runtime:
        notes.append(f"int8 under a budget: `deploy` builds the INT8 path of each runtime ({', '.join(profile.runtimes)}), measures each on the target and keeps the fastest that meets the budget; shown here: {runtime}")
    return precision


def _plan_steps(fmt: str, runtime: str, precision: str, profile: DeviceProfile, options: PlanOptions, notes: List[str],
                step_available: Callable[[str], tuple]) -> List[PlannedStep]:
    """Source format -> [export] -> [simplify] -> the runtime's compile recipe (edgekit.core.runtimes)."""
    rt = runtimes.get(runtime)
    steps: List[PlannedStep] = []
    cur = fmt
    if cur in TORCH_FORMATS and runtime == "tflite":
        steps.extend(_tflite_from_torch(fmt, precision, options, notes, step_available))
        cur = "tflite" if steps else cur
    if cur in TORCH_FORMATS:
        steps.append(PlannedStep(step="export", config={"input_shapes": options.shapes} if options.shapes else {}, reason="runtimes load ONNX, not PyTorch; export to ONNX (dynamo exporter, legacy fallback recorded)"))
        cur = "onnx"
    if cur == "onnx" and options.simplify and rt.skip_simplify:
        notes.append(rt.skip_simplify)
    elif cur == "onnx" and options.simplify:
        steps.append(PlannedStep(step="simplify", config={"test_input_shapes": options.shapes} if options.shapes else {}, reason="fold constants and drop redundant nodes with onnxsim (skipped visibly if it fails)"))
    if cur == "onnx":
        steps.extend(PlannedStep(step=n, config=c, reason=r) for n, c, r in rt.compile_steps(precision, options, profile, notes))
    elif precision != "fp32" and not steps:
        raise PlanError(
            f"a {cur} model is run as it is; edgekit compresses from ONNX or PyTorch",
            hint="give the ONNX/PyTorch source to quantize, or use --precision fp32",
        )
    return steps


def _conversion_step(fmt: str, runtime: str) -> Optional[str]:
    rt = runtimes.get(runtime)
    return rt.convert_step if rt.convert_step and fmt != rt.native_format else None


LITERT_TORCH_FORMATS = ("pytorch", "exported_program")


def _tflite_from_torch(fmt: str, precision: str, options: PlanOptions, notes: List[str], step_available: Callable[[str], tuple]) -> List[PlannedStep]:
    """PyTorch -> .tflite directly with litert-torch when it is installed; [] (with a note saying why) to go through ONNX."""
    if fmt not in LITERT_TORCH_FORMATS:
        notes.append(f"tflite from {fmt}: litert-torch takes an nn.Module or ExportedProgram, not {fmt}; converting through ONNX (export -> onnx2tf)")
        return []
    ok, detail = step_available("litert-torch")
    if not ok:
        notes.append(f"tflite from PyTorch: litert-torch is unavailable here ({detail}); converting through ONNX (export -> onnx2tf) instead (pip install 'edgekit[litert]' for the direct path)")
        return []
    tp = "int8-dynamic" if precision == "int8" else precision
    if precision == "int8":
        why = "calibration data is not used: " if options.has_calib else ""
        notes.append(f"tflite int8 from PyTorch: {why}litert-torch builds dynamic-range INT8 (int8 weights, activations quantized at run time); calibrated full-integer INT8 is built only through ONNX (export -> onnx2tf)")
    config: Dict[str, object] = {"precision": tp}
    if tp == "int8-dynamic" and options.max_drop is not None:
        config["max_drop"] = options.max_drop
    if options.shapes:
        config["input_shapes"] = options.shapes
    return [PlannedStep(step="litert-torch", config=config, reason=f"convert PyTorch to TFLite directly with litert-torch ({tp}); no ONNX step; inputs are renamed serving_default_args_N and int64 ones become int32 (mapped back for fidelity and the harness)")]
