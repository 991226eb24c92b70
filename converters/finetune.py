"""Time-boxed distillation fine-tuning shared by QAT and by `edgekit compress --finetune` (pruning, low-rank).

The student learns the source model's own outputs on calibration data (no labels): KL divergence on logits when an
output is a Softmax, variance-normalised MSE otherwise. Training stops at the time budget (or a step cap), reports
progress about every 10 s, and returns a record of what ran. torch is imported by the callers' `run`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.core.errors import StepError


def batches(feeds: List[Dict[str, np.ndarray]], names: Sequence[str], batch_size: int, rng: np.random.Generator) -> Iterator[List[np.ndarray]]:
    """Endless shuffled batches; samples are concatenated on axis 0 when their shapes allow it, else batch 1."""
    first = tuple((n, feeds[0][n].shape) for n in names)
    stackable = all(tuple((n, f[n].shape) for n in names) == first for f in feeds) and all(feeds[0][n].ndim > 0 for n in names)
    bs = min(batch_size, len(feeds)) if stackable else 1
    while True:
        order = rng.permutation(len(feeds))
        for k in range(0, len(order) - bs + 1, bs):
            chunk = [feeds[j] for j in order[k: k + bs]]
            yield [np.concatenate([c[n] for c in chunk], axis=0) for n in names]


def topk_logprobs(logits: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The teacher's `k` most likely classes per position and their log-probabilities (log-softmax over every class):
    a compact cache of a softmax output (a 6625-class CTC line is 2 KB per position dense, 6 x k bytes here)."""
    x = logits.astype(np.float32)
    m = x.max(-1, keepdims=True)
    logp = x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))
    idx = np.argpartition(-logp, min(k, logp.shape[-1] - 1), axis=-1)[..., :k]
    lp = np.take_along_axis(logp, idx, -1)
    order = np.argsort(-lp, axis=-1)
    return np.take_along_axis(idx, order, -1).astype(np.int32), np.take_along_axis(lp, order, -1).astype(np.float32)


def distill_loss(torch, student: Sequence[Any], teacher: Sequence[Any], logits: Sequence[bool], hard_weight: float = 0.0,
                 margin_weight: float = 0.0):
    """KL(teacher || student) on softmax logits, variance-normalised MSE otherwise; summed over outputs.

    A teacher logit output is a tensor of logits, or a pair (class indices, log-probabilities) of its top-k classes per
    position (`topk_logprobs`: the KL is then summed over those k classes, whose mass is ~1 for a confident model).
    `hard_weight` > 0 adds that times the cross-entropy against the teacher's top-1 class at every position (hard
    labels). KL is ~0 where the teacher is confident and small where its top-2 margin is small, yet those are exactly
    the positions where quantization noise flips the decoded class (a CTC line, a label): the hard-label term keeps
    pushing the student's margin for the teacher's class there. `margin_weight` > 0 weights each position by
    1 + margin_weight x (1 - (p1 - p2)) (p1, p2: the teacher's top-2 probabilities), i.e. up to 1 + margin_weight
    where the teacher itself is unsure."""
    F = torch.nn.functional
    total = 0.0
    for s, t, is_logit in zip(student, teacher, logits):
        s = s.float()
        if is_logit:
            logq = F.log_softmax(s, dim=-1)
            if isinstance(t, (tuple, list)):  # cached top-k of the teacher
                idx, logp = t[0].long(), t[1].float()
                kl = (logp.exp() * (logp - logq.gather(-1, idx))).sum(-1)
            else:
                logp_all = F.log_softmax(t.float(), dim=-1)
                kl = F.kl_div(logq, logp_all, log_target=True, reduction="none").sum(-1)
                logp, idx = logp_all.topk(2, dim=-1)
            top1 = idx[..., 0]
            w = None
            if margin_weight > 0 and logp.shape[-1] >= 2:
                p = logp[..., :2].exp()
                w = 1.0 + margin_weight * (1.0 - (p[..., 0] - p[..., 1]))
            total = total + (kl.mean() if w is None else (kl * w).sum() / w.sum())
            if hard_weight > 0:
                ce = -logq.gather(-1, top1.unsqueeze(-1)).squeeze(-1)
                total = total + hard_weight * (ce.mean() if w is None else (ce * w).sum() / w.sum())
        else:
            t = t.float()
            total = total + F.mse_loss(s, t) / (t.var() + 1e-8)
    return total


def train(torch, step_name: str, label: str, student: Callable[[List[Any]], Sequence[Any]], teacher: Callable[[List[Any]], Sequence[Any]],
          param_groups: List[Dict[str, Any]], feed_batches: Iterator[List[np.ndarray]], logits: Sequence[bool], *,
          budget_s: float, max_steps: Optional[int] = None, say: Callable[[str], None] = lambda m: None, what: str = "fine-tune",
          validate: Optional[Callable[[], float]] = None, validate_every_s: float = 90.0, state: Any = None,
          hard_weight: float = 0.0, margin_weight: float = 0.0, optimizer: str = "adam", momentum: float = 0.9) -> Dict[str, Any]:
    """Adam on `param_groups` within `budget_s` seconds (at least one step; no step is started that would, at the
    median duration of the steps so far, end past the budget); returns steps, time and loss first/last.

    With `validate` (a held-out score, higher is better) and `state` (save()/load()), the model is scored before training
    and every `validate_every_s` seconds of training and at the end; the best checkpoint is restored (early stopping:
    training that overfits its samples cannot make the result worse than the best validated state). Validation time
    is not counted against `budget_s`."""
    if optimizer == "sgd":
        opt = torch.optim.SGD(param_groups, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(param_groups)
    else:
        raise StepError(step_name, f"unknown optimizer '{optimizer}'", hint="use adam or sgd")
    losses: List[float] = []
    t0 = time.perf_counter()
    last_say = t0
    step = 0
    history: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {}
    paused = 0.0
    durations: List[float] = []  # training steps only (validation is paused time)

    def checkpoint() -> None:
        nonlocal paused
        v0 = time.perf_counter()
        val = float(validate())
        history.append({"step": step, "score": round(val, 6)})
        if not best or val > best["score"]:
            best.update(score=val, step=step, snap=state.save())
        paused += time.perf_counter() - v0
        say(f"{step_name}: {what} validation at step {step}: {val:.4f} (best {best['score']:.4f} at step {best['step']})")

    if validate is not None:
        checkpoint()
    last_val = time.perf_counter() - paused
    while True:
        elapsed = time.perf_counter() - t0 - paused
        if step and (elapsed + float(np.median(durations)) > budget_s or (max_steps is not None and step >= max_steps)):
            break
        if validate is not None and time.perf_counter() - paused - last_val >= validate_every_s:
            checkpoint()
            last_val = time.perf_counter() - paused
            if best["score"] >= 1.0:
                say(f"{step_name}: {what} validation score is 1.0: stopping early")
                break
        s0 = time.perf_counter()
        batch = [torch.from_numpy(np.ascontiguousarray(b)) for b in next(feed_batches)]
        with torch.no_grad():
            target = teacher(batch)
        loss = distill_loss(torch, student(batch), target, logits, hard_weight, margin_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        val = float(loss.detach())
        if not math.isfinite(val):
            raise StepError(step_name, f"{what} of {label} diverged (loss {val} at step {step})", hint="lower the learning rate")
        losses.append(val)
        now = time.perf_counter()
        durations.append(now - s0)
        if now - last_say >= 10.0:
            last_say = now
            say(f"{step_name}: {what} step {step}, distillation loss {np.mean(losses[-20:]):.5f} (first {losses[0]:.5f}), "
                f"{now - t0:.0f}/{budget_s:.0f} s")
    if validate is not None:
        checkpoint()
        if best["step"] != step:
            state.load(best["snap"])
            say(f"{step_name}: {what} kept the checkpoint of step {best['step']} (validation {best['score']:.4f})")
    k = max(1, min(20, len(losses) // 5))
    rec = {"steps": step, "train_s": round(time.perf_counter() - t0 - paused, 1), "budget_s": budget_s,
           "loss_first": round(float(np.mean(losses[:k])), 6), "loss_last": round(float(np.mean(losses[-k:])), 6)}
    if validate is not None:
        rec.update(validation=history, best_step=best["step"], best_score=round(best["score"], 6), validation_s=round(paused, 1))
    return rec


def finetune_module(torch, student: Any, teacher: Any, feeds: List[Dict[str, np.ndarray]], names: Sequence[str], *, budget_s: float,
                    lr: float = 1e-5, batch_size: int = 8, max_steps: Optional[int] = None, seed: int = 0,
                    say: Callable[[str], None] = lambda m: None, step_name: str = "prune") -> Dict[str, Any]:
    """Distil a compressed PyTorch module from its source module (both called with the feeds' tensors by position)."""
    from edgekit.core.artifact import _flatten_torch_outputs

    if not feeds:
        raise StepError(step_name, "fine-tuning needs calibration data, and none was given", hint="pass --calib DATA, or use a zoo model")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.eval()  # no dropout; BatchNorm keeps its statistics
    params = [p for p in student.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(True)

    def run(m):
        return lambda batch: _flatten_torch_outputs(m(*batch))

    rec = train(torch, step_name, type(student).__name__, run(student), run(teacher), [{"params": params, "lr": lr}],
                batches(feeds, names, batch_size, np.random.default_rng(seed)), [False] * 64,
                budget_s=budget_s, max_steps=max_steps, say=say)
    student.eval()
    return {**rec, "teacher": "source module", "samples": len(feeds), "lr": lr}


def finetune_onnx(torch, student_path, teacher_path, feeds: List[Dict[str, np.ndarray]], *, budget_s: float, lr: float = 1e-5,
                  batch_size: int = 8, max_steps: Optional[int] = None, seed: int = 0, say: Callable[[str], None] = lambda m: None,
                  step_name: str = "lowrank"):
    """Distil an ONNX model (e.g. low-rank factorised) from its ONNX source; returns (trained onnx model, record)."""
    import onnx

    from edgekit.converters.onnx_torch import OnnxModule, logit_outputs, replace_constants

    if not feeds:
        raise StepError(step_name, "fine-tuning needs calibration data, and none was given", hint="pass --calib DATA, or use a zoo model")
    model = onnx.load(str(student_path))
    label = str(getattr(student_path, "name", student_path))
    student = OnnxModule(model, label).eval()
    teacher = OnnxModule(onnx.load(str(teacher_path)), "source").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    logit_map = logit_outputs(model)
    student.output_override = dict(logit_map)
    teacher.output_override = dict(logit_outputs(onnx.load(str(teacher_path), load_external_data=False)))
    names = student.input_names
    rec = train(torch, step_name, label, lambda b: student(*b), lambda b: teacher(*[b[names.index(n)] for n in teacher.input_names]),
                [{"params": list(student.parameters()), "lr": lr}], batches(feeds, names, batch_size, np.random.default_rng(seed)),
                [o in logit_map for o in student.output_names], budget_s=budget_s, max_steps=max_steps, say=say)
    replace_constants(model, student.trained_weights())
    return model, {**rec, "teacher": "source ONNX model", "samples": len(feeds), "lr": lr}
