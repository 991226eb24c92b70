"""QAT step: quantization-aware training of an ONNX model for the target's INT8 scheme, distilled from the FP32 model.

ONNX -> trainable torch module (converters/onnx_torch.py) -> fake-quantizers on the inputs and weights of
Conv/ConvTranspose/Gemm/MatMul (per-channel symmetric INT8 weights, per-tensor activations: asymmetric u8 for
OpenVINO / ONNX Runtime, symmetric s8 for TensorRT) -> fine-tune against the FP32 model's own outputs on calibration
data (no labels) within a time budget -> the same ONNX graph with the trained weights and QuantizeLinear /
DequantizeLinear pairs (QDQ). The openvino step converts a QDQ model as it is (FakeQuantize -> INT8 kernels);
ONNX Runtime runs it directly.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
from pydantic import Field, model_validator

from edgekit.core.artifact import Artifact, load_artifact
from edgekit.core.errors import CalibrationError, StepError, require
from edgekit.core.steps import Step, StepConfig, StepContext, lossy_budget_default

STEP = "qat"
QUANT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class QatConfig(StepConfig):
    """Quantization-aware training: scheme of the target, training time budget, optimiser settings."""

    precision: Literal["int8"] = "int8"
    target: Literal["openvino", "onnxruntime", "tensorrt"] = Field("openvino", description="runtime whose INT8 scheme is simulated")
    activations: Literal["auto", "asymmetric", "symmetric"] = Field(
        "auto", description="activation quantization: auto = symmetric s8 for TensorRT, asymmetric u8 otherwise")
    train_budget_s: float = Field(300.0, gt=0, description="wall-clock training time limit in seconds (range init excluded)")
    max_steps: Optional[int] = Field(None, gt=0, description="stop after this many optimiser steps even if time remains")
    batch_size: int = Field(8, gt=0)
    train_samples: int = Field(256, gt=0, description="calibration samples drawn for training (the held-out eval data is never used)")
    init_samples: int = Field(32, gt=0, description="samples used to initialise activation ranges")
    lr: float = Field(1e-5, gt=0, description="Adam learning rate of the weights")
    lr_quant: float = Field(1e-3, gt=0, description="Adam learning rate of the activation scales, relative to each scale (zero points: 10x, in steps)")
    max_drop: Optional[float] = Field(default=None, ge=0.0, description="allowed task-score drop vs FP32 (checked by the pipeline)")
    teacher: Optional[str] = Field(None, description="ONNX model to distil from (default: this step's input), e.g. the source "
                                   "before low-rank factorisation, so training also recovers that loss")
    scope: Literal["all", "backbone"] = Field(
        "all", description="which weighted ops get INT8: all, or backbone = the Conv layers before the first MatMul/Gemm with a "
        "constant weight (mixed precision: attention/sequence blocks and the head stay FP32)")
    float_nodes: List[str] = Field(default_factory=list, description="names of weighted nodes kept in FP32 (mixed precision)")
    mixed: Literal["auto", "off"] = Field(
        "auto", description="auto: with max_drop and a task metric, a sensitivity search on validation samples keeps the most "
        "sensitive weighted ops in FP32 until the budget holds, before training (mixed precision)")
    val_samples: Optional[int] = Field(None, ge=0, description="calibration samples held out of training: mixed-precision "
                                       "search and early stopping (the best checkpoint on them is kept); 0 = no validation; default "
                                       "(default_val_samples): for models with class-distribution (Softmax) outputs, whose task "
                                       "metrics move by whole lines or labels, 256, or 768 when at 256 the search's acceptance "
                                       "(max_drop less its reserve) would allow fewer than 3 lost samples; else 64")
    validate_every_s: float = Field(90.0, gt=0, description="seconds of training between validation checkpoints")
    search: Literal["auto", "build-up", "greedy"] = Field(
        "auto", description="mixed-precision search: build-up = rank every weighted op by the damage it does quantized alone "
        "(a fine-grained proxy: the share of output positions whose top-1 class differs from FP32's, KL as tie-break), then quantize the longest least-damage-first prefix that "
        "meets the budget on validation (edgekit.quality.sensitivity.build_up_quantized); greedy = keep the most sensitive ops "
        "in FP32 until the budget holds (keep_sensitive_nodes_in_float); auto = build-up for models with Softmax outputs, greedy otherwise")
    search_margin: float = Field(0.5, ge=0.0, lt=1.0, description="build-up: fraction of max_drop held in reserve on validation "
                                 "(0.5: max_drop 0.01 must hold at >= 0.995 on validation), for the gap to unseen data")
    max_search_evals: Optional[int] = Field(None, gt=0, description="build+score evaluations of the mixed-precision search "
                                            "(default: 14 greedy; weighted ops + 16 build-up)")
    search_budget_s: float = Field(1800.0, gt=0, description="build-up: no search evaluation starts after this many seconds")
    search_weight: Literal["macs", "none"] = Field(
        "macs", description="build-up: macs = rank ops by damage per multiply-accumulate moved to INT8 and keep the passing set "
        "with the most INT8 multiply-accumulates (what makes the model faster); none = rank by damage alone, keep the most ops")
    float_precision: Literal["auto", "f32", "default"] = Field(
        "auto", description="openvino target: precision of the float parts of the INT8 model. OpenVINO runs them in bf16 on "
        "CPUs with AVX512-BF16/AMX unless the f32 inference hint is given (PP-OCR rec in FP32 under it kept 0.975 of validation lines). "
        "f32 = validate and deploy with the f32 hint (recorded in the artifact: inference_precision_hint); default = OpenVINO's "
        "default; auto = f32 when the FP32 model under the default hint already misses the search's budget on validation")
    train: Literal["auto", "on", "off"] = Field(
        "auto", description="training after the mixed-precision search: auto = skip it when the search met the budget on "
        "validation (the mixed model is exported untrained), on = always (early stopping keeps the best), off = never")
    tail: str = Field(
        "auto", description="auto: train only the part of the network above the last tensor that cuts the graph before its "
        "first weighted MatMul/Gemm (e.g. PP-OCR rec's SVTR neck and CTC head above the conv backbone), on that tensor cached "
        "once from the quantized lower part (ONNX Runtime, QDQ) and the teacher's outputs cached once: each step is then a "
        "forward/backward of the tail only; off: train every quantized op (a full forward/backward per step); or a tensor name")
    hard_label_weight: float = Field(
        1.0, ge=0.0, description="weight of the cross-entropy against the teacher's top-1 class per position, added to the KL "
        "distillation loss of Softmax outputs (keeps the margin where the teacher itself is unsure; 0 = KL only)")
    fast: bool = Field(True, description="planned forward of the ONNX->torch module: constant/shape nodes folded once per input "
                       "shape, elementwise chains fused (PP-OCRv4 rec: 449 -> 258 steps per forward); off = node-by-node interpreter")
    teacher_topk: int = Field(16, ge=0, description="cache the teacher's top-k classes per position of every Softmax output "
                              "once (ONNX Runtime) instead of running the teacher in torch at every step; 0 = run it every step")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="optimiser of weights and activation ranges")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    learn_act_ranges: bool = Field(True, description="train activation scales/zero points (LSQ); false = keep the ranges "
                                   "initialised from data (the cheaper fused fake-quant op runs)")
    margin_weight: float = Field(0.0, ge=0.0, description="weight positions where the teacher's top-2 probabilities are "
                                 "close by up to 1 + this in the distillation loss (0 = every position alike)")
    act_range: Literal["minmax", "mse"] = Field(
        "minmax", description="activation range initialisation: minmax = global min/max over the init samples; mse = the "
        "shrunk min/max with the lowest quantization MSE on sampled values (converters/act_range.py; min/max is a candidate)")
    weight_round: Literal["gptq", "nearest"] = Field(
        "gptq", description="INT8 weight rounding: gptq = each covered layer's weights quantized one input column at a time, "
        "the rest moved to cancel the layer's output error on calibration inputs (converters/gptq.py; Conv group 1, MatMul/Gemm "
        "2-D; same INT8 grid); nearest = round each weight on its own")
    gptq_samples: int = Field(64, gt=0, description="calibration samples whose layer inputs GPTQ's statistics are taken from")
    smooth: Literal["auto", "off"] = Field(
        "auto", description="activation smoothing (weight_round gptq only): auto = per layer whose input no other quantized op "
        "reads, divide the input channels by s = max|x|^a / max|w|^(1-a) and scale the weights by s (SmoothQuant), a from "
        "smooth_alphas or none, whichever gives the lowest quantized layer output error on calibration inputs "
        "(converters/smooth.py), kept when the every-op-INT8 model is closer to FP32 with it than without on the validation "
        "samples (or when there are none); exported as a Multiply before the activation's QuantizeLinear; off = never")
    range_init: Literal["fp32", "int8"] = Field(
        "fp32", description="network the activation ranges are observed on: fp32 = the float weights (with smoothing), as "
        "the mixed-precision search's variants mostly run them (PP-OCRv4 rec, Conv.28 alone: 13 flipped positions of 256 "
        "held-out lines against 21); int8 = every weight fake-quantized, so upstream INT8 weight errors widen the ranges")
    smooth_alphas: List[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.5, 0.75, 0.85, 0.95], description="migration strengths tried per layer, each in [0, 1]")
    seed: int = 0
    threads: Optional[int] = Field(None, gt=0, description="torch threads for training (default: all cores)")

    @model_validator(mode="before")
    @classmethod
    def _lossy(cls, data: Any) -> Any:
        return lossy_budget_default(data, True)

    @property
    def search_drop(self) -> Optional[float]:
        """The drop the build-up accepts on validation: max_drop less its reserve (search_margin); None without a budget."""
        return None if self.max_drop is None else float(self.max_drop) * (1.0 - self.search_margin)

    def act_scheme(self) -> str:
        if self.activations != "auto":
            return self.activations
        return "symmetric" if self.target == "tensorrt" else "asymmetric"


def default_val_samples(class_outputs: bool, search_drop: Optional[float]) -> int:
    """Validation samples held out of QAT's training data when the config gives none.

    Models without class-distribution outputs: 64 (a continuous score). With them the task score moves by whole samples
    (lines, labels), and the build-up accepts a set at >= 1 - search_drop (QatConfig.search_drop): at 256 samples and max_drop 1 %
    that allows 1 lost line, so the one or two lines FP32 itself barely decides ruled out most ops (PP-OCRv4 rec: the
    search kept 12 ops, 42 % of the MACs, INT8). When 256 allows fewer than 3 lost samples, 768 are held out (3 lost
    at 1 %): the same search then kept 52 % of the MACs INT8, 1.62x OpenVINO FP32 against 1.38x, at 400/400 held-out
    lines (benchmarks/COMPOUND.md). Each search evaluation then scores 3x the samples."""
    if not class_outputs:
        return 64
    if search_drop is None:
        return 256
    return 256 if math.floor(256 * search_drop + 1e-9) >= 3 else 768


def runtime_of(cfg: "QatConfig") -> str:
    """The runtime that validates the QDQ exports: the target's own (OpenVINO runs a QDQ model its own way), ONNX Runtime
    for onnxruntime and tensorrt targets (no TensorRT on the host); ONNX Runtime too when OpenVINO is not installed."""
    if cfg.target == "openvino":
        import importlib.util

        if importlib.util.find_spec("openvino") is not None:
            return "openvino"
    return "onnxruntime"


def has_qdq(path: Path) -> bool:
    """True if the ONNX model already carries QuantizeLinear/DequantizeLinear nodes (a QAT or QDQ model)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _prepare(path: Path):
    """Load, give every node a unique name, and bring the opset to >= 13 (per-channel DequantizeLinear needs `axis`)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:
        model = version_converter.convert_version(model, 13)
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return model


class _ActQuant:
    """Per-tensor activation fake-quantizer with learnable scale/zero point (LSQ), ranges initialised from data."""

    def __init__(self, torch, symmetric: bool, range_method: str = "minmax", sample_k: int = 8192):
        self.torch = torch
        self.symmetric = symmetric
        self.range_method = range_method
        self.sample_k = sample_k
        self.samples: List[np.ndarray] = []
        self.range_search: Optional[Dict[str, float]] = None
        self.qmin, self.qmax = (-128, 127) if symmetric else (0, 255)
        self.mins: List[float] = []
        self.maxs: List[float] = []
        self.scale = None
        self.zero_point = None
        self.observing = True
        self.pre = None  # activation smoothing: per-channel multiplier applied before quantization (a Mul in the export)

    def init_ranges(self) -> None:
        torch = self.torch
        # the range over all init samples, not the mean of per-sample ranges: on PP-OCRv4 rec clipping outliers costs
        # lines (validation 0.766 -> 0.797 of 64 lines with global min/max; 0.656 with 99.99th percentiles)
        lo = float(np.min(self.mins)) if self.mins else 0.0
        hi = float(np.max(self.maxs)) if self.maxs else 1.0
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.range_method == "mse" and self.samples:
            from edgekit.converters.act_range import search_range

            lo, hi, mse, base = search_range(np.concatenate(self.samples), lo, hi, self.qmin, self.qmax, self.symmetric)
            self.range_search = {"mse": mse, "mse_minmax": base}
            self.samples = []
        if self.symmetric:
            scale = max(abs(lo), abs(hi)) / 127.0
            zp = 0.0
        else:
            scale = (hi - lo) / 255.0
            zp = float(np.clip(round(-lo / scale), 0, 255)) if scale > 0 else 0.0
        scale = max(scale, 1e-8)
        self.scale = torch.nn.Parameter(torch.tensor([scale], dtype=torch.float32))
        self.zero_point = torch.nn.Parameter(torch.tensor([zp], dtype=torch.float32), requires_grad=not self.symmetric)
        self.observing = False

    def __call__(self, x):
        torch = self.torch
        if not x.is_floating_point():
            return x
        if self.pre is not None:
            x = x * self.pre
        if self.observing:
            self.mins.append(float(x.detach().min()))
            self.maxs.append(float(x.detach().max()))
            if self.range_method == "mse":
                from edgekit.converters.act_range import sample_values

                self.samples.append(sample_values(x.detach().numpy(), self.sample_k, np.random.default_rng(len(self.samples))))
            return x
        # through .data: an in-place clamp of the parameter itself bumps its autograd version, and a quantizer shared
        # by two consumers (one activation feeding two convs, as in PP-OCR det) then breaks backward() ("modified by an
        # inplace operation") for the first consumer's saved tensors
        self.scale.data.clamp_(min=1e-8)
        self.zero_point.data.clamp_(self.qmin if not self.symmetric else 0, self.qmax if not self.symmetric else 0)
        if not self.scale.requires_grad:  # frozen ranges: the same rounding and clamping, STE gradient for x only
            from edgekit.converters.onnx_torch import fake_quant_per_tensor

            return fake_quant_per_tensor(x, float(self.scale.detach()), int(torch.round(self.zero_point.detach())), self.qmin, self.qmax)
        grad_factor = 1.0 / math.sqrt(max(x.numel(), 1) * self.qmax)
        return torch._fake_quantize_learnable_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax, grad_factor)

    def export(self) -> Tuple[np.ndarray, np.ndarray]:
        scale = np.array(float(self.scale.detach()), dtype=np.float32)
        zp = int(np.clip(round(float(self.zero_point.detach())), self.qmin, self.qmax))
        return scale, np.array(zp, dtype=np.int8 if self.symmetric else np.uint8)


def weight_scale(torch, w, axis: int):
    """Per-channel symmetric INT8 scale (narrow range [-127, 127]) of weight `w` along `axis`."""
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.detach().abs().amax(dim=dims) if dims else w.detach().abs()
    return torch.clamp(amax / 127.0, min=1e-12)


class _WeightQuant:
    """Per-channel symmetric INT8 weight fake-quant. With GPTQ (`offset`, `scale`): quantizes weight + offset on the fixed
    scale, which at the FP32 weight is exactly GPTQ's integers; training moves the weight around that point."""

    def __init__(self, torch, axis: int, offset=None, scale=None, smooth=None):
        self.torch = torch
        self.axis = axis
        self.offset = offset
        self.scale = scale
        self.smooth = smooth  # activation smoothing: the weight's input channels are multiplied by s before quantization
        self.quantize = True  # False while activation ranges are observed on the FP32 network (range_init: fp32)

    def __call__(self, w):
        torch = self.torch
        if self.smooth is not None:
            w = w * self.smooth
        if not self.quantize:
            return w
        if self.scale is not None:
            zp = torch.zeros(self.scale.shape, dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(w + self.offset, self.scale, zp, self.axis, -127, 127)
        scale = weight_scale(torch, w, self.axis).float()
        zp = torch.zeros(scale.shape, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zp, self.axis, -127, 127)


# ops a weighted op's output may pass through before a global pooling and still count as "feeding" it
_POOL_PASS = ("BatchNormalization", "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Identity")


def openvino_unsafe_nodes(nodes) -> List[str]:
    """Weighted ops whose output feeds a GlobalAveragePool/ReduceMean (directly or through BatchNorm/activations) that
    also feeds other ops: the squeeze-and-excitation blocks (pool -> convs -> gate -> Mul with the same tensor) of
    PP-OCRv4 det's neck. OpenVINO 2026.4's CPU plugin does not execute a QDQ graph
    there the way ONNX Runtime does: with an INT8 Conv (activation Q/DQ on its input) whose float output feeds a
    GlobalAveragePool and the SE Mul/Add, the pooled values come out near zero (relative error 0.34 on the det
    sub-graph p2o.Conv.43 -> SE -> Add; the whole QDQ det model: IoU 0.90 in OpenVINO vs 0.96 in ONNX Runtime).
    Keeping these ops FP32 is what OpenVINO then runs faithfully (0.9596 vs 0.9609); see benchmarks/COMPOUND.md."""
    producer = {o: n for n in nodes for o in n.output}
    uses: Dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    out: List[str] = []
    for n in nodes:
        if n.op_type not in ("GlobalAveragePool", "ReduceMean") or not n.input or uses.get(n.input[0], 0) < 2:
            continue  # a pooled tensor nothing else reads (a classifier's global pool) ran faithfully
        p = producer.get(n.input[0])
        while p is not None and p.op_type in _POOL_PASS and p.input:
            p = producer.get(p.input[0])
        if p is not None and p.op_type in QUANT_OPS and p.name not in out:
            out.append(p.name)
    return out


def quant_scope(module, cfg: "QatConfig") -> set:
    """Names of weighted nodes that stay FP32: `float_nodes`, plus everything from the first MatMul/Gemm with a constant
    weight on when scope is `backbone` (a CNN backbone feeding attention blocks and a linear head, like PP-OCR rec),
    plus, for OpenVINO, the ops it does not run as the QDQ graph says (`openvino_unsafe_nodes`)."""
    keep = set(cfg.float_nodes)
    if cfg.target == "openvino":
        keep |= set(openvino_unsafe_nodes(module.nodes))
    if cfg.scope == "backbone":
        weighted = [n for n in module.nodes if n.op_type in QUANT_OPS and len(n.input) >= 2 and n.input[1] in module.param_names]
        first = next((k for k, n in enumerate(weighted) if n.op_type in ("MatMul", "Gemm")), None)
        if first is not None:
            keep |= {n.name for n in weighted[first:]}
    return keep


def nodes_above(module, tensor: str) -> set:
    """Names of the nodes computable from `tensor` and constants alone (the part of the graph above a cut)."""
    env = {tensor}
    out = set()
    for node in module.nodes:
        if all((not n) or n in env or n in module.param_names or n in module.consts for n in node.input):
            env |= set(node.output)
            out.add(node.name)
    return out


def _cuts(module, tensor: str) -> bool:
    """True if every graph output can be computed from `tensor` and constants alone."""
    env = {tensor}
    for node in module.nodes:
        if all((not n) or n in env or n in module.param_names or n in module.consts for n in node.input):
            env |= set(node.output)
    return all(module.output_override.get(o, o) in env for o in module.output_names)


def tail_split(module, tail: str) -> Optional[str]:
    """The tensor above which QAT trains (`tail`: auto or a tensor name): auto = the last tensor before the first
    MatMul/Gemm with a constant weight that cuts the graph (everything after depends on it alone); None when the
    model has no such MatMul/Gemm or no such tensor (then the whole network trains)."""
    if tail != "auto":
        produced = {o for n in module.nodes for o in n.output}
        if tail not in produced:
            raise StepError(STEP, f"tail tensor '{tail}' is not produced by any node of {module.name}", hint="give a tensor name of the graph, or tail auto/off")
        if not _cuts(module, tail):
            raise StepError(STEP, f"the graph outputs of {module.name} depend on more than tensor '{tail}'",
                            hint="pick a tensor every later node depends on alone (no skip connection across it), or tail auto")
        return tail
    first = next((k for k, n in enumerate(module.nodes) if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in module.param_names), None)
    if not first:
        return None
    for k in range(first - 1, -1, -1):
        for t in module.nodes[k].output:
            if module.nodes[k].op_type not in ("Shape", "Constant") and _cuts(module, t):
                return t
    return None


def _ort_outputs(path: Path, names: List[str], feeds: List[Dict[str, np.ndarray]], threads: Optional[int], dtype=np.float32) -> List[List[np.ndarray]]:
    """Run an ONNX model on ONNX Runtime with `names` (any tensors, not only graph outputs) as outputs: per feed, the list."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for n in names:
        if n not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    out = []
    for f in feeds:
        out.append([r.astype(dtype) for r in sess.run(names, {k: f[k] for k in inputs})])
    return out


def _mse_ratio(acts) -> Optional[float]:
    """Mean over activation quantizers of (quantization MSE of the searched range) / (MSE of min/max); None = no search."""
    r = [a.range_search["mse"] / a.range_search["mse_minmax"] for a in acts.values() if a.range_search and a.range_search["mse_minmax"] > 0]
    return round(float(np.mean(r)), 4) if r else None


class _State:
    """Snapshot/restore of the trainable state (weights and activation scales/zero points) for early stopping."""

    def __init__(self, student, acts: Dict[str, "_ActQuant"]):
        self.student, self.acts = student, acts

    def save(self) -> Dict[str, Any]:
        return {"w": {k: v.detach().clone() for k, v in self.student.state_dict().items()},
                "a": {k: (a.scale.detach().clone(), a.zero_point.detach().clone()) for k, a in self.acts.items()}}

    def load(self, snap: Dict[str, Any]) -> None:
        import torch

        self.student.load_state_dict(snap["w"])
        with torch.no_grad():
            for k, (sc, zp) in snap["a"].items():
                self.acts[k].scale.copy_(sc)
                self.acts[k].zero_point.copy_(zp)


def _openvino_outputs(path: Path, feeds: List[Dict[str, np.ndarray]], threads: int, hint: Optional[str] = None) -> List[List[np.ndarray]]:
    """Run a QDQ ONNX model the way the openvino step + deploy run it: converted to an IR (FakeQuantize -> INT8
    kernels) and compiled for CPU with deploy's session options for an INT8 artifact (core/runtimes.py), and with
    `hint` as its recorded inference_precision_hint when given."""
    import openvino as ov

    from edgekit.core.runtimes import _openvino_options

    meta = {"inference_precision_hint": hint} if hint else {}
    opts = {k.upper(): v for k, v in _openvino_options("int8", meta).items()}
    compiled = ov.Core().compile_model(ov.convert_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": int(threads), **opts})
    names = [i.get_any_name() for i in compiled.inputs]
    req = compiled.create_infer_request()
    out = []
    for f in feeds:
        res = req.infer({n: f[n] for n in names})
        out.append([np.array(res[o]) for o in compiled.outputs])
    return out


def op_macs(student, quantized: Sequence[Dict[str, Any]], feed: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Multiply-accumulates per inference of each quantized op, from its input shape on one sample (one forward)."""
    attrs = {n.name: (n, a) for n, a in zip(student.nodes, student.node_attrs)}
    out: Dict[str, float] = {}

    def shape_of(q):
        node, a = attrs[q["node"]]
        w = tuple(student.value_of(q["weight"]).shape)

        def hook(x):
            xs = tuple(x.shape)
            if node.op_type in ("Conv", "ConvTranspose") and len(xs) >= 3 and len(w) == len(xs):
                spatial = xs[2:]
                k = w[2:]
                g = int(a.get("group", 1))
                if node.op_type == "ConvTranspose":
                    out[q["node"]] = float(np.prod(xs)) * (w[1] * float(np.prod(k)))
                    return x
                pads = list(a.get("pads", [0] * (2 * len(k))))
                strides = list(a.get("strides", [1] * len(k)))
                dil = list(a.get("dilations", [1] * len(k)))
                o = [max(1, (spatial[i] + pads[i] + pads[i + len(k)] - dil[i] * (k[i] - 1) - 1) // strides[i] + 1) for i in range(len(k))]
                out[q["node"]] = float(xs[0] * w[0] * np.prod(o)) * (xs[1] // g) * float(np.prod(k))
            elif len(w) == 2 and len(xs) >= 1:
                n_out = w[1] if q["axis"] == 1 else w[0]
                out[q["node"]] = float(np.prod(xs)) * n_out
            return x
        return hook

    student.observe({(q["node"], 0): shape_of(q) for q in quantized}, [[feed]])
    return out


class _Validator:
    """Scores QDQ exports on validation samples held out of the training data (never the search's eval data), on the
    plan's runtime (OpenVINO for an openvino target: the IR it builds from the QDQ model; ONNX Runtime otherwise): the
    task metric against the FP32 model's outputs when the model has one, else mean cosine. For Softmax outputs it also
    measures the damage proxy (edgekit.quality.sensitivity.distribution_damage) the build-up search ranks ops by."""

    def __init__(self, step, artifact, model, student, acts, quantized, val_feeds, ctx, cfg, say, dist_outputs=()):
        from edgekit.quality.fidelity import predict

        self.step, self.model, self.student, self.acts, self.quantized = step, model, student, acts, quantized
        self.feeds, self.ctx, self.cfg, self.say = val_feeds, ctx, cfg, say
        self.threads = cfg.threads or 1
        self.ref = predict(artifact, val_feeds, threads=self.threads)
        self.n = 0
        self.metric = "task score" if ctx.task_metric is not None else "mean cosine"
        self.runtime = runtime_of(cfg)
        self.dist_outputs = list(dist_outputs)  # indices of the outputs that are class distributions (Softmax)
        self.hint: Optional[str] = None  # OpenVINO inference_precision_hint the exports are validated (and deployed) with
        self.source = artifact.path

    def _outputs(self, path: Path):
        from edgekit.quality.fidelity import predict

        if self.runtime == "openvino":
            return _openvino_outputs(path, self.feeds, self.threads, self.hint)
        return predict(load_artifact(path, precision="int8"), self.feeds, threads=self.threads)

    def _cosine(self, outs) -> float:
        from edgekit.core.steps import FidelityBudget
        from edgekit.quality.fidelity import compare

        return float(compare(self.ref, outs, FidelityBudget(min_cosine=0.0)).cosine_mean)

    def _score(self, outs) -> float:
        if self.ctx.task_metric is not None:
            return float(self.ctx.task_metric(self.ref, outs))
        return self._cosine(outs)

    def _damage(self, outs) -> Dict[str, float]:
        from edgekit.quality.sensitivity import distribution_damage

        k = self.dist_outputs
        return distribution_damage([[r[i] for i in k] for r in self.ref], [[o[i] for i in k] for o in outs])

    def score_path(self, path: Path) -> float:
        return self._score(self._outputs(path))

    def measure_path(self, path: Path) -> Tuple[float, float]:
        """(task score, damage proxy). With Softmax outputs the proxy is the share of positions whose top-1 class differs
        from FP32's, plus 0.001 x the mean KL as a tie-break (on PP-OCR rec, 320 validation lines, ops quantized one at a
        time: Spearman 0.93 with lines identical for flips, 0.84 for KL alone, which misses the CTC head's flips at
        near-ties); else 1 - mean cosine."""
        outs = self._outputs(path)
        if self.dist_outputs:
            d = self._damage(outs)
            return self._score(outs), d["flip_rate"] + 1e-3 * d["kl"]
        cos = self._cosine(outs)
        return (float(self.ctx.task_metric(self.ref, outs)) if self.ctx.task_metric is not None else cos), 1.0 - cos

    def measure_all(self) -> Dict[str, float]:
        """Score and damage of the export with every op of `quantized` INT8, float parts at f32 on OpenVINO."""
        path, hint = self._path(), self.hint
        QatStep.export_subset(self.model, self.student, self.acts, self.quantized, path)
        self.hint = "f32" if self.runtime == "openvino" else hint
        try:
            score, damage = self.measure_path(path)
        finally:
            self.hint = hint
            path.unlink(missing_ok=True)
        return {"score": round(float(score), 5), "damage": round(float(damage), 6)}

    def _path(self) -> Path:
        self.n += 1
        d = Path(self.ctx.work_dir) / "qat-val"
        d.mkdir(exist_ok=True)
        return d / f"v{self.n}.onnx"

    def score_current(self) -> float:
        path = self._path()
        QatStep.export_subset(self.model, self.student, self.acts, self.quantized, path)
        try:
            return self.score_path(path)
        finally:
            path.unlink(missing_ok=True)

    def choose_hint(self, threshold: float) -> Dict[str, Any]:
        """OpenVINO target, float_precision: decide the inference_precision_hint of the INT8 model's float parts. auto:
        the FP32 model itself under OpenVINO's default hint (bf16 on CPUs that have it) is scored on the validation
        samples; when that alone misses `threshold`, every export is validated, and the artifact deployed, with f32."""
        mode = self.cfg.float_precision
        if self.runtime != "openvino":
            return {"float_precision": "not openvino"}
        if mode != "auto":
            self.hint = "f32" if mode == "f32" else None
            return {"float_precision": mode, "hint": self.hint}
        self.hint = None
        default = self.score_path(self.source)
        self.hint = "f32" if default < threshold else None
        self.say(f"qat: the FP32 model under OpenVINO's default inference precision scores {default:.4f} on validation "
                 f"({'below' if self.hint else 'within'} {threshold:.4f}): float parts of the INT8 model run "
                 f"{'f32 (inference_precision_hint recorded in the artifact)' if self.hint else 'at the default precision'}")
        return {"float_precision": "auto", "fp32_default_hint_score": round(default, 5), "hint": self.hint}

    def mixed_precision(self, mode: str) -> Dict[str, Any]:
        """Bounded mixed-precision search over the weighted ops before training (edgekit.quality.sensitivity): `build-up`
        quantizes the longest least-damage-first set of ops that meets the budget with the search margin; `greedy` keeps
        the fewest ops in FP32 that bring the validation score within max_drop; when none does, the best found is kept."""
        from edgekit.quality.sensitivity import build_up_quantized, keep_sensitive_nodes_in_float

        names = [q["node"] for q in self.quantized]
        by_name = {q["node"]: q for q in self.quantized}

        def build(excluded: List[str]) -> Path:
            path = self._path()
            keep = set(excluded)
            QatStep.export_subset(self.model, self.student, self.acts, [by_name[n] for n in names if n not in keep], path)
            return path

        def scored(fn):
            def run(path: Path):
                try:
                    return fn(path)
                finally:
                    path.unlink(missing_ok=True)
            return run

        t0 = time.perf_counter()
        max_drop = float(self.cfg.max_drop)
        weights: Optional[Dict[str, float]] = None
        if mode == "build-up":
            drop = float(self.cfg.search_drop)
            hint_rec = self.choose_hint(1.0 - drop)
            evals = self.cfg.max_search_evals or len(names) + 16
            self.say(f"qat: mixed-precision build-up over {len(names)} weighted ops on {len(self.feeds)} validation samples "
                     f"(≤ {evals} evaluations, ≤ {self.cfg.search_budget_s:.0f} s; ops ranked by the damage each does alone, accepted at "
                     f"{self.metric} ≥ {1 - drop:.4f} in {self.runtime})")
            weights = op_macs(self.student, self.quantized, self.feeds[0]) if self.cfg.search_weight == "macs" else None
            if weights:
                total = sum(weights.values()) or 1.0
                top = sorted(weights, key=lambda n: -weights[n])[:3]
                self.say("qat: ops ranked by damage per multiply-accumulate moved to INT8 (costliest: "
                         + ", ".join(f"{n} {weights[n] / total:.0%}" for n in top) + ")")
            res = build_up_quantized(names, build, scored(self.measure_path), max_drop=drop, max_evaluations=evals,
                                     max_seconds=self.cfg.search_budget_s, progress=self.say, weights=weights or None)
        else:
            drop, hint_rec = max_drop, self.choose_hint(1.0 - max_drop) if self.cfg.float_precision != "auto" else {"float_precision": "default"}
            evals = self.cfg.max_search_evals or 14
            self.say(f"qat: mixed-precision search over {len(names)} weighted ops on {len(self.feeds)} validation samples "
                     f"(≤ {evals} evaluations, {self.metric} in {self.runtime})")
            res = keep_sensitive_nodes_in_float(names, build, scored(self.score_path), max_drop=drop, max_evaluations=evals, progress=self.say)
        full = next((v for v in res.variants if not v.excluded_nodes), None)
        pick = res.chosen or res.best
        if len(pick.excluded_nodes) >= len(names):
            pick = full or pick
        rec = {"search": mode, "full_int8_score": full.score if full else None, "score": pick.score, "kept_float": list(pick.excluded_nodes),
               "quantized": [n for n in names if n not in set(pick.excluded_nodes)],
               "met_budget": res.chosen is not None, "accepted_at": round(1.0 - drop, 6), "evaluations": len(res.variants),
               "seconds": round(time.perf_counter() - t0, 1), "stop_reason": res.stop_reason, "samples": len(self.feeds),
               "metric": self.metric, "proxy": "flipped top-1 positions (+ 0.001 x KL) vs FP32" if (mode == "build-up" and self.dist_outputs) else
               ("1 - cosine" if mode == "build-up" else None), "damage_alone": res.sensitivity if mode == "build-up" else None,
               "sensitivity": res.sensitivity if mode != "build-up" else None, **hint_rec,
               "weight": self.cfg.search_weight if mode == "build-up" else None,
               "int8_macs_share": round(sum(weights.get(n, 0.0) for n in names if n not in set(pick.excluded_nodes)) / (sum(weights.values()) or 1.0), 4) if weights else None,
               "variants": [{"phase": v.phase, "float": len(v.excluded_nodes), "score": round(v.score, 5),
                             **({"damage": round(v.details["damage"], 8)} if "damage" in v.details else {})} for v in res.variants]}
        self.say(f"qat: mixed precision keeps {len(pick.excluded_nodes)} of {len(names)} weighted ops in FP32: validation "
                 f"{self.metric} {rec['full_int8_score']} (all INT8) -> {pick.score:.4f} ({rec['seconds']:.0f} s, {rec['evaluations']} evaluations)")
        return rec


class QatStep(Step):
    """Quantization-aware training (fake-quant + distillation from FP32 within a time budget) -> QDQ ONNX."""

    name = STEP
    summary = "Quantization-aware training of an ONNX model for the target's INT8 scheme (distilled from FP32, time-boxed) -> QDQ ONNX"
    accepts = ("onnx",)
    produces = "onnx"
    Config = QatConfig
    requires = (("torch", "torch"),)
    source_modules = ("edgekit.converters.onnx_torch", "edgekit.converters.finetune", "edgekit.converters.gptq")

    def run(self, artifact: Artifact, config: StepConfig, ctx: StepContext) -> Artifact:
        cfg = config if isinstance(config, QatConfig) else QatConfig.model_validate(config.model_dump())
        torch = require("torch", "torch", "quantization-aware training")
        from edgekit.converters.onnx_torch import OnnxModule, weight_axis

        if ctx.calib_data is None:
            raise CalibrationError(
                f"step 'qat': training {artifact.path.name} needs calibration data, and none was given",
                hint="pass --calib DIR (images or .npz/.npy feeds matching the model inputs); no labels are needed",
            )
        if artifact.path.suffix == ".onnx" and has_qdq(artifact.path):
            raise StepError(STEP, f"{artifact.path.name} is already quantized (it has QuantizeLinear/DequantizeLinear nodes)",
                            hint="give the FP32 model")
        say = ctx.progress or (lambda m: None)
        torch.manual_seed(cfg.seed)
        threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            return self._run(torch, OnnxModule, weight_axis, artifact, cfg, ctx, say)
        finally:
            torch.set_num_threads(threads_before)

    def _run(self, torch, OnnxModule, weight_axis, artifact, cfg: QatConfig, ctx: StepContext, say) -> Artifact:
        t_start = time.perf_counter()
        import onnx

        from edgekit.converters.finetune import batches, topk_logprobs, train
        from edgekit.converters.onnx_torch import logit_outputs

        logit_map = logit_outputs(onnx.load(str(artifact.path), load_external_data=False))  # before the opset change wraps Softmax
        model = _prepare(artifact.path)
        label = artifact.path.name
        if cfg.teacher:
            tpath = Path(cfg.teacher)
            if not tpath.is_file():
                raise StepError(STEP, f"teacher model {tpath} does not exist", hint="give the path of the FP32 source ONNX model")
            teacher = OnnxModule(onnx.load(str(tpath)), tpath.name).eval()
            teacher_logits = logit_outputs(onnx.load(str(tpath), load_external_data=False))
            teacher.output_override = dict(teacher_logits)
            student_inputs = {i.name for i in model.graph.input}
            if len(teacher.output_names) != len(model.graph.output) or not set(teacher.input_names) <= student_inputs:
                raise StepError(STEP, f"teacher {tpath.name} has other inputs/outputs than {label}", hint="the teacher must be the same model before compression")
        else:
            teacher = OnnxModule(model, label).eval()
            teacher.output_override = dict(logit_map)
        student = OnnxModule(model, label).eval()  # eval: BatchNorm keeps its running statistics (frozen)
        student.fast = teacher.fast = cfg.fast
        for p in teacher.parameters():
            p.requires_grad_(False)
        student.output_override = dict(logit_map)
        logits = [o in logit_map for o in student.output_names]

        symmetric = cfg.act_scheme() == "symmetric"
        acts: Dict[str, _ActQuant] = {}
        quantized: List[Dict[str, Any]] = []
        kept_float = quant_scope(student, cfg)
        for node, attrs in zip(student.nodes, student.node_attrs):
            if node.op_type not in QUANT_OPS or len(node.input) < 2 or node.input[1] not in student.param_names:
                continue  # only ops with a constant weight (attention's activation x activation MatMuls stay float)
            if node.name in kept_float:
                continue
            w = student.value_of(node.input[1])
            axis = weight_axis(node, attrs, w.dim())
            act = acts.setdefault(node.input[0], _ActQuant(torch, symmetric, cfg.act_range))
            student.hooks[(node.name, 0)] = act
            student.hooks[(node.name, 1)] = _WeightQuant(torch, axis)
            quantized.append({"node": node.name, "op": node.op_type, "weight": node.input[1], "axis": axis, "act": node.input[0]})
        if not quantized:
            raise StepError(STEP, f"{label} has no Conv/ConvTranspose/Gemm/MatMul with a constant weight to quantize",
                            hint="QAT needs weighted layers; deploy this model in FP32")

        names = student.input_names
        n_val_want = cfg.val_samples if cfg.val_samples is not None else default_val_samples(any(logits), cfg.search_drop)
        pool = [{k: np.asarray(v) for k, v in f.items()} for f in ctx.calib_data(cfg.train_samples + n_val_want)]
        if not pool:
            raise CalibrationError(f"step 'qat': the calibration data of {label} is empty", hint="pass --calib DIR with at least one sample")
        # the full validation set when the calibration data holds it beside the training samples, else a quarter of it
        n_val = n_val_want if len(pool) >= cfg.train_samples + n_val_want else min(n_val_want, len(pool) // 4)
        feeds, val_feeds = (pool[:-n_val], pool[-n_val:]) if n_val else (pool, [])
        missing = [n for n in names if n not in feeds[0]]
        if missing:
            raise CalibrationError(f"step 'qat': calibration feeds lack input(s) {missing} of {label}", hint="give feeds for every model input")
        gptq_rec = None
        if cfg.weight_round == "gptq":
            # before the activation ranges are initialised: smoothing changes what the activation quantizers see
            from edgekit.converters.gptq import gptq_offsets, smooth_views

            t_g = time.perf_counter()
            readers: Dict[str, int] = {}
            for q in quantized:
                readers[q["act"]] = readers.get(q["act"], 0) + 1
            # Conv only: OpenVINO 2026.4's CPU plugin with one inference thread runs Mul -> Q/DQ -> MatMul (a FullyConnected)
            # other than ONNX Runtime and than itself on two threads (tests/converters/test_smooth.py)
            smoothable = {q["node"] for q in quantized if readers[q["act"]] == 1 and q["op"] == "Conv"} if cfg.smooth == "auto" else set()
            found = gptq_offsets(torch, student, quantized, feeds[: cfg.gptq_samples], names, progress=say,
                                 smooth_alphas=cfg.smooth_alphas if smoothable else (), smoothable=smoothable,
                                 act_qrange=(-128, 127) if symmetric else (0, 255))
            node_of = {n.name: n for n in student.nodes}

            def apply(smoothed: bool) -> Dict[str, int]:
                """Install GPTQ's weights, with the chosen activation smoothing or without it; {alpha: ops} applied."""
                alphas: Dict[str, int] = {}
                for q in quantized:
                    for k in ("w_offset", "w_scale", "w_smooth", "smooth_alpha"):
                        q.pop(k, None)
                    acts[q["act"]].pre = None
                    r = found.get(q["node"])
                    off_sc = None if r is None else ((r.offset, r.scale) if (smoothed or r.smooth is None) else r.plain)
                    if off_sc is None:
                        student.hooks[(q["node"], 1)] = _WeightQuant(torch, q["axis"])
                        continue
                    q["w_offset"], q["w_scale"] = off_sc
                    wmul = None
                    if smoothed and r.smooth is not None:
                        wv, xv = smooth_views(node_of[q["node"]], r.smooth, q["axis"], r.offset.ndim)
                        q["w_smooth"], q["smooth_alpha"] = wv, r.alpha
                        wmul = torch.from_numpy(wv)
                        acts[q["act"]].pre = torch.from_numpy(xv)
                        alphas[f"{r.alpha:g}"] = alphas.get(f"{r.alpha:g}", 0) + 1
                    student.hooks[(q["node"], 1)] = _WeightQuant(torch, q["axis"], torch.from_numpy(off_sc[0]), torch.from_numpy(off_sc[1]), wmul)
                return alphas

            alphas = apply(True)
            ratios = [r.e_rtn / r.e_gptq for r in found.values() if r.e_gptq > 0]
            gptq_rec = {"ops": len(found), "samples": min(cfg.gptq_samples, len(feeds)), "seconds": round(time.perf_counter() - t_g, 1),
                        "output_error_ratio_median": round(float(np.median(ratios)), 2) if ratios else None,
                        "smoothed": {"candidates": len(smoothable), "ops": sum(alphas.values()), "alphas": alphas} if cfg.smooth == "auto" else None}
        say(f"qat: {len(quantized)} weighted ops, {len(acts)} activation quantizers ({'symmetric s8' if symmetric else 'asymmetric u8'}); "
            f"initialising ranges on {min(cfg.init_samples, len(feeds))} samples")

        def init_ranges() -> None:
            for a in acts.values():
                a.observing, a.mins, a.maxs, a.samples = True, [], [], []
            wq = [h for k, h in student.hooks.items() if k[1] == 1 and isinstance(h, _WeightQuant)]
            for h in wq:
                h.quantize = cfg.range_init == "int8"
            try:
                with torch.no_grad():
                    for f in feeds[: cfg.init_samples]:
                        student(*[torch.from_numpy(np.ascontiguousarray(f[n])) for n in names])
            finally:
                for h in wq:
                    h.quantize = True
            for a in acts.values():
                a.init_ranges()
                if not cfg.learn_act_ranges:
                    a.scale.requires_grad_(False)
                    a.zero_point.requires_grad_(False)

        init_ranges()
        dist_outputs = [k for k, is_logit in enumerate(logits) if is_logit]
        validator = _Validator(self, artifact, model, student, acts, quantized, val_feeds, ctx, cfg, say, dist_outputs) if val_feeds else None
        if gptq_rec and gptq_rec["smoothed"] and gptq_rec["smoothed"]["ops"] and validator is not None:
            # the per-layer choice lowers each layer's own quantized output error; whether the whole INT8 model is closer
            # to FP32 with it is checked on validation (PP-OCRv4 det at 256x256: IoU 0.9457 with it, 0.9495 without)
            with_s = validator.measure_all()
            kept = {k: (a.pre, a.scale, a.zero_point) for k, a in acts.items()}
            apply(False)
            init_ranges()
            without = validator.measure_all()
            gptq_rec["smoothed"].update({"validation_with": with_s, "validation_without": without, "kept": with_s["damage"] < without["damage"]})
            if gptq_rec["smoothed"]["kept"]:
                apply(True)
                for k, a in acts.items():
                    a.pre, a.scale, a.zero_point = kept[k]
            say(f"qat: activation smoothing {'kept' if gptq_rec['smoothed']['kept'] else 'dropped'}: every op INT8, validation "
                f"{validator.metric} {with_s['score']:.4f} with it, {without['score']:.4f} without (damage {with_s['damage']:.3g} vs {without['damage']:.3g})")
        mixed_rec = None
        if validator is not None and cfg.mixed == "auto" and cfg.max_drop is not None:
            mode = cfg.search if cfg.search != "auto" else ("build-up" if dist_outputs else "greedy")
            mixed_rec = validator.mixed_precision(mode)
            if mixed_rec.get("kept_float"):
                kept = set(mixed_rec["kept_float"])
                for q in [q for q in quantized if q["node"] in kept]:
                    student.hooks.pop((q["node"], 0), None)
                    student.hooks.pop((q["node"], 1), None)
                quantized = [q for q in quantized if q["node"] not in kept]
                used = {q["act"] for q in quantized}
                acts = {k: a for k, a in acts.items() if k in used}
                validator.quantized, validator.acts = quantized, acts
            if not quantized:
                raise StepError(STEP, f"the mixed-precision search of {label} kept every weighted op in FP32", hint="deploy this model in FP32")

        split = tail_split(student, cfg.tail) if cfg.tail != "off" else None
        if split is not None and cfg.tail == "auto" and not any(q["node"] in nodes_above(student, split) for q in quantized):
            # e.g. rec after a mixed-precision search that kept the neck/head FP32: training only float layers above the
            # cut cannot recover what the INT8 ops below lost (done-when run: 573 such steps, validation 0.984 -> 0.953)
            say(f"qat: no quantized op is above {split}: training every quantized op instead of the layers above it")
            split = None
        teacher_cache = None
        tail_rec = None
        skip_train = cfg.train == "off" or (cfg.train == "auto" and bool(mixed_rec and mixed_rec["met_budget"]))
        if skip_train:
            split = None
            why = "train: off" if cfg.train == "off" else f"the mixed-precision model already meets the budget on validation ({mixed_rec['score']:.4f})"
            say(f"qat: no training ({why}): exporting the mixed-precision model")
            trained = {"steps": 0, "train_s": 0.0, "loss_first": None, "loss_last": None, "skipped": why}
        elif split is not None:
            # train the part above `split` on cached inputs: features of the quantized lower part, teacher outputs
            t_cache = time.perf_counter()
            tpath = Path(cfg.teacher) if cfg.teacher else artifact.path
            t_outs = [teacher.output_override.get(o, o) for o in teacher.output_names]
            lower = Path(ctx.work_dir) / "qat-lower.onnx"
            QatStep.export_subset(model, student, acts, quantized, lower)
            say(f"qat: training the layers above {split} on {len(feeds)} samples: caching that tensor from the quantized model "
                f"and the teacher's outputs (ONNX Runtime)")
            feat = [r[0] for r in _ort_outputs(lower, [split], feeds, cfg.threads)]
            lower.unlink(missing_ok=True)
            tout = _ort_outputs(tpath, t_outs, feeds, cfg.threads, dtype=np.float16)
            cache_s = round(time.perf_counter() - t_cache, 1)
            tail_nodes = nodes_above(student, split)
            tail_params = {student.param_names[n] for node in student.nodes if node.name in tail_nodes for n in node.input if n in student.param_names}
            for key, prm in student.params.items():
                prm.requires_grad_(key in tail_params)
            tail_acts = {q["act"] for q in quantized if q["node"] in tail_nodes}
            trainable_acts = {k: a for k, a in acts.items() if k in tail_acts}
            for k, a in acts.items():
                if k not in tail_acts:
                    a.scale.requires_grad_(False)
                    a.zero_point.requires_grad_(False)
            groups = self._groups([student.params[k] for k in sorted(tail_params)], trainable_acts, cfg)
            s_outs = [student.output_override.get(o, o) for o in student.output_names]
            cached = [{"__split": f, **{f"__t{k}": t[k] for k in range(len(t_outs))}} for f, t in zip(feat, tout)]
            cnames = ["__split"] + [f"__t{k}" for k in range(len(t_outs))]
            tail_rec = {"split": split, "ops": sum(q["node"] in tail_nodes for q in quantized), "params": len(tail_params),
                        "cache_s": cache_s, "samples": len(cached)}
            say(f"qat: {tail_rec['ops']} of {len(quantized)} quantized ops are above {split} ({cache_s:.0f} s to cache)")
            trained = train(torch, STEP, label, lambda b: student.run_from({split: b[0]}, s_outs), lambda b: [t.float() for t in b[1:]],
                            groups, batches(cached, cnames, cfg.batch_size, np.random.default_rng(cfg.seed)), logits,
                            budget_s=cfg.train_budget_s, max_steps=cfg.max_steps, say=say, what="QAT",
                            validate=validator.score_current if validator is not None else None, validate_every_s=cfg.validate_every_s,
                            state=_State(student, acts) if validator is not None else None, hard_weight=cfg.hard_label_weight,
                            margin_weight=cfg.margin_weight, optimizer=cfg.optimizer, momentum=cfg.momentum)
        else:
            groups = self._groups(list(student.parameters()), acts, cfg)
            t_names = teacher.input_names
            train_feeds, bnames = feeds, list(names)
            if cfg.teacher_topk and any(logits):
                # the teacher's outputs once (ONNX Runtime), its top-k classes per position for Softmax outputs: a step is
                # then the student's forward/backward only
                t_cache = time.perf_counter()
                tpath = Path(cfg.teacher) if cfg.teacher else artifact.path
                t_outs = [teacher.output_override.get(o, o) for o in teacher.output_names]
                say(f"qat: caching the teacher's outputs on {len(feeds)} samples (ONNX Runtime, top-{cfg.teacher_topk} classes)")
                tout = _ort_outputs(tpath, t_outs, feeds, cfg.threads)
                train_feeds = []
                for f, outs in zip(feeds, tout):
                    d = {n: f[n] for n in names}
                    for k, (o, is_logit) in enumerate(zip(outs, logits)):
                        if is_logit:
                            d[f"__ti{k}"], d[f"__tl{k}"] = topk_logprobs(o, cfg.teacher_topk)
                        else:
                            d[f"__to{k}"] = o
                    train_feeds.append(d)
                tkeys = [[f"__ti{k}", f"__tl{k}"] if is_logit else [f"__to{k}"] for k, is_logit in enumerate(logits)]
                bnames = list(names) + [x for ks in tkeys for x in ks]
                teacher_cache = {"topk": cfg.teacher_topk, "samples": len(train_feeds), "cache_s": round(time.perf_counter() - t_cache, 1)}
                n_in = len(names)

                def cached_teacher(b):
                    out, j = [], n_in
                    for ks in tkeys:
                        out.append((b[j], b[j + 1]) if len(ks) == 2 else b[j])
                        j += len(ks)
                    return out

                student_fn, teacher_fn = (lambda b: student(*b[:n_in])), cached_teacher
            else:
                student_fn, teacher_fn = (lambda b: student(*b)), (lambda b: teacher(*[b[names.index(n)] for n in t_names]))
            trained = train(torch, STEP, label, student_fn, teacher_fn, groups,
                            batches(train_feeds, bnames, cfg.batch_size, np.random.default_rng(cfg.seed)), logits,
                            budget_s=cfg.train_budget_s, max_steps=cfg.max_steps, say=say, what="QAT",
                            validate=validator.score_current if validator is not None else None, validate_every_s=cfg.validate_every_s,
                            state=_State(student, acts) if validator is not None else None, hard_weight=cfg.hard_label_weight,
                            margin_weight=cfg.margin_weight, optimizer=cfg.optimizer, momentum=cfg.momentum)
        step, train_s = trained["steps"], trained["train_s"]

        out_path = Path(ctx.work_dir) / (Path(artifact.path).stem + ".qat.onnx")
        n_q = self._export(model, student, acts, quantized, out_path)
        record = {
            "target": cfg.target, "activations": "symmetric s8 per tensor" if symmetric else "asymmetric u8 per tensor",
            "weights": "symmetric s8 per output channel (narrow range)", "quantized_ops": n_q,
            "activation_quantizers": len(acts), "steps": step, "batch": cfg.batch_size, "train_samples": len(feeds),
            "train_s": train_s, "total_s": round(time.perf_counter() - t_start, 1), "budget_s": cfg.train_budget_s,
            "loss_first": trained["loss_first"], "loss_last": trained["loss_last"],
            "distilled": ("logits before Softmax (KL" + (f" + {cfg.hard_label_weight:g} x cross-entropy on the teacher's top-1)" if cfg.hard_label_weight else ")")
                          if any(logits) else "outputs (variance-normalised MSE)"),
            "trained": trained.get("skipped") and f"nothing: {trained['skipped']}" or (f"layers above {split} (cached inputs)" if split else "every quantized op"), "tail": tail_rec,
            "val_samples": len(val_feeds), "validation": trained.get("validation"), "best_step": trained.get("best_step"),
            "mixed_precision": mixed_rec, "validated_with": validator.runtime if validator is not None else None,
            "openvino_kept_float": sorted(set(openvino_unsafe_nodes(student.nodes)) - set(cfg.float_nodes)) if cfg.target == "openvino" else [],
            "optimizer": cfg.optimizer, "lr": cfg.lr, "learn_act_ranges": cfg.learn_act_ranges,
            "act_range": cfg.act_range, "act_range_mse_ratio": _mse_ratio(acts), "weight_round": cfg.weight_round, "gptq": gptq_rec,
            "fast": cfg.fast, "teacher_cache": teacher_cache, "hard_label_weight": cfg.hard_label_weight, "margin_weight": cfg.margin_weight,
        }
        ctx.report["qat"] = record
        if trained.get("skipped"):
            ctx.note(f"qat: not trained ({trained['skipped']}); {n_q} ops quantized for {cfg.target}")
        else:
            ctx.note(f"qat: trained {step} steps in {train_s:.0f} s (budget {cfg.train_budget_s:.0f} s); distillation loss "
                     f"{record['loss_first']:.5f} -> {record['loss_last']:.5f}; {n_q} ops quantized for {cfg.target}")
        meta: Dict[str, Any] = {"quantized": "qdq", "qat": record}
        hint = validator.hint if validator is not None else None
        if hint:
            meta["inference_precision_hint"] = hint  # the float parts were validated at f32: run them so (core/runtimes.py)
            ctx.note(f"qat: the INT8 model's float parts run with OpenVINO's {hint} inference hint (recorded in the artifact)")
        return load_artifact(out_path, precision="int8", metadata=meta)

    @staticmethod
    def _groups(params, acts: Dict[str, "_ActQuant"], cfg: QatConfig) -> List[Dict[str, Any]]:
        # Adam's step is absolute: a scale's learning rate is relative to its own size (scales span 1e-4..1e0 here)
        groups: List[Dict[str, Any]] = [{"params": list(params), "lr": cfg.lr}]
        for a in acts.values():
            if not a.scale.requires_grad:
                continue  # frozen ranges (learn_act_ranges false, or below the tail's cut)
            groups.append({"params": [a.scale], "lr": cfg.lr_quant * float(a.scale.detach())})
            if a.zero_point.requires_grad:
                groups.append({"params": [a.zero_point], "lr": cfg.lr_quant * 10.0})
        return groups

    @staticmethod
    def export_subset(model, student, acts, quantized, out_path: Path) -> int:
        """`_export` on a copy of `model`, so the graph can be exported again (validation checkpoints, mixed search)."""
        import onnx

        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        used = {q["act"] for q in quantized}
        return QatStep._export(copy, student, {k: a for k, a in acts.items() if k in used}, quantized, out_path)

    @staticmethod
    def _export(model, student, acts: Dict[str, "_ActQuant"], quantized: List[Dict[str, Any]], out_path: Path) -> int:
        """Write the trained weights into the graph: int8 weights + DequantizeLinear, Q/DQ pairs on activations."""
        import onnx
        import torch
        from onnx import helper, numpy_helper

        from edgekit.core.fsutil import atomic_write_bytes

        trained = student.trained_weights()
        graph = model.graph
        qweights = {q["weight"]: q for q in quantized}
        consumers: Dict[str, List[str]] = {}
        for node in graph.node:
            for i in node.input:
                consumers.setdefault(i, []).append(node.name)
        new_inits = []
        dq_nodes: Dict[str, Any] = {}
        for wname, arr in trained.items():
            q = qweights.get(wname)
            if q is None or len(consumers.get(wname, [])) != 1:
                new_inits.append(numpy_helper.from_array(arr.astype(np.float32), wname))
                qweights.pop(wname, None)
                continue
            axis = q["axis"]
            if "w_scale" in q:  # GPTQ: the weight (x smoothing) + its offset on GPTQ's fixed scale (= GPTQ's integers when untrained)
                scale = np.asarray(q["w_scale"], dtype=np.float32)
                arr = arr * q.get("w_smooth", 1.0) + q["w_offset"]
            else:
                scale = weight_scale(torch, torch.from_numpy(arr), axis).numpy().astype(np.float32)
            shape = [1] * arr.ndim
            shape[axis] = -1
            wq = np.clip(np.round(arr / scale.reshape(shape)), -127, 127).astype(np.int8)
            new_inits += [numpy_helper.from_array(wq, wname + "_q"), numpy_helper.from_array(scale, wname + "_scale"),
                          numpy_helper.from_array(np.zeros(scale.shape, np.int8), wname + "_zp")]
            dq_nodes[q["node"]] = helper.make_node("DequantizeLinear", [wname + "_q", wname + "_scale", wname + "_zp"], [wname + "_dq"],
                                                   name=wname + "_DequantizeLinear", axis=axis)
        act_nodes: Dict[str, List[Any]] = {}
        for tname, a in acts.items():
            s, zp = a.export()
            key = tname.replace("/", "_")
            new_inits += [numpy_helper.from_array(s, key + "_act_scale"), numpy_helper.from_array(zp, key + "_act_zp")]
            src = tname
            act_nodes[tname] = []
            if a.pre is not None:  # activation smoothing: x x 1/s per channel, then quantized (the weights carry s)
                new_inits.append(numpy_helper.from_array(a.pre.numpy().astype(np.float32), key + "_smooth"))
                src = key + "_smoothed"
                act_nodes[tname].append(helper.make_node("Mul", [tname, key + "_smooth"], [src], name=key + "_Smooth"))
            act_nodes[tname] += [
                helper.make_node("QuantizeLinear", [src, key + "_act_scale", key + "_act_zp"], [key + "_act_q"], name=key + "_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [key + "_act_q", key + "_act_scale", key + "_act_zp"], [key + "_act_dq"], name=key + "_act_DequantizeLinear"),
            ]
        quant_nodes = {q["node"]: q for q in quantized}
        emitted = set()
        nodes = []
        for node in graph.node:
            if node.op_type == "Constant" and node.output[0] in trained:
                continue  # replaced by an initializer (trained float or int8 + scale)
            q = quant_nodes.get(node.name)
            if q is not None:
                if q["act"] not in emitted:
                    nodes += act_nodes[q["act"]]
                    emitted.add(q["act"])
                node.input[0] = q["act"].replace("/", "_") + "_act_dq"
                if node.name in dq_nodes:
                    nodes.append(dq_nodes[node.name])
                    node.input[1] = q["weight"] + "_dq"
            nodes.append(node)
        kept_inits = [i for i in graph.initializer if i.name not in trained]
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.initializer[:]
        graph.initializer.extend(kept_inits + new_inits)
        onnx.checker.check_model(model)
        atomic_write_bytes(out_path, model.SerializeToString())
        return len(quantized)
