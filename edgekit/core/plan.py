"""Planner: (source artifact, device profile, options) -> an ordered, explained list of steps. Pure."""

from __future__ import annotations

import importlib.util
from typing import Callable, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field

from edgekit.core.artifact import Artifact
from edgekit.core.errors import PlanError
from edgekit.core.profiles import RUNTIMES, DeviceProfile
from edgekit.core.steps import PlannedStep

TORCH_FORMATS = ("pytorch", "torchscript", "exported_program")

# Formats each runtime can load directly, and the format it needs when converting from ONNX.
RUNTIME_FORMATS = {
    "onnxruntime": ("onnx",),
    "openvino": ("openvino", "onnx"),
    "tflite": ("tflite",),
    "tensorrt": ("tensorrt",),
}

# Keys of the harness probe's "runtimes" record that make each runtime usable on a device.
PROBE_KEYS = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "tflite": ("ai_edge_litert", "tflite_runtime"), "tensorrt": ("tensorrt", "trtexec")}


def runtimes_in_probe(probe: Dict) -> List[str]:
    """The runtimes a device has, from the harness probe (`edgekit doctor --host` shows the same record)."""
    rts = probe.get("runtimes", {}) or {}
    return [rt for rt, keys in PROBE_KEYS.items() if any((rts.get(k) or {}).get("available") for k in keys)]


# Python modules that make a runtime usable on THIS host (only consulted for local targets).
LOCAL_RUNTIME_MODULES = {
    "onnxruntime": (("onnxruntime",), "onnxruntime"),
    "openvino": (("openvino",), "openvino"),
    "tflite": (("ai_edge_litert", "tflite_runtime"), "tflite"),
    "tensorrt": (("tensorrt",), "tensorrt"),
}


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
    modules, _ = LOCAL_RUNTIME_MODULES[runtime]
    return any(importlib.util.find_spec(m) is not None for m in modules)


def _step_available(name: str) -> tuple:
    from edgekit.core.registry import get_step

    from edgekit.core.errors import EdgekitError

    try:
        return get_step(name).availability()
    except EdgekitError as exc:  # the step's module itself is not present in this install
        return False, exc.message


def _reachable(source_format: str, runtime: str) -> bool:
    if source_format in RUNTIME_FORMATS[runtime]:
        return True
    return source_format in ("onnx", *TORCH_FORMATS) and runtime in RUNTIMES


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

    # --- runtime
    if options.runtime:
        if options.runtime not in RUNTIMES:
            raise PlanError(f"unknown runtime '{options.runtime}'", hint=f"choose one of {', '.join(RUNTIMES)}")
        if options.runtime not in profile.runtimes:
            raise PlanError(
                f"profile '{profile.name}' does not list runtime '{options.runtime}'",
                hint=f"it lists {', '.join(profile.runtimes)}; pick one of those or use a profile that has {options.runtime}",
            )
        if options.device_runtimes is not None and options.runtime not in options.device_runtimes:
            _, extra = LOCAL_RUNTIME_MODULES[options.runtime]
            raise PlanError(
                f"the device {options.host or ''} has no {options.runtime} (probed before converting)".replace("  ", " "),
                hint=f"install it on the device (pip install {'ai-edge-litert' if extra == 'tflite' else extra}), or choose --runtime among what it has: {', '.join(options.device_runtimes) or 'none'}",
            )
        if not _reachable(fmt, options.runtime):
            raise PlanError(
                f"a {fmt} model cannot be converted for {options.runtime}",
                hint=f"{fmt} models run on {', '.join(r for r in profile.runtimes if _reachable(fmt, r)) or 'no runtime of this profile'}",
            )
        runtime = options.runtime
        reason_rt = "requested with --runtime"
    else:
        runtime = ""
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
                _, extra = LOCAL_RUNTIME_MODULES[cand]
                notes.append(f"{cand} is preferred by the profile but is not installed here (pip install 'edgekit[{extra}]'); trying the next runtime")
                continue
            conv = _conversion_step(fmt, cand)
            if conv is not None:
                ok, detail = step_available(conv)
                if not ok:
                    notes.append(f"{cand} is preferred by the profile but its converter '{conv}' is unavailable here: {detail}")
                    continue
            runtime = cand
            break
        if not runtime:
            raise PlanError(
                f"no runtime of profile '{profile.name}' can run this {fmt} model here",
                hint="; ".join(notes) or f"the profile lists {', '.join(profile.runtimes)}",
            )
        reason_rt = f"first usable runtime in the profile's preference order ({', '.join(profile.runtimes)})"
        if options.exclude_runtimes:
            reason_rt += f", after {', '.join(options.exclude_runtimes)} failed (fallback)"
    notes.insert(0, f"runtime {runtime}: {reason_rt}")

    # --- precision
    precision = options.precision or profile.default_precision_for(runtime)
    if precision == "auto":
        precision = "fp32"
        notes.append("precision auto: `deploy` builds every runtime x precision of the profile, measures each on the target and keeps the fastest within --max-drop (default 1%); shown here: the fp32 plan of the preferred runtime")
    if precision not in ("fp32", "fp16", "int8"):
        raise PlanError(f"unknown precision '{precision}'", hint="choose fp32, fp16 or int8")
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

    # --- steps
    steps: List[PlannedStep] = []
    cur = fmt
    if cur in TORCH_FORMATS and runtime == "tflite":
        steps.extend(_tflite_from_torch(fmt, precision, options, notes, step_available))
        cur = "tflite" if steps else cur
    if cur in TORCH_FORMATS:
        steps.append(PlannedStep(step="export", config={"input_shapes": options.shapes} if options.shapes else {}, reason="runtimes load ONNX, not PyTorch; export to ONNX (dynamo exporter, legacy fallback recorded)"))
        cur = "onnx"
    if cur == "onnx" and options.simplify and runtime == "openvino":
        # OpenVINO's converter folds constants and fuses its own patterns; onnxsim's rewrites hid some of them:
        # measured here (interleaved, f32): PP-OCRv4 det IR 33.6 vs 26.6 ms, rec 6.86 vs 6.41 ms with/without onnxsim
        notes.append("simplify: skipped for OpenVINO (its converter folds constants itself; IRs converted after onnxsim ran 7-26% slower on PP-OCRv4)")
    elif cur == "onnx" and options.simplify:
        steps.append(PlannedStep(step="simplify", config={"test_input_shapes": options.shapes} if options.shapes else {}, reason="fold constants and drop redundant nodes with onnxsim (skipped visibly if it fails)"))
    if cur == "onnx":
        steps.extend(_compile_steps(runtime, precision, options, profile, notes))
    elif precision != "fp32" and not steps:
        raise PlanError(
            f"a {cur} model is run as it is; edgekit compresses from ONNX or PyTorch",
            hint="give the ONNX/PyTorch source to quantize, or use --precision fp32",
        )
    if local:
        target = "local (this machine)"
    elif options.host:
        target = f"ssh:{options.host}"
    else:
        target = f"the {profile.name} device over {profile.connection.type} (pass --host to run there)"
    return Plan(
        model=model_label,
        source_format=fmt,
        profile=profile.name,
        runtime=runtime,
        precision=precision,
        target=target,
        steps=steps,
        notes=notes,
    )


def _conversion_step(fmt: str, runtime: str) -> Optional[str]:
    if runtime == "openvino" and fmt != "openvino":
        return "openvino"
    if runtime == "tflite" and fmt != "tflite":
        return "tflite"
    return None


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
    return [PlannedStep(step="litert-torch", config=config, reason=f"convert PyTorch to TFLite directly with litert-torch ({tp}); no ONNX step, inputs become int32 serving_default_args_N (mapped back for fidelity and the harness)")]


def _compile_steps(runtime: str, precision: str, options: PlanOptions, profile: DeviceProfile, notes: List[str]) -> List[PlannedStep]:
    md = options.max_drop
    budget = {} if md is None else {"max_drop": md}
    if runtime == "onnxruntime":
        if precision == "int8":
            return [PlannedStep(step="quantize-ort", config={"precision": "int8", **budget}, reason=_int8_reason(profile, md))]
        if precision == "fp16":
            return [PlannedStep(step="fp16", config={**budget}, reason="convert weights and compute to float16 (inputs/outputs stay float32)" + (f"; judged against a {md:.2%} accuracy budget" if md is not None else ""))]
        return []
    if runtime == "openvino":
        reason = "convert ONNX to OpenVINO IR (xml/bin)"
        if precision == "int8":
            reason += "; INT8 with NNCF post-training quantization" + (f" under a {md:.2%} accuracy budget" if md is not None else "")
        elif precision == "fp16":
            reason += "; FP16 weight compression"
        return [PlannedStep(step="openvino", config={"precision": precision, **budget}, reason=reason)]
    if runtime == "tflite":
        tp = precision
        if precision == "int8":
            tp = "int8" if options.has_calib else "int8-dynamic"
            if not options.has_calib:
                notes.append("tflite int8: no --calib data given, so dynamic-range INT8 (weights only) was chosen instead of full-integer INT8")
        config = {"precision": tp, **(budget if tp != "fp32" else {})}
        return [PlannedStep(step="tflite", config=config, reason=f"convert ONNX to TFLite with onnx2tf ({tp}) in its isolated tool environment")]
    if runtime == "tensorrt":
        out: List[PlannedStep] = []
        if precision == "int8":
            out.append(PlannedStep(step="quantize-ort", config={"precision": "int8", "mode": "static", "target": "tensorrt", **budget}, reason="TensorRT builds INT8 from a QDQ ONNX (trtexec has no calibrator): symmetric INT8 Q/DQ (zero point 0), per-channel weights, as TensorRT requires"))
        out.append(PlannedStep(step="tensorrt", config={"precision": precision}, reason=f"build a {precision} engine ON THE DEVICE with trtexec (engines are specific to GPU and TensorRT version); cached on the device"))
        return out
    raise PlanError(f"no compile path for runtime '{runtime}'")


def _int8_reason(profile: DeviceProfile, max_drop: Optional[float]) -> str:
    if profile.cpu.isa == "x86_64":
        isa = "x86 with VNNI" if profile.has_feature("vnni") else "x86 without VNNI (avoids u8s8 saturation)"
    else:
        isa = "ARM " + ("with dotprod" if profile.has_feature("dotprod") else "NEON without dotprod")
    budget = f" under a {max_drop:.2%} accuracy budget" if max_drop is not None else ""
    return f"ONNX Runtime INT8 with defaults for {isa}{budget}"
