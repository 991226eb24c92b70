"""Training-based and compound variants for the variant search: QAT where post-training INT8 missed the budget,
and low-rank -> INT8 (PTQ, or QAT distilled from the source model). Plans are derived from the search's own INT8
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
# Training time a search spends by default (no --train-budget given) once post-training INT8 missed the budget:
# QAT and compounds are tried only then. --train-budget sets it (and then compounds are explored in any case);
# --train-budget off disables training.
DEFAULT_TRAIN_BUDGET_S = 600.0


# Steps inside QAT/compound variants are only guarded against gross breakage: the search judges the whole variant
# end to end on held-out data against --max-drop, and a variant that misses it still gets its score and latency
# (the PTQ-vs-QAT comparison and the Pareto front need them).
GUARD = {"min_cosine": 0.8}


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


def pareto(points: List[Dict[str, Any]]) -> List[int]:
    """Indices of the points not dominated in (lower latency, higher score, smaller size)."""
    from edgekit.quality.stats import pareto_front

    return pareto_front(points, "ms", "score", also_lower=("size",))
