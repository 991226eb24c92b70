"""The `edgekit compress` workflow: one compression step on a model, its ONNX export, and report.json / report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

from edgekit.core.compression import (eval_feeds, fidelity, onnx_outputs, render_markdown, run_export_step, torch_outputs,
                                      zipped_size)


METHODS = {
    "prune": ("prune", {"mode": "structured"}),
    "prune-unstructured": ("prune", {"mode": "unstructured"}),
    "lowrank": ("lowrank", {}),
    "weight-share": ("weight-share", {}),
}


def compress(model: Any, method: str, out_dir: Path, *, profile: Any, settings: Optional[Dict[str, Any]] = None,
             export: bool = True, eval_samples: int = 16, trust_pickle: bool = False,
             progress: Optional[Callable[[str], None]] = None, finetune_s: Optional[float] = None,
             finetune_samples: int = 256) -> Dict[str, Any]:
    """Run one compression step (+ ONNX export of a PyTorch result), re-check fidelity, write report.json / report.md.

    With `finetune_s`, prune / low-rank results are fine-tuned for that many seconds by distillation from the source
    model on calibration data (the zoo's, no labels); fidelity is measured after fine-tuning.

    `out_dir` is one coherent run, as deploy's --out: locked against a second writer, written into a staging directory
    beside it and swapped in only when the run finished (core/outdir.py); a failed run leaves it as it was."""
    from edgekit.core.outdir import OutDir

    outdir = OutDir(out_dir).open()
    try:
        rec = _compress(model, method, outdir.stage, outdir.shown_path, profile=profile, settings=settings, export=export,
                        eval_samples=eval_samples, trust_pickle=trust_pickle, progress=progress, finetune_s=finetune_s,
                        finetune_samples=finetune_samples)
        outdir.commit()
        return rec
    finally:
        outdir.abort()  # no-op after a commit


def _compress(model: Any, method: str, out_dir: Path, shown: Callable[[Path], str], *, profile: Any, settings: Optional[Dict[str, Any]],
              export: bool, eval_samples: int, trust_pickle: bool, progress: Optional[Callable[[str], None]], finetune_s: Optional[float],
              finetune_samples: int) -> Dict[str, Any]:
    import json

    from edgekit.workflows.deploy import build_data, resolve_model
    from edgekit.core.errors import UsageError
    from edgekit.core.fsutil import atomic_copy, atomic_write_text, ensure_writable_dir
    from edgekit.core.registry import get_step
    from edgekit.core.steps import StepContext

    if method not in METHODS:
        raise UsageError(f"unknown compression method '{method}'", hint=f"choose one of {', '.join(METHODS)}")
    step_name, fixed = METHODS[method]
    out_dir = ensure_writable_dir(Path(out_dir))
    resolved = resolve_model(model, trust_pickle=trust_pickle)
    src = resolved.artifact
    step = get_step(step_name)
    if src.format not in step.accepts:
        raise UsageError(f"{method} works on {' or '.join(step.accepts)} models; {resolved.label} is {src.format}",
                         hint="load the PyTorch module through the Python API, or export to ONNX first (lowrank/weight-share accept ONNX)")
    cfg = step.Config(**{**fixed, **(settings or {}), "eval_samples": eval_samples})
    data = build_data(resolved)
    ctx = StepContext(work_dir=out_dir / "work", profile=profile, eval_data=data.eval, task_metric=data.task_metric,
                      task_metric_name=data.task_metric_name, progress=progress)
    tuning: Dict[str, Any] = {}
    if finetune_s is not None:
        if method not in ("prune", "prune-unstructured", "lowrank"):
            raise UsageError(f"--finetune applies to prune and lowrank, not {method}", hint="drop --finetune")
        if data.calib is None:
            raise UsageError(f"--finetune needs calibration data for {resolved.label}", hint="use a zoo model (its data), or the Python API with your feeds")
    names = [t.name for t in src.inputs]
    if finetune_s is not None and step_name == "prune":
        import torch

        from edgekit.converters.finetune import finetune_module

        def tune(model: Any) -> None:
            tuning.update(finetune_module(torch, model, src.module, data.calib(finetune_samples), names, budget_s=finetune_s, say=progress or (lambda m: None)))

        produced = step(finetune=tune).run(src, cfg, ctx)
    else:
        from edgekit.core.errors import StepSkipped

        try:
            produced = step().run(src, cfg, ctx)
        except StepSkipped as skip:  # in a pipeline a skip passes the input on; here the one asked-for step did nothing
            raise UsageError(f"{method} cannot compress {resolved.label}: {skip.reason}", hint="try another --method, or adjust its setting") from None
    if finetune_s is not None and step_name == "lowrank":
        import torch

        from edgekit.core.artifact import load_artifact
        from edgekit.core.fsutil import atomic_write_bytes
        from edgekit.converters.finetune import finetune_module, finetune_onnx

        say = progress or (lambda m: None)
        feeds = data.calib(finetune_samples)
        if produced.format == "onnx":
            tuned, info = finetune_onnx(torch, produced.path, src.path, feeds, budget_s=finetune_s, say=say)
            path = atomic_write_bytes(Path(produced.path).with_suffix(".finetuned.onnx"), tuned.SerializeToString())
            produced = load_artifact(path, metadata=produced.metadata)
        else:
            info = finetune_module(torch, produced.module, src.module, feeds, names, budget_s=finetune_s, say=say, step_name="lowrank")
        tuning.update(info)
    rec = ctx.report[step_name]
    if tuning:
        rec["finetune"] = tuning
    rec["model"] = resolved.label
    rec["profile"] = profile.name
    rec["cli_method"] = method
    final = None
    if produced.format == "onnx":
        final = atomic_copy(produced.path, out_dir / "model.onnx")
    elif export:
        if progress:
            progress("exporting the compressed module to ONNX (export step)")
        final = run_export_step(produced, out_dir / "model.onnx")
        # re-check fidelity of the exported file against the original model on the same eval feeds
        feeds, source = eval_feeds(ctx, src, eval_samples)
        names = [t.name for t in src.inputs]
        ref = torch_outputs(src.module, feeds, names) if src.format == "pytorch" else onnx_outputs(Path(src.path), feeds, profile.threads)
        rec["exported_fidelity"] = fidelity(ref, onnx_outputs(final, feeds, profile.threads), ctx)
        rec["exported_bytes"] = final.stat().st_size
        rec["exported_zipped_bytes"] = zipped_size(final)
    if tuning and produced.format == "onnx" and final is not None:
        # the step measured fidelity before fine-tuning: measure the fine-tuned model against the original
        feeds, _ = eval_feeds(ctx, src, eval_samples)
        ref = torch_outputs(src.module, feeds, names) if src.format == "pytorch" else onnx_outputs(Path(src.path), feeds, profile.threads)
        rec["finetuned_fidelity"] = fidelity(ref, onnx_outputs(final, feeds, profile.threads), ctx)
    if final is not None:
        rec["output"] = shown(final)  # where it is once the staged run is swapped into --out
    atomic_write_text(out_dir / "report.json", json.dumps(rec, indent=2, default=str))
    md = render_markdown(rec)
    if "exported_fidelity" in rec:
        f = rec["exported_fidelity"]
        md += (f"\nexported ONNX ({rec['exported_bytes'] / 1e6:.2f} MB, zipped {rec['exported_zipped_bytes'] / 1e6:.2f} MB) "
               f"vs the original: cosine mean {f['cosine_mean']}, min {f['cosine_min']}"
               + (f", {f['task_metric']} {f['task_score']}" if "task_score" in f else "") + "\n")
    if tuning:
        md += (f"\nfine-tuned by distillation from the source: {tuning['steps']} steps in {tuning['train_s']} s "
               f"(budget {tuning['budget_s']:g} s), loss {tuning['loss_first']} -> {tuning['loss_last']}\n")
        if "finetuned_fidelity" in rec:
            f = rec["finetuned_fidelity"]
            md += (f"fine-tuned model vs the original: cosine mean {f['cosine_mean']}, min {f['cosine_min']}"
                   + (f", {f['task_metric']} {f['task_score']}" if "task_score" in f else "") + "\n")
    atomic_write_text(out_dir / "report.md", f"# edgekit compress: {resolved.label} ({method})\n\n" + md)
    return rec
