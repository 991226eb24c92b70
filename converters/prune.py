"""Pruning of PyTorch modules: structured (channels/heads/neurons removed via Torch-Pruning) or unstructured (zeros)."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple

from pydantic import Field

from edgekit.core.artifact import Artifact
from edgekit.core.errors import StepError, require
from edgekit.core.steps import Step, StepConfig, StepContext

Finetune = Callable[[Any], None]


class PruneConfig(StepConfig):
    """Pruning settings; `ratio` is the fraction of channels/heads/neurons (structured) or weights (unstructured) removed."""

    mode: Literal["structured", "unstructured"] = "structured"
    ratio: float = Field(0.3, gt=0.0, lt=1.0)
    head_ratio: Optional[float] = Field(None, ge=0.0, lt=1.0, description="attention heads removed (default: ratio)")
    importance: Literal["l1", "l2"] = "l2"
    ignore: List[str] = Field(default_factory=list, description="module names never pruned (the output layer is always kept)")
    include_embeddings: bool = Field(False, description="unstructured: also zero embedding tables")
    round_to: Optional[int] = Field(None, gt=0, description="structured: keep channel counts a multiple of this")
    eval_samples: int = Field(16, gt=0)
    measure: bool = Field(True, description="also time before/after (temporary ONNX export, ORT at profile threads) and count MACs")
    finetune_s: Optional[float] = Field(None, gt=0, description="recover accuracy: distil the pruned module from the source module on "
                                        "calibration data (no labels) for this many seconds (compound prune -> distill -> INT8)")
    finetune_samples: int = Field(256, gt=0, description="calibration samples the distillation trains on")
    finetune_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the distillation")
    finetune_batch: int = Field(16, gt=0)
    finetune_max_steps: Optional[int] = Field(None, gt=0, description="stop the distillation after this many steps even if time remains")
    threads: Optional[int] = Field(None, gt=0, description="torch threads for the distillation (default: torch's)")


def _attention_modules(model: Any) -> List[Any]:
    """Self-attention blocks shaped like HF BERT (query/key/value Linears and a num_attention_heads count)."""
    import torch.nn as nn

    return [m for m in model.modules() if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value"))
            and hasattr(m, "num_attention_heads")]


def _ffn_up_projections(model: Any) -> List[Any]:
    """FFN expansion Linears (HF `*.intermediate.dense`, or `fc1`/`up_proj`) whose output neurons may be removed."""
    import torch.nn as nn

    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and (name.endswith("intermediate.dense") or name.endswith((".fc1", ".up_proj", ".c_fc"))):
            out.append(m)
    return out


def _last_layer(model: Any, example_inputs: Tuple[Any, ...]) -> Optional[Any]:
    """The last Linear/Conv executed in a forward pass: its outputs are the model's outputs, so it is never pruned."""
    import torch
    import torch.nn as nn

    order: List[Any] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod)) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return order[-1] if order else None


def _output_transform(out: Any) -> Any:
    from edgekit.core.artifact import _flatten_torch_outputs

    return sum(o.float().sum() for o in _flatten_torch_outputs(out))


def structured_prune(module: Any, example_inputs: Tuple[Any, ...], cfg: PruneConfig) -> Tuple[Any, Dict[str, Any]]:
    """Remove channels/heads/neurons with a Torch-Pruning dependency graph; returns the pruned copy and what was removed."""
    tp = require("torch_pruning", "prune", "structured pruning")
    import torch.nn as nn

    model = copy.deepcopy(module).eval()
    by_name = dict(model.named_modules())
    unknown = [n for n in cfg.ignore if n not in by_name]
    if unknown:
        raise StepError("prune", f"ignore: no module named {unknown}", hint="use names from model.named_modules()")
    ignored = [by_name[n] for n in cfg.ignore]
    attn = _attention_modules(model)
    num_heads: Dict[Any, int] = {}
    details: Dict[str, Any] = {"kind": "generic"}
    if attn:
        # Transformer: keep the hidden (residual/embedding) width so the output shape is unchanged; prune heads and FFN neurons.
        prunable = {m for a in attn for m in (a.query, a.key, a.value)} | set(_ffn_up_projections(model))
        for a in attn:
            for lin in (a.query, a.key, a.value):
                num_heads[lin] = int(a.num_attention_heads)
        ignored += [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd)) and m not in prunable]
        details = {"kind": "transformer", "heads_before": [int(a.num_attention_heads) for a in attn]}
    else:
        last = _last_layer(model, example_inputs)
        if last is not None:
            ignored.append(last)
    imp = tp.importance.GroupMagnitudeImportance(p=1 if cfg.importance == "l1" else 2)
    head_ratio = cfg.ratio if cfg.head_ratio is None else cfg.head_ratio
    kwargs: Dict[str, Any] = {}
    if num_heads:
        kwargs.update(num_heads=num_heads, prune_num_heads=head_ratio > 0, prune_head_dims=False, head_pruning_ratio=head_ratio)
    try:
        pruner = tp.pruner.MetaPruner(
            model, example_inputs, importance=imp, pruning_ratio=cfg.ratio, ignored_layers=ignored,
            round_to=cfg.round_to, output_transform=_output_transform, **kwargs,
        )
        groups = 0
        for group in pruner.step(interactive=True):
            group.prune()
            groups += 1
    except Exception as exc:  # tracing/dependency failures come from torch-pruning with varied types
        raise StepError("prune", "Torch-Pruning could not build or apply the dependency graph for this module",
                        hint="list layers it cannot handle in `ignore`, or use mode: unstructured",
                        tool_message=f"{type(exc).__name__}: {exc}") from exc
    details["groups_pruned"] = groups
    if attn:
        for a in attn:
            heads = int(pruner.num_heads.get(a.query, a.num_attention_heads))
            a.num_attention_heads = heads
            a.all_head_size = a.query.out_features
            if heads and hasattr(a, "attention_head_size"):
                a.attention_head_size = a.query.out_features // heads
        details["heads_after"] = [int(a.num_attention_heads) for a in attn]
        cfg_obj = getattr(model, "config", None) or next((getattr(m, "config") for m in model.modules() if hasattr(m, "config")), None)
        if cfg_obj is not None and len(set(details["heads_after"])) == 1 and hasattr(cfg_obj, "num_attention_heads"):
            # the HF config is shared by all layers; keep it consistent when every layer has the same head count
            cfg_obj.num_attention_heads = details["heads_after"][0]
            if hasattr(cfg_obj, "intermediate_size"):
                ffn = _ffn_up_projections(model)
                if ffn and len({f.out_features for f in ffn}) == 1:
                    cfg_obj.intermediate_size = ffn[0].out_features
        details["ffn_neurons_after"] = [int(f.out_features) for f in _ffn_up_projections(model)]
    return model, details


def unstructured_prune(module: Any, cfg: PruneConfig) -> Tuple[Any, Dict[str, Any]]:
    """Zero the smallest-|w| fraction of each Linear/Conv weight (torch l1_unstructured, then made permanent)."""
    import torch
    import torch.nn as nn
    from torch.nn.utils import prune as tprune

    model = copy.deepcopy(module).eval()
    kinds: Tuple[type, ...] = (nn.Linear, nn.modules.conv._ConvNd) + ((nn.Embedding,) if cfg.include_embeddings else ())
    skip = set(cfg.ignore)
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and n not in skip]
    if not targets:
        raise StepError("prune", "no Linear/Conv layers to prune in this module", hint="check `ignore`, or set include_embeddings")
    zeros = total = 0
    for _, m in targets:
        tprune.l1_unstructured(m, name="weight", amount=cfg.ratio)
        tprune.remove(m, "weight")
        with torch.no_grad():
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return model, {"kind": "unstructured", "layers": len(targets), "pruned_weights": total, "zeros": zeros,
                   "sparsity": round(zeros / total, 6)}


def prune(module: Any, example_inputs: Any, *, mode: str = "structured", ratio: float = 0.3,
          finetune: Optional[Finetune] = None, **config: Any) -> Tuple[Any, Dict[str, Any]]:
    """Python API: prune a copy of `module`; `finetune(model)` (your training loop and data) runs on the pruned copy."""
    cfg = PruneConfig(mode=mode, ratio=ratio, **config)
    ex = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    model, details = structured_prune(module, ex, cfg) if cfg.mode == "structured" else unstructured_prune(module, cfg)
    if finetune is not None:
        finetune(model)
        model.eval()
        details["finetuned"] = True
    return model, details


class PruneStep(Step):
    """Structured pruning shrinks params/MACs/latency for real; unstructured only adds zeros (zipped size shrinks)."""

    name = "prune"
    summary = "Prune a PyTorch module: structured (heads/neurons/channels removed) or unstructured (magnitude zeros)."
    accepts = ("pytorch",)
    produces = "pytorch"
    Config = PruneConfig
    requires = (("torch", "torch"), ("torch_pruning", "prune"))

    def __init__(self, finetune: Optional[Finetune] = None):
        self.finetune = finetune

    def run(self, artifact: Artifact, config: PruneConfig, ctx: StepContext) -> Artifact:
        from edgekit.core import compression as cr

        cr.require_module(self.name, artifact)
        tune = self.finetune
        tuning: Dict[str, Any] = {}
        if tune is None and config.finetune_s:
            tune = self._distill(artifact, config, ctx, tuning)
        model, details = prune(artifact.module, artifact.example_inputs, finetune=tune,
                               **config.model_dump(exclude={"fidelity", "eval_samples", "measure", "finetune_s", "finetune_samples",
                                                            "finetune_lr", "finetune_batch", "finetune_max_steps", "threads"}))
        if tuning:
            details["finetune"] = tuning
        notes: List[str] = []
        extra = {"method": f"{config.mode} pruning", "settings": {"ratio": config.ratio, "head_ratio": config.head_ratio,
                                                                   "importance": config.importance}, "details": details}
        out = cr.finish_module_step(self.name, artifact, model, ctx, {**extra, "notes": notes},
                                    eval_samples=config.eval_samples, measure=config.measure)
        rec = ctx.report[self.name]
        if config.mode == "unstructured":
            b, a = rec["before"], rec["after"]
            lat = (f"latency {b['latency']['median_ms']} vs {a['latency']['median_ms']} ms "
                   f"({a['latency']['backend']}, {a['latency']['threads']} threads); "
                   if "latency" in a else "latency not measured (measure: false); ")
            msg = (f"{cr.DENSE_NOTE}: {lat}zipped size {b['zipped_bytes'] / 1e6:.2f} vs {a['zipped_bytes'] / 1e6:.2f} MB "
                   f"(on disk {b['size_bytes'] / 1e6:.2f} vs {a['size_bytes'] / 1e6:.2f} MB) - {cr.DENSE_WHY}")
            rec["notes"].append(msg)
            ctx.note(f"prune: {msg}")
        if tuning:
            rec["finetune"] = tuning
            rec["notes"].append(f"distilled from the source module for {tuning['train_s']:.0f} s ({tuning['steps']} steps on "
                                f"{tuning['samples']} calibration samples; loss {tuning['loss_first']:.5f} -> {tuning['loss_last']:.5f})")
        elif details.get("finetuned"):
            rec["notes"].append("fine-tuned after pruning with the user-supplied function")
        return out

    @staticmethod
    def _distill(artifact: Artifact, config: PruneConfig, ctx: StepContext, record: Dict[str, Any]) -> Finetune:
        """A finetune callable for `finetune_s`: distillation from the source module on the context's calibration data."""
        from edgekit.core.errors import CalibrationError

        if ctx.calib_data is None:
            raise CalibrationError("step 'prune': finetune_s needs calibration data to distil the pruned module on, and none was given",
                                   hint="pass --calib DIR (feeds matching the model inputs; no labels), or drop finetune_s")
        torch = require("torch", "torch", "distillation after pruning")
        from edgekit.core import compression as cr
        from edgekit.converters.finetune import finetune_module

        names = cr.module_io(artifact)[0]
        feeds = [{k: v for k, v in f.items()} for f in ctx.calib_data(config.finetune_samples)]
        missing = [n for n in names if feeds and n not in feeds[0]]
        if missing:
            raise CalibrationError(f"step 'prune': calibration feeds lack input(s) {missing} of the module", hint="give feeds for every model input")

        def tune(model: Any) -> None:
            before = torch.get_num_threads()
            if config.threads:
                torch.set_num_threads(config.threads)
            try:
                record.update(finetune_module(torch, model, artifact.module, feeds, names, budget_s=float(config.finetune_s),
                                              lr=config.finetune_lr, batch_size=config.finetune_batch,
                                              max_steps=config.finetune_max_steps, say=ctx.progress or (lambda m: None)))
            finally:
                torch.set_num_threads(before)
        return tune
