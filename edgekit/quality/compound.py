"""Training-based and compound variants for the variant search: QAT where post-training INT8 missed the budget,
low-rank -> INT8 (PTQ, or QAT distilled from the source model), and structured prune -> distill -> INT8 (PyTorch
sources). Plans are derived from the search's own INT8
plans, so every variant is built, checked and measured exactly like the others.

Exploration rule (what is tried, and what is skipped with a reason). Order: low-rank FP32 and low-rank -> PTQ INT8
first (no training), then QAT, then low-rank -> QAT; the training budget is split between the trainings still
possible after the cheap checks (a low-rank compound that cannot win reserves no time).
- QAT on runtime R only when R's post-training INT8 missed the budget and no INT8 variant met it yet (QAT runs the
  same INT8 kernels as PTQ, so it cannot beat an INT8 variant that already meets the budget).
- low-rank compounds on the first runtime with an INT8 path: the low-rank FP32 variant is built first; if it is not
  faster than that runtime's FP32, factorising cannot win and the INT8 compounds are skipped. low-rank -> PTQ INT8 is
  skipped when low-rank alone already misses the budget (INT8 only adds error); low-rank -> QAT (distilled from the
  source, so it can recover) is tried when the training budget allows.
- prune -> distill -> INT8 (a PyTorch source: FFN neurons / attention heads / channels removed with Torch-Pruning, then
  the pruned module distilled from the source on calibration data, exported and quantized like the plain INT8 plan),
  for each ratio of PRUNE_RATIOS, mildest first. Before any training, the pruned FP32 model (no distillation) is built
  and timed against the unpruned FP32 on the same runtime: the ratio's speed-up bounds what pruning can add to the
  fastest INT8 variant. A ratio is skipped when that estimate is not faster than the best variant meeting the budget;
  a stronger ratio is not tried once a milder one missed the budget after distillation (removing more only loses
  more), nor once the training budget is spent.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from edgekit.core.plan import Plan
from edgekit.core.steps import PlannedStep

# Runtimes the search trains QAT for. ONNX Runtime is left out: it runs edgekit's QDQ model (Q/DQ on Conv/MatMul
# inputs and weights, no output quantization) with the DequantizeLinear nodes unfused — PP-OCRv4 rec took 288.7 ms vs
# 92.1 ms for OpenVINO FP32 in the same (loaded) search. The qat step still takes target: onnxruntime when asked.
QAT_RUNTIMES = ("openvino", "tensorrt")
NO_QAT = {"onnxruntime": "ONNX Runtime runs edgekit's QDQ model unfused (PP-OCRv4 rec: 288.7 ms, slower than FP32); "
                         "QAT targets OpenVINO/TensorRT here"}
INT8_STEPS = ("openvino", "quantize-ort", "qat")
LOWRANK_ENERGY = 0.9
# Structured-pruning ratios of the prune -> distill -> INT8 compounds, mildest first.
PRUNE_RATIOS = (0.25, 0.5)
# Training time a search spends by default (no --train-budget given) once post-training INT8 missed the budget:
# QAT and compounds are tried only then. --train-budget sets it (and then compounds are explored in any case);
# --train-budget off disables training.
DEFAULT_TRAIN_BUDGET_S = 600.0


# Steps inside QAT/compound variants are only guarded against gross breakage: the search judges the whole variant
# end to end on held-out data against --max-drop, and a variant that misses it still gets its score and latency
# (the PTQ-vs-QAT comparison and the Pareto front need them).
GUARD = {"min_cosine": 0.8}
OPEN_DROP = 0.99  # an INT8 step's own budget inside a compound: its first (full-INT8) build is accepted


def _fidelity(max_drop: float, has_task: bool) -> Dict[str, Any]:
    return dict(GUARD)


def qat_plan(plan: Plan, train_budget_s: float, max_drop: float, has_task: bool, teacher: Optional[str] = None) -> Optional[Plan]:
    """The INT8 plan with QAT: before OpenVINO's conversion (which then keeps the QDQ as INT8), instead of quantize-ort."""
    cfg: Dict[str, Any] = {"target": plan.runtime, "train_budget_s": round(float(train_budget_s), 1), "max_drop": max_drop,
                           "fidelity": _fidelity(max_drop, has_task)}
    if teacher:
        cfg["teacher"] = teacher
    why = (f"quantization-aware training for {plan.runtime}'s INT8 scheme, distilled from "
           f"{'the source model' if teacher else 'the FP32 model'} on calibration data, ≤ {train_budget_s:.0f} s")
    steps: List[PlannedStep] = []
    done = False
    for s in plan.steps:
        if s.step == "openvino" and s.config.get("precision") == "int8" and not done:
            ov_cfg = {k: v for k, v in s.config.items() if k != "max_drop"}
            steps += [PlannedStep(step="qat", config=cfg, reason=why),
                      s.model_copy(update={"config": {**ov_cfg, "fidelity": dict(GUARD)}, "reason": "convert the QAT model (QDQ) to an OpenVINO INT8 IR as it is"})]
            done = True
        elif s.step == "quantize-ort" and not done:
            steps.append(PlannedStep(step="qat", config=cfg, reason=why + ("; TensorRT builds INT8 from the QDQ" if plan.runtime == "tensorrt" else "; ONNX Runtime runs the QDQ model")))
            done = True
        else:
            steps.append(s)
    if not done:
        return None
    return plan.model_copy(update={"steps": steps, "notes": [*plan.notes, "QAT: post-training INT8 missed the budget"]})


def lowrank_plan(plan: Plan, max_drop: float, has_task: bool, energy: float = LOWRANK_ENERGY) -> Plan:
    """`plan` with an SVD low-rank step on the ONNX model before its INT8 step (or its compile step for FP32)."""
    lr = PlannedStep(step="lowrank", config={"energy": energy, "measure": False, "fidelity": _fidelity(max_drop, has_task)},
                     reason=f"SVD low-rank factorisation keeping {energy:.0%} of each weight's spectral energy (fewer MACs)")
    steps = list(plan.steps)
    pos = next((i for i, s in enumerate(steps) if s.step in INT8_STEPS or s.step in ("openvino", "tflite", "tensorrt", "fp16")), len(steps))
    steps.insert(pos, lr)
    return plan.model_copy(update={"steps": steps})


def prune_plan(plan: Plan, ratio: float, max_drop: float, has_task: bool, finetune_s: Optional[float] = None,
               threads: Optional[int] = None) -> Optional[Plan]:
    """`plan` (which starts from a PyTorch module: export first) with structured pruning at `ratio` before the export;
    with `finetune_s`, the pruned module is distilled from the source module for that long. None if the plan has no
    export step (the source is not a PyTorch module)."""
    steps = list(plan.steps)
    pos = next((i for i, s in enumerate(steps) if s.step == "export"), None)
    if pos is None:
        return None
    # the speed probe (no distillation) is built for its latency only: its fidelity is not checked (the search still scores it)
    cfg: Dict[str, Any] = {"mode": "structured", "ratio": ratio, "measure": False,
                           "fidelity": _fidelity(max_drop, has_task) if finetune_s else {"check": False}}
    if finetune_s:
        cfg.update(finetune_s=round(float(finetune_s), 1))
        if threads:
            cfg["threads"] = threads
    why = (f"structured pruning: {ratio:.0%} of the FFN neurons / attention heads / channels removed"
           + (f", then distilled from the source module on calibration data for ≤ {finetune_s:.0f} s" if finetune_s else
              " (no distillation: the speed probe of this ratio)"))
    # the INT8 step builds its full-INT8 model (its own accuracy search opened): the search judges the compound end to end
    # against --max-drop on held-out data, and a compound that misses still gets its score and latency (Pareto front)
    steps = [s.model_copy(update={"config": {**s.config, "max_drop": OPEN_DROP, "fidelity": dict(GUARD)}})
             if "max_drop" in s.config and str(s.config.get("precision", "")).startswith("int8") else s for s in steps]
    steps.insert(pos, PlannedStep(step="prune", config=cfg, reason=why))
    return plan.model_copy(update={"steps": steps, "notes": [*plan.notes, f"compound: structured prune {ratio:.0%}" + (" -> distill" if finetune_s else "")]})


def prune_method(ratio: float, distilled: bool, precision: str) -> str:
    """The search's method label of a prune variant, e.g. 'prune25%+distill+ptq'."""
    return f"prune{ratio:.0%}" + ("+distill" if distilled else "") + ("+ptq" if precision == "int8" else "")


def pareto(points: List[Dict[str, Any]]) -> List[int]:
    """Indices of the points not dominated in (lower latency, higher score, smaller size)."""
    from edgekit.quality.stats import pareto_front

    return pareto_front(points, "ms", "score", also_lower=("size",))
