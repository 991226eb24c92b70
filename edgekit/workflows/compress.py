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
             progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run one compression step (+ ONNX export of a PyTorch result), re-check fidelity, write report.json / report.md."""
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
    from edgekit.core.errors import StepSkipped

    try:
        produced = step().run(src, cfg, ctx)
    except StepSkipped as skip:  # in a pipeline a skip passes the input on; here the one asked-for step did nothing
        raise UsageError(f"{method} cannot compress {resolved.label}: {skip.reason}", hint="try another --method, or adjust its setting") from None
    rec = ctx.report[step_name]
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
    if final is not None:
        rec["output"] = str(final)
    atomic_write_text(out_dir / "report.json", json.dumps(rec, indent=2, default=str))
    md = render_markdown(rec)
    if "exported_fidelity" in rec:
        f = rec["exported_fidelity"]
        md += (f"\nexported ONNX ({rec['exported_bytes'] / 1e6:.2f} MB, zipped {rec['exported_zipped_bytes'] / 1e6:.2f} MB) "
               f"vs the original: cosine mean {f['cosine_mean']}, min {f['cosine_min']}"
               + (f", {f['task_metric']} {f['task_score']}" if "task_score" in f else "") + "\n")
    atomic_write_text(out_dir / "report.md", f"# edgekit compress: {resolved.label} ({method})\n\n" + md)
    return rec
