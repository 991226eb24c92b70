"""The runtime table: every inference runtime edgekit targets, described once.

Each entry says which model formats the runtime runs, the precisions edgekit builds for it, the extra that installs
it on this host, the Python modules that make it usable here, how the host opens a session for fidelity checks
(through the harness adapter of the same name, with `session_options`), the harness adapter's name, how doctor
reads its probe, and which steps turn an ONNX model into what it runs. The planner, deploy, the fidelity check,
doctor, `edgekit bench` and the profile schema read this table; the device side is one module per runtime in
runners/harness/adapters/. Adding a runtime = one entry here + one adapter file (+ its converter step if it needs
one). Pure data and small functions: no heavy imports, nothing from plan/profiles (they import this).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from edgekit.core.errors import PlanError, closest

# (step name, step config, reason) as the planner records it; plan.py wraps these into PlannedStep
StepRecipe = Tuple[str, Dict[str, Any], str]
TORCH_FORMATS = ("pytorch", "torchscript", "exported_program")


def _no_steps(precision: str, options: Any, profile: Any, notes: List[str]) -> List[StepRecipe]:
    return []


def _no_options(precision: Optional[str], metadata: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Runtime:
    """One inference runtime, as everything in edgekit sees it."""

    name: str  # the name in profiles, plans, specs and `--runtime`
    formats: Tuple[str, ...]  # formats it runs, its native format first (OpenVINO also reads ONNX)
    precisions: Tuple[str, ...]  # what edgekit can build for it (a profile may allow fewer)
    extra: Optional[str]  # pip install 'edgekit[extra]' makes it usable on this host (None: not a pip extra)
    modules: Tuple[str, ...]  # Python modules that make it usable on this host (any one is enough)
    harness_adapter: str  # module name in runners/harness/adapters/ (the device side)
    probe_keys: Tuple[str, ...]  # keys of the harness probe's "runtimes" that show it usable (doctor)
    install_hints: Mapping[str, str] = field(default_factory=dict)  # probe key -> what to install (doctor)
    host_fidelity: bool = True  # fidelity can open it on the host (TensorRT engines only exist on the device)
    convert_step: Optional[str] = None  # the step that converts ONNX to its native format, if it cannot run ONNX
    skip_simplify: Optional[str] = None  # the plan note when onnxsim must not run before it
    compile_steps: Callable[[str, Any, Any, List[str]], List[StepRecipe]] = _no_steps  # ONNX -> what it runs
    session_options: Callable[..., Dict[str, Any]] = _no_options  # harness runtime_options by (precision, artifact metadata)
    precisions_from_accelerator: bool = False  # a profile allows only what an accelerator listing it executes

    @property
    def native_format(self) -> str:
        return self.formats[0]

    @property
    def install(self) -> str:
        """What makes it usable on this host."""
        return f"pip install 'edgekit[{self.extra}]'" if self.extra else self.install_hints.get(self.probe_keys[0], f"install {self.name}")

    def available_here(self) -> bool:
        """True if one of its Python modules is importable on this host."""
        return any(importlib.util.find_spec(m) is not None for m in self.modules)

    def usable_in_probe(self, probe_runtimes: Mapping[str, Any]) -> bool:
        """True if a harness probe's "runtimes" section shows it usable on that device."""
        return any((probe_runtimes.get(k) or {}).get("available") for k in self.probe_keys)


# ----------------------------------------------------------------------------------------------- per-runtime recipes
def _budget(options: Any) -> Dict[str, Any]:
    return {} if options.max_drop is None else {"max_drop": options.max_drop}


def _int8_reason(profile: Any, max_drop: Optional[float]) -> str:
    if profile.cpu.isa == "x86_64":
        isa = "x86 with VNNI" if profile.has_feature("vnni") else "x86 without VNNI (avoids u8s8 saturation)"
    else:
        isa = "ARM " + ("with dotprod" if profile.has_feature("dotprod") else "NEON without dotprod")
    budget = f" under a {max_drop:.2%} accuracy budget" if max_drop is not None else ""
    return f"ONNX Runtime INT8 with defaults for {isa}{budget}"


def _ort_steps(precision: str, options: Any, profile: Any, notes: List[str]) -> List[StepRecipe]:
    if precision == "int8":
        return [("quantize-ort", {"precision": "int8", **_budget(options)}, _int8_reason(profile, options.max_drop))]
    if precision == "fp16":
        md = options.max_drop
        return [("fp16", _budget(options), "convert weights and compute to float16 (inputs/outputs stay float32)"
                 + (f"; judged against a {md:.2%} accuracy budget" if md is not None else ""))]
    return []


def _openvino_steps(precision: str, options: Any, profile: Any, notes: List[str]) -> List[StepRecipe]:
    md = options.max_drop
    reason = "convert ONNX to OpenVINO IR (xml/bin)"
    if precision == "int8":
        reason += "; INT8 with NNCF post-training quantization" + (f" under a {md:.2%} accuracy budget" if md is not None else "")
    elif precision == "fp16":
        reason += "; FP16-stored weights (compress_to_fp16; the CPU plugin decompresses them and computes in f32, or bf16 where the CPU has it)"
    return [("openvino", {"precision": precision, **_budget(options)}, reason)]


def _openvino_options(precision: Optional[str], metadata: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """OpenVINO's CPU plugin runs an FP32 IR in bf16 when the CPU has AVX512-BF16/AMX (its default
    INFERENCE_PRECISION_HINT); measured on this project's Xeon: PP-OCR rec text changed on 4.5 % of lines.
    An artifact edgekit calls fp32 is therefore compiled with the f32 hint, on the host and on the device. An INT8
    artifact whose float parts were validated at f32 (the QAT step's mixed-precision search records
    `inference_precision_hint: f32` in its metadata when bf16 alone would miss the budget) gets the same hint."""
    if precision == "fp32":
        return {"inference_precision_hint": "f32"}
    hint = (metadata or {}).get("inference_precision_hint")
    return {"inference_precision_hint": str(hint)} if hint else {}


def _tflite_steps(precision: str, options: Any, profile: Any, notes: List[str]) -> List[StepRecipe]:
    tp = precision
    if precision == "int8":
        tp = "int8" if options.has_calib else "int8-dynamic"
        if not options.has_calib:
            notes.append("tflite int8: no --calib data given, so dynamic-range INT8 (weights only) was chosen instead of full-integer INT8")
    config = {"precision": tp, **(_budget(options) if tp != "fp32" else {})}  # fp16 is lossy too: judged by --max-drop
    if options.shapes:
        config["input_shapes"] = options.shapes  # --shape fixes dynamic dims for onnx2tf (-ois), with or without data
    return [("tflite", config, f"convert ONNX to TFLite with onnx2tf ({tp}) in its isolated tool environment")]


def _tensorrt_steps(precision: str, options: Any, profile: Any, notes: List[str]) -> List[StepRecipe]:
    out: List[StepRecipe] = []
    if precision == "int8":
        out.append(("quantize-ort", {"precision": "int8", "mode": "static", "target": "tensorrt", **_budget(options)},
                    "TensorRT builds INT8 from a QDQ ONNX (trtexec has no calibrator): symmetric INT8 Q/DQ (zero point 0), "
                    "per-channel weights, as TensorRT requires"))
    out.append(("tensorrt", {"precision": precision}, f"build a {precision} engine ON THE DEVICE with trtexec (engines are specific to GPU and TensorRT version); cached on the device"))
    return out


# ----------------------------------------------------------------------------------------------- the table
RUNTIMES: Dict[str, Runtime] = {r.name: r for r in (
    Runtime(
        name="onnxruntime", formats=("onnx",), precisions=("fp32", "fp16", "int8"), extra=None,
        modules=("onnxruntime",), harness_adapter="onnxruntime", probe_keys=("onnxruntime",),
        install_hints={"onnxruntime": "pip install onnxruntime"},
        compile_steps=_ort_steps,
    ),
    Runtime(
        name="openvino", formats=("openvino", "onnx"), precisions=("fp32", "fp16", "int8"), extra="openvino",
        modules=("openvino",), harness_adapter="openvino", probe_keys=("openvino",),
        install_hints={"openvino": "pip install 'edgekit[openvino]'"},
        convert_step="openvino", compile_steps=_openvino_steps, session_options=_openvino_options,
        # its converter folds constants and fuses its own patterns; onnxsim's rewrites hid some of them: measured
        # here (interleaved, f32) PP-OCRv4 det IR 33.6 vs 26.6 ms, rec 6.86 vs 6.41 ms with/without onnxsim
        skip_simplify="simplify: skipped for OpenVINO (its converter folds constants itself; IRs converted after onnxsim ran 7-26% slower on PP-OCRv4)",
    ),
    Runtime(
        name="tflite", formats=("tflite",), precisions=("fp32", "fp16", "int8"), extra="tflite",
        modules=("ai_edge_litert", "tflite_runtime"), harness_adapter="tflite", probe_keys=("ai_edge_litert", "tflite_runtime"),
        install_hints={"ai_edge_litert": "pip install 'edgekit[tflite]'",
                       "tflite_runtime": "pip install tflite-runtime (devices only; ai-edge-litert is preferred)"},
        convert_step="tflite", compile_steps=_tflite_steps,
    ),
    Runtime(
        name="tensorrt", formats=("tensorrt",), precisions=("fp32", "fp16", "int8"), extra=None,
        modules=("tensorrt",), harness_adapter="tensorrt", probe_keys=("tensorrt", "trtexec"),
        install_hints={"tensorrt": "TensorRT ships with JetPack on Jetson boards",
                       "trtexec": "TensorRT ships with JetPack (/usr/src/tensorrt/bin/trtexec)"},
        host_fidelity=False, compile_steps=_tensorrt_steps, precisions_from_accelerator=True,
    ),
)}


def names() -> Tuple[str, ...]:
    return tuple(RUNTIMES)


def get(name: str) -> Runtime:
    """The runtime called `name`, or a PlanError listing the known ones (with a did-you-mean)."""
    if name not in RUNTIMES:
        near = closest(name, RUNTIMES)
        raise PlanError(f"unknown runtime '{name}'", hint=(f"did you mean {', '.join(near)}? " if near else "") + f"choose one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def for_format(fmt: str) -> Optional[Runtime]:
    """The runtime whose native format is `fmt` (the one that runs such a file as it is), or None."""
    return next((r for r in RUNTIMES.values() if r.native_format == fmt), None)


def host_checkable(fmt: str) -> bool:
    """True if a `fmt` artifact can be run on this host for a fidelity check."""
    r = for_format(fmt)
    return r is not None and r.host_fidelity


def runtime_options_for(runtime: str, precision: Optional[str], metadata: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Harness/session options that make `runtime` compute at the artifact's precision (and as its metadata records)."""
    r = RUNTIMES.get(runtime)
    return r.session_options(precision, metadata) if r is not None else {}


def in_probe(probe: Mapping[str, Any]) -> List[str]:
    """The runtimes a device has, from a harness probe (`edgekit doctor --host` shows the same record)."""
    rts = probe.get("runtimes", {}) or {}
    return [r.name for r in RUNTIMES.values() if r.usable_in_probe(rts)]


def install_hints() -> Dict[str, str]:
    """Probe key -> what to install, over every runtime (doctor's table)."""
    return {k: v for r in RUNTIMES.values() for k, v in r.install_hints.items()}
