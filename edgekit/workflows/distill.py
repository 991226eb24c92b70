"""Knowledge distillation: train a smaller student to match a teacher on your data (logits -> KL+CE, embeddings -> cosine+MSE).

Python API:
    result = distill(teacher, student, batches, steps=300, lr=1e-4,
                     feature_pairs=[("bert.encoder.layer.1", "bert.encoder.layer.0")])

A batch is a dict of tensors passed as keyword arguments (a `labels` entry, if present, is taken out and used
for the hard-label cross-entropy) or a tuple/list passed positionally. The loss depends on `kind`:
  * "logits":    alpha_kl * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + alpha_ce * CE(student, labels)
  * "embedding": alpha_cos * (1 - cosine(student, teacher)) + alpha_mse * MSE(student, teacher)
    (KL over temperature-softened outputs is meaningless for an embedding, which is not a distribution)
  * "auto":      "embedding" when the teacher's rows are L2-normalised, else "logits".
Each (teacher_layer, student_layer) in `feature_pairs` adds alpha_feature * MSE between those modules' outputs
(same width required); with `feature_mask_key` (e.g. "attention_mask") that MSE is token-level and skips padding.
The worked example is `make_minilm_student` + `distill_minilm`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Sequence, Tuple

import numpy as np

from edgekit.core.errors import CalibrationError, EdgekitError, UsageError, require

Kind = Literal["auto", "logits", "embedding"]


@dataclass
class DistillResult:
    """What training did: per-step total loss and its parts, wall time, the loss kind used."""

    student: Any
    kind: str
    steps: int
    seconds: float
    losses: List[float] = field(default_factory=list)
    components: Dict[str, List[float]] = field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        k = max(1, min(10, len(self.losses) // 10 or 1))
        return {
            "kind": self.kind,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "loss_first": round(float(np.mean(self.losses[:k])), 6) if self.losses else None,
            "loss_last": round(float(np.mean(self.losses[-k:])), 6) if self.losses else None,
        }


def _first_tensor(out: Any) -> Any:
    from edgekit.core.artifact import _flatten_torch_outputs

    return _flatten_torch_outputs(out)[0]


def _call(model: Any, batch: Any) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _split_labels(batch: Any, labels_key: str) -> Tuple[Any, Any]:
    if isinstance(batch, dict) and labels_key in batch:
        rest = {k: v for k, v in batch.items() if k != labels_key}
        return rest, batch[labels_key]
    return batch, None


class _FeatureTap:
    """Forward hooks that keep the latest output of named modules (for intermediate-feature MSE)."""

    def __init__(self, model: Any, names: Sequence[str], role: str):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            near = [n for n in modules if n][:8]
            raise UsageError(f"feature_pairs: {role} has no module named {missing}", hint=f"names look like: {', '.join(near)}")
        self.values: Dict[str, Any] = {}
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def fn(_mod, _inp, out):
            self.values[name] = _first_tensor(out)
        return fn

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _feature_mse(s: Any, t: Any, inputs: Any, mask_key: Optional[str]) -> Any:
    """MSE between two features; token-level over positions where inputs[mask_key] is non-zero when given."""
    if not mask_key:
        return ((s - t) ** 2).mean()
    if not isinstance(inputs, dict) or mask_key not in inputs:
        raise UsageError(f"feature_mask_key '{mask_key}' is not a key of the batch",
                         hint="batches must be dicts holding that mask, or pass feature_mask_key=None")
    mask = inputs[mask_key]
    if s.dim() != 3 or tuple(mask.shape) != tuple(s.shape[:2]):
        raise UsageError(f"feature_mask_key '{mask_key}': mask {tuple(mask.shape)} does not match features {tuple(s.shape)}",
                         hint="a token mask is [batch, tokens] for [batch, tokens, width] features")
    m = mask.to(s.dtype).unsqueeze(-1)
    return (((s - t) ** 2) * m).sum() / (m.sum().clamp(min=1.0) * s.shape[-1])


def _resolve_kind(kind: Kind, teacher_out: Any) -> str:
    if kind != "auto":
        return kind
    norms = teacher_out.detach().float().norm(dim=-1)
    return "embedding" if teacher_out.dim() == 2 and bool(((norms - 1).abs() < 1e-3).all()) else "logits"


def _batches(data: Iterable[Any], epochs: int, steps: Optional[int]):
    """Yield batches for `epochs` passes, or cycle until `steps` batches (data must be re-iterable then)."""
    done = 0
    epoch = 0
    while True:
        got = False
        for b in data:
            got = True
            yield b
            done += 1
            if steps is not None and done >= steps:
                return
        if not got:
            raise CalibrationError("distillation data yielded no batches", hint="pass a non-empty list or DataLoader of batches")
        epoch += 1
        if steps is None and epoch >= epochs:
            return


def distill(
    teacher: Any,
    student: Any,
    data: Iterable[Any],
    *,
    kind: Kind = "auto",
    temperature: float = 2.0,
    alpha_kl: float = 1.0,
    alpha_ce: float = 0.5,
    alpha_cos: float = 1.0,
    alpha_mse: float = 1.0,
    alpha_feature: float = 0.0,
    feature_pairs: Sequence[Tuple[str, str]] = (),
    feature_mask_key: Optional[str] = None,
    labels_key: str = "labels",
    epochs: int = 1,
    steps: Optional[int] = None,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.1,
    grad_clip: Optional[float] = 1.0,
    threads: Optional[int] = None,
    dropout: bool = True,
    on_step: Optional[Callable[[int, float, Dict[str, float]], None]] = None,
) -> DistillResult:
    """Train `student` (in place) to imitate `teacher` on `data`; returns the loss curve and time."""
    torch = require("torch", "torch", "distillation")
    F = torch.nn.functional
    if temperature <= 0:
        raise UsageError(f"temperature must be > 0, got {temperature}")
    if steps is not None and steps <= 0:
        raise UsageError(f"steps must be > 0, got {steps}")
    total = steps
    if total is None:
        try:
            total = epochs * len(data)  # type: ignore[arg-type]
        except TypeError:
            total = None
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    teacher.eval()  # run under no_grad below; its parameters are never handed to the optimiser
    student.train(dropout)  # dropout=False trains with the student's dropout off (eval mode); gradients flow either way
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise UsageError("the student has no trainable parameters (requires_grad is False everywhere)",
                         hint="call student.requires_grad_(True) before distilling")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, int((total or 100) * warmup_fraction))

    def lr_at(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        if total is None:
            return 1.0
        return max(0.0, (total - i) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    t_tap = _FeatureTap(teacher, [a for a, _ in feature_pairs], "teacher")
    s_tap = _FeatureTap(student, [b for _, b in feature_pairs], "student")
    losses: List[float] = []
    comps: Dict[str, List[float]] = {}
    resolved = None
    t0 = time.perf_counter()
    try:
        for i, batch in enumerate(_batches(data, epochs, steps)):
            inputs, labels = _split_labels(batch, labels_key)
            with torch.no_grad():
                t_out = _first_tensor(_call(teacher, inputs)).float()
            s_out = _first_tensor(_call(student, inputs)).float()
            if s_out.shape != t_out.shape:
                raise UsageError(f"student output {tuple(s_out.shape)} differs from teacher output {tuple(t_out.shape)}",
                                 hint="the student must produce the teacher's output shape (same classes / embedding size)")
            resolved = resolved or _resolve_kind(kind, t_out)
            parts: Dict[str, Any] = {}
            if resolved == "logits":
                T = temperature
                parts["kl"] = alpha_kl * F.kl_div(F.log_softmax(s_out / T, -1), F.log_softmax(t_out / T, -1),
                                                  reduction="batchmean", log_target=True) * T * T
                if labels is not None and alpha_ce:
                    parts["ce"] = alpha_ce * F.cross_entropy(s_out, labels)
            else:
                if alpha_cos:
                    parts["cos"] = alpha_cos * (1 - F.cosine_similarity(s_out, t_out, dim=-1)).mean()
                if alpha_mse:
                    parts["mse"] = alpha_mse * F.mse_loss(s_out, t_out)
            if feature_pairs and alpha_feature:
                fl = 0
                for a, b in feature_pairs:
                    ta, sb = t_tap.values[a].float(), s_tap.values[b].float()
                    if ta.shape != sb.shape:
                        raise UsageError(f"feature pair ({a}, {b}): shapes {tuple(ta.shape)} vs {tuple(sb.shape)} differ",
                                         hint="pair layers of the same width")
                    fl = fl + _feature_mse(sb, ta, inputs, feature_mask_key)
                parts["feature"] = alpha_feature * fl / len(feature_pairs)
            if not parts:
                raise UsageError("all loss weights are zero", hint="set alpha_kl/alpha_cos/alpha_mse above 0")
            loss = sum(parts.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            lv = float(loss.detach())
            if not np.isfinite(lv):
                raise EdgekitError(f"distillation loss became {lv} at step {i}", hint="lower lr or enable grad_clip")
            losses.append(lv)
            pv = {k: float(v.detach()) for k, v in parts.items()}
            for k, v in pv.items():
                comps.setdefault(k, []).append(v)
            if on_step:
                on_step(i, lv, pv)
    finally:
        t_tap.close()
        s_tap.close()
        student.eval()
        if threads:
            torch.set_num_threads(old_threads)
    return DistillResult(student=student, kind=resolved or kind, steps=len(losses), seconds=time.perf_counter() - t0,
                         losses=losses, components=comps)


# ------------------------------------------------------------------------------------------------- MiniLM example
def student_layer_indices(teacher_layers: int, num_layers: int) -> List[int]:
    """Teacher layers to copy: the first and the last, the rest evenly spread (6 -> 3 gives 0, 3, 5).

    Measured on all-MiniLM-L6-v2 before training (mean embedding cosine to the teacher, 64 held-out sentences):
    [0, 3, 5] 0.65, [1, 3, 5] 0.50, [0, 2, 4] 0.38 - keeping the first and last layers matters most.
    """
    if not 0 < num_layers <= teacher_layers:
        raise UsageError(f"student layers must be between 1 and {teacher_layers}, got {num_layers}")
    if num_layers == 1:
        return [teacher_layers - 1]
    return [int(np.floor(i * (teacher_layers - 1) / (num_layers - 1) + 0.5)) for i in range(num_layers)]


def make_minilm_student(teacher: Any, num_layers: int = 3, layers: Optional[Sequence[int]] = None) -> Tuple[Any, List[int]]:
    """A copy of a BERT-style encoder keeping `num_layers` of its layers (embeddings and chosen layers copied from the teacher)."""
    torch = require("torch", "torch", "building a student")
    bert = getattr(teacher, "bert", teacher)
    enc = getattr(bert, "encoder", None)
    if enc is None or not hasattr(enc, "layer"):
        raise UsageError(f"{type(teacher).__name__} has no BERT encoder (.bert.encoder.layer)", hint="pass a zoo:minilm module or a HF BertModel")
    n = len(enc.layer)
    keep = list(layers) if layers is not None else student_layer_indices(n, num_layers)
    if any(not 0 <= i < n for i in keep):
        raise UsageError(f"layers {keep} out of range for a {n}-layer teacher")
    student = copy.deepcopy(teacher)
    s_bert = getattr(student, "bert", student)
    s_bert.encoder.layer = torch.nn.ModuleList([s_bert.encoder.layer[i] for i in keep])
    for new_idx, layer in enumerate(s_bert.encoder.layer):
        attn = getattr(getattr(layer, "attention", None), "self", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx
    s_bert.config = copy.deepcopy(s_bert.config)
    s_bert.config.num_hidden_layers = len(keep)
    for m in s_bert.modules():
        if hasattr(m, "config") and m is not s_bert:
            m.config = s_bert.config
    student.requires_grad_(True)
    return student.eval(), keep


def minilm_batches(sentences: Sequence[str], tokenizer: Any, batch_size: int = 32, max_len: int = 128, seed: int = 0,
                   length_buckets: int = 0) -> List[Dict[str, Any]]:
    """Tokenised batches (padded to each batch's longest sentence, so training stays fast on CPU).

    length_buckets=k > 0 sorts each run of k * batch_size shuffled sentences by length before batching and then
    shuffles the batch order: batches hold sentences of similar length, so far less compute goes to padding.
    """
    torch = require("torch", "torch", "building batches")
    if batch_size <= 0:
        raise UsageError(f"batch_size must be > 0, got {batch_size}")
    rng = np.random.default_rng(seed)
    order = [int(j) for j in rng.permutation(len(sentences))]
    if length_buckets > 0:
        span = length_buckets * batch_size
        order = [j for i in range(0, len(order), span) for j in sorted(order[i:i + span], key=lambda j: len(sentences[j]))]
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if length_buckets > 0:
        groups = [groups[int(g)] for g in rng.permutation(len(groups))]
    out = []
    for group in groups:
        texts = [sentences[j] for j in group]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        out.append({k: enc[k].to(torch.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})
    return out


def embedding_cosines(teacher: Any, student: Any, batches: Sequence[Dict[str, Any]]) -> np.ndarray:
    """Per-sentence cosine between teacher and student embeddings."""
    torch = require("torch", "torch", "evaluating a student")
    F = torch.nn.functional
    out = []
    with torch.inference_mode():
        for b in batches:
            out.append(F.cosine_similarity(_first_tensor(_call(student.eval(), b)), _first_tensor(_call(teacher.eval(), b)), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class MiniLMDistillRun:
    """The worked example's results: student, layer choice, cosine before/after training, loss curve, recipe."""

    student: Any
    teacher: Any
    tokenizer: Any
    layers: List[int]
    result: DistillResult
    cosine_before: np.ndarray
    cosine_after: np.ndarray
    train_sentences: int
    eval_sentences: int
    recipe: Dict[str, Any] = field(default_factory=dict)


FeatureLayers = Literal["last", "all", "none"]


def minilm_feature_pairs(layers: Sequence[int], feature_layers: FeatureLayers = "last") -> List[Tuple[str, str]]:
    """(teacher module, student module) pairs for the hidden-state loss: the last layer only, every kept layer, or none."""
    pairs = [(f"bert.encoder.layer.{t}", f"bert.encoder.layer.{s}") for s, t in enumerate(layers)]
    if feature_layers == "last":
        return pairs[-1:]
    if feature_layers == "all":
        return pairs
    if feature_layers == "none":
        return []
    raise UsageError(f"feature_layers must be 'last', 'all' or 'none', got {feature_layers!r}")


def distill_minilm(*, num_layers: int = 3, steps: int = 1000, batch_size: int = 32, lr: float = 4e-4,
                   train_sentences: Optional[int] = None, eval_sentences: int = 200, alpha_feature: float = 1.0,
                   feature_layers: FeatureLayers = "last", layers: Optional[Sequence[int]] = None,
                   warmup_fraction: float = 0.1, threads: int = 2, seed: int = 0,
                   progress: Optional[Callable[[str], None]] = None) -> MiniLMDistillRun:
    """Worked example: all-MiniLM-L6-v2 -> a `num_layers` student initialised from its layers, distilled on real sentences.

    Loss: (1 - cosine) + MSE between the pooled, normalised embeddings, plus alpha_feature * token-level MSE
    (padding masked) between hidden states - by default only teacher's last layer -> student's last layer, i.e. the
    token vectors that mean pooling averages. Training text: `zoo.sentences(n, "train")` (all of it when
    train_sentences is None), never the 'eval' sentences the cosine is measured on.
    """
    torch = require("torch", "torch", "distillation")
    from edgekit.zoo import models as zoo
    from edgekit.zoo import datasets as zoo_data

    torch.manual_seed(seed)
    teacher, tok = zoo.minilm_module()
    student, layers = make_minilm_student(teacher, num_layers, layers)
    pairs = minilm_feature_pairs(layers, feature_layers)
    n_train = len(zoo_data._split_sentences("train")) if train_sentences is None else int(train_sentences)
    train = minilm_batches(zoo.sentences(n_train, "train", seed), tok, batch_size, seed=seed, length_buckets=16)
    held = minilm_batches(zoo.sentences(eval_sentences, "eval", seed), tok, 64, seed=seed)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        before = embedding_cosines(teacher, student, held)
        every = max(1, steps // 10)

        def report(i: int, loss: float, parts: Dict[str, float]) -> None:
            if progress and (i % every == 0 or i == steps - 1):
                progress(f"step {i + 1}/{steps} loss {loss:.5f} " + " ".join(f"{k} {v:.5f}" for k, v in parts.items()))

        res = distill(teacher, student, train, kind="embedding", steps=steps, lr=lr, alpha_cos=1.0, alpha_mse=1.0,
                      alpha_feature=alpha_feature if pairs else 0.0, feature_pairs=pairs, feature_mask_key="attention_mask",
                      warmup_fraction=warmup_fraction, threads=threads, dropout=False, on_step=report)
        after = embedding_cosines(teacher, student, held)
    finally:
        torch.set_num_threads(old)
    recipe = {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup_fraction": warmup_fraction,
              "schedule": "linear warm-up then linear decay to 0", "optimizer": "AdamW (weight decay 0.01), grad clip 1.0",
              "loss": "(1 - cos) + MSE on pooled normalised embedding + alpha_feature * token-level hidden-state MSE (padding masked)",
              "alpha_feature": alpha_feature if pairs else 0.0, "feature_pairs": [list(p) for p in pairs],
              "epochs_over_train": round(steps * batch_size / max(1, n_train), 2), "seed": seed}
    return MiniLMDistillRun(student=student, teacher=teacher, tokenizer=tok, layers=layers, result=res, cosine_before=before,
                            cosine_after=after, train_sentences=n_train, eval_sentences=eval_sentences, recipe=recipe)


def export_minilm(module: Any, path: Path, seq_len: int = 128) -> Path:
    """Export a MiniLM-style module to ONNX through edgekit's export step (registry), copied to `path`."""
    from edgekit.core.artifact import Artifact
    from edgekit.core.compression import run_export_step
    from edgekit.zoo import datasets as zoo_data
    from edgekit.zoo import models as zoo

    spec = zoo.resolve("zoo:minilm")
    torch = require("torch", "torch", "exporting")
    feeds = zoo_data.minilm_encode(["Edge devices run small models."], zoo.minilm_tokenizer(), seq_len)
    example = tuple(torch.from_numpy(feeds[k]) for k in spec.input_names)
    dyn = {k: {0: "batch", 1: "seq"} for k in spec.input_names}
    dyn[spec.output_names[0]] = {0: "batch"}
    art = Artifact.from_module(module, example, input_names=spec.input_names, output_names=spec.output_names, dynamic_axes=dyn)
    return run_export_step(art, Path(path))


def onnx_latency_seq(path: Path, threads: int, seq_len: int = 128, sentence: str = "Edge devices run small models.") -> Dict[str, Any]:
    """ORT FP32 latency of a MiniLM-style ONNX at batch 1, padded to seq_len, at `threads` threads."""
    from edgekit.core import compression as cr
    from edgekit.zoo import models as zoo
    from edgekit.zoo import datasets as zoo_data

    feed = zoo_data.minilm_encode([sentence], zoo.minilm_tokenizer(), seq_len)
    return cr.time_onnx(Path(path), feed, threads, warmup=5, min_runs=30, min_seconds=3.0)


def onnx_cosines(teacher_onnx: Path, student_onnx: Path, sentences: Sequence[str], threads: int, seq_len: int = 128) -> np.ndarray:
    """Per-sentence cosine between the exported teacher and student (the files users deploy), padded to seq_len."""
    from edgekit.core import compression as cr
    from edgekit.quality.metrics import cosine
    from edgekit.zoo import datasets as zoo_data
    from edgekit.zoo import models as zoo

    tok = zoo.minilm_tokenizer()
    t_sess, s_sess = cr.ort_session(Path(teacher_onnx), threads), cr.ort_session(Path(student_onnx), threads)
    out = []
    for s in sentences:
        feed = zoo_data.minilm_encode([s], tok, seq_len)
        out.append(cosine(t_sess.run(None, feed)[0], s_sess.run(None, feed)[0]))
    return np.asarray(out)


def minilm_report(run: MiniLMDistillRun, out_dir: Path, *, threads: int = 2, seq_len: int = 128,
                  progress: Optional[Callable[[str], None]] = None, shown: Optional[Callable[[Path], str]] = None) -> Dict[str, Any]:
    """Export teacher and student to ONNX (export step), time both in ORT, write report.json / report.md in out_dir."""
    import json

    from edgekit.zoo import models as zoo
    from edgekit.core.fsutil import atomic_write_text, ensure_writable_dir
    from edgekit.core.compression import count_params

    out_dir = ensure_writable_dir(Path(out_dir))
    say = progress or (lambda _m: None)
    say("exporting teacher and student to ONNX")
    t_path = export_minilm(run.teacher, out_dir / "teacher.onnx", seq_len)
    s_path = export_minilm(run.student, out_dir / "student.onnx", seq_len)
    say(f"timing both in ONNX Runtime (batch 1, seq {seq_len}, {threads} threads)")
    t_lat = onnx_latency_seq(t_path, threads, seq_len)
    s_lat = onnx_latency_seq(s_path, threads, seq_len)
    held = zoo.sentences(run.eval_sentences, "eval", 0)
    cos_onnx = onnx_cosines(t_path, s_path, held, threads, seq_len)
    rep = {
        "teacher": "zoo:minilm (all-MiniLM-L6-v2, 6 layers)",
        "student_layers": len(run.layers),
        "initialised_from_teacher_layers": run.layers,
        "train_sentences": run.train_sentences,
        "eval_sentences": run.eval_sentences,
        "recipe": run.recipe,
        "training": run.result.summary(),
        "cosine_before_training": {"mean": round(float(run.cosine_before.mean()), 4), "min": round(float(run.cosine_before.min()), 4)},
        "cosine_after_training": {"mean": round(float(run.cosine_after.mean()), 4), "min": round(float(run.cosine_after.min()), 4)},
        "cosine_onnx_seq128": {"mean": round(float(cos_onnx.mean()), 4), "min": round(float(cos_onnx.min()), 4),
                               "p05": round(float(np.quantile(cos_onnx, 0.05)), 4)},
        "params": {"teacher": count_params(run.teacher), "student": count_params(run.student)},
        "onnx_bytes": {"teacher": t_path.stat().st_size, "student": s_path.stat().st_size},
        "latency_ms": {"teacher": t_lat, "student": s_lat},
        "speedup": round(t_lat["median_ms"] / s_lat["median_ms"], 3),
        "latency_setup": f"ONNX Runtime FP32, CPUExecutionProvider, batch 1, seq {seq_len}, {threads} threads",
        "files": {"teacher": (shown or str)(t_path), "student": (shown or str)(s_path)},  # shown: where they are once --out is swapped in
    }
    atomic_write_text(out_dir / "report.json", json.dumps(rep, indent=2))
    atomic_write_text(out_dir / "report.md", render_minilm_markdown(rep))
    return rep


def render_minilm_markdown(rep: Dict[str, Any]) -> str:
    t, s = rep["latency_ms"]["teacher"], rep["latency_ms"]["student"]
    tr = rep["training"]
    return "\n".join([
        "# Distilled MiniLM student",
        "",
        f"Teacher {rep['teacher']}; student keeps {rep['student_layers']} layers initialised from teacher layers "
        f"{rep['initialised_from_teacher_layers']} (embeddings copied), trained {tr['steps']} steps in {tr['seconds']} s on "
        f"{rep['train_sentences']} real sentences (edgekit.zoo.datasets.sentences split 'train'), loss {tr['loss_first']} -> {tr['loss_last']}.",
        "",
        "| | teacher | student |",
        "|---|---|---|",
        f"| parameters | {rep['params']['teacher'] / 1e6:.2f} M | {rep['params']['student'] / 1e6:.2f} M |",
        f"| ONNX size | {rep['onnx_bytes']['teacher'] / 1e6:.1f} MB | {rep['onnx_bytes']['student'] / 1e6:.1f} MB |",
        f"| latency median ({rep['latency_setup']}) | {t['median_ms']} ms | {s['median_ms']} ms |",
        f"| latency p90 | {t['p90_ms']} ms | {s['p90_ms']} ms |",
        "",
        f"Speed-up: **{rep['speedup']}x**.",
        "",
        f"Embedding cosine to the teacher on {rep['eval_sentences']} held-out sentences (split 'eval'): "
        f"before training {rep['cosine_before_training']['mean']} (min {rep['cosine_before_training']['min']}), "
        f"after **{rep['cosine_after_training']['mean']}** (min {rep['cosine_after_training']['min']}); "
        f"exported ONNX at seq 128: mean {rep['cosine_onnx_seq128']['mean']}, 5th percentile {rep['cosine_onnx_seq128']['p05']}, "
        f"min {rep['cosine_onnx_seq128']['min']}.",
        "",
    ])
