"""Fidelity: run artifacts in-process on reference inputs and compare their outputs with the source's."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from edgekit.core import runtimes
from edgekit.core.artifact import Artifact
from edgekit.core.errors import ArtifactRunError, EdgekitError, require
from edgekit.core.results import FidelityResult
from edgekit.core.steps import FidelityBudget
from edgekit.quality.metrics import cosine

Feeds = Dict[str, np.ndarray]
Outputs = List[np.ndarray]



def _torch_module(artifact: Artifact):
    if artifact.module is not None:
        return artifact.module
    torch = require("torch", "torch", "running PyTorch models")
    if artifact.format == "torchscript":
        return torch.jit.load(str(artifact.path), map_location="cpu")
    if artifact.format == "exported_program":
        return torch.export.load(str(artifact.path)).module()
    from edgekit.core.artifact import load_pickled_module

    return load_pickled_module(artifact.path, bool(artifact.metadata.get("trust_pickle")))


def _predict_torch(artifact: Artifact, feeds: Sequence[Feeds], threads: int) -> List[Outputs]:
    torch = require("torch", "torch", "running PyTorch models")
    from edgekit.core.artifact import _flatten_torch_outputs

    module = _torch_module(artifact)
    if hasattr(module, "eval"):
        module.eval()
    names = [t.name for t in artifact.inputs]
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out: List[Outputs] = []
        with torch.no_grad():
            for feed in feeds:
                args = [torch.from_numpy(np.asarray(feed[n], order="C")) for n in names]  # keeps rank-0 inputs rank 0
                res = _flatten_torch_outputs(module(*args))
                out.append([r.detach().cpu().numpy() for r in res])
        return out
    finally:
        torch.set_num_threads(prev)


def _to_model_feed(artifact: Artifact, feed: Feeds) -> Feeds:
    """Map a feed in the source layout/names onto the artifact's own (e.g. NHWC TFLite inputs)."""
    meta = artifact.metadata
    name_map: Dict[str, str] = meta.get("input_name_map", {})
    transpose: Dict[str, List[int]] = meta.get("feed_transpose", {})
    out = {}
    for name, value in feed.items():
        mname = name_map.get(name, name)
        if mname in transpose:
            value = np.asarray(np.transpose(value, transpose[mname]), order="C")
        out[mname] = value
    return out


def _from_model_outputs(artifact: Artifact, outputs: Outputs) -> Outputs:
    meta = artifact.metadata
    order: Optional[List[int]] = meta.get("output_order")
    if order is not None:
        outputs = [outputs[i] for i in order]
    transpose: Dict[str, List[int]] = meta.get("output_transpose", {})
    return [np.transpose(o, transpose[str(i)]) if str(i) in transpose else o for i, o in enumerate(outputs)]


def predict(artifact: Artifact, feeds: Sequence[Feeds], threads: int = 2) -> List[Outputs]:
    """Outputs of `artifact` for each feed, in the source model's output order and layout."""
    if artifact.format in ("pytorch", "torchscript", "exported_program"):
        return _predict_torch(artifact, feeds, threads)
    rt = runtimes.for_format(artifact.format)
    if rt is None or not rt.host_fidelity:
        raise EdgekitError(
            f"{artifact.path}: a {artifact.format} artifact cannot be run on this host for a fidelity check",
            hint="it is checked on the device instead",
        )
    from edgekit.core.registry import harness_module

    # the same adapter the device runs, opened in-process with the options the device will use
    try:
        session = harness_module("adapters").open_session(rt.harness_adapter, str(artifact.path), threads, rt.session_options(artifact.precision))
        results = []
        for feed in feeds:
            outs = session.run(_to_model_feed(artifact, feed))
            results.append(_from_model_outputs(artifact, [np.asarray(o) for o in outs]))
    except harness_module("errors").HarnessError as exc:
        first = str(exc.message).strip().splitlines()
        raise ArtifactRunError(
            f"{artifact.path}: {rt.name} on this host cannot run it: " + " / ".join(first[-3:])[:600],
            hint=exc.hint or "choose another runtime (--runtime), or report the model if the runtime should support it",
        ) from exc
    return results


def compare(
    ref: Sequence[Outputs],
    new: Sequence[Outputs],
    budget: FidelityBudget,
    task_metric: Optional[Callable[[Any, Any], float]] = None,
    task_metric_name: Optional[str] = None,
    data: str = "random",
) -> FidelityResult:
    """Cosine, max abs/rel error, argmax agreement and the task metric of `new` against `ref`."""
    if len(ref) != len(new):
        raise EdgekitError(f"fidelity: {len(ref)} reference results but {len(new)} candidate results")
    cosines, abs_errs, rel_errs, agree = [], [], [], []
    failures: List[str] = []
    for i, (r_outs, n_outs) in enumerate(zip(ref, new)):
        if len(r_outs) != len(n_outs):
            failures.append(f"sample {i}: {len(n_outs)} outputs, source has {len(r_outs)}")
            continue
        for j, (r, n) in enumerate(zip(r_outs, n_outs)):
            r = np.asarray(r)
            n = np.asarray(n)
            if r.shape != n.shape:
                if r.size == n.size:
                    n = n.reshape(r.shape)
                else:
                    failures.append(f"sample {i} output {j}: shape {n.shape}, source has {r.shape}")
                    continue
            if not np.issubdtype(r.dtype, np.number):
                continue
            rf = r.astype(np.float64)
            nf = n.astype(np.float64)
            if not np.all(np.isfinite(nf)):
                failures.append(f"sample {i} output {j}: contains NaN/Inf")
                continue
            diff = np.abs(rf - nf)
            # Near-zero outputs (e.g. a text map of a page without text) make cosine meaningless: values equal
            # within float32 rounding of the output's own scale count as identical.
            scale_ref = float(np.abs(rf).max()) if rf.size else 0.0
            if diff.size and float(diff.max()) <= 1e-5 * max(1.0, scale_ref):
                cosines.append(1.0)
            else:
                cosines.append(cosine(rf, nf))
            abs_errs.append(float(diff.max()) if diff.size else 0.0)
            scale = float(np.abs(rf).max()) if rf.size else 0.0
            rel_errs.append(float(diff.max() / scale) if scale > 0 else float(diff.max()))
            # argmax over the last axis means something for [N, C] scores and [N, T, C] sequences, not for maps
            if rf.ndim in (2, 3) and rf.shape[-1] > 1:
                agree.append(float(np.mean(np.argmax(rf, axis=-1) == np.argmax(nf, axis=-1))))
    task_score = None
    if task_metric is not None and not failures:
        task_score = float(task_metric(list(ref), list(new)))
    res = FidelityResult(
        samples=len(ref),
        cosine_min=min(cosines) if cosines else 0.0,
        cosine_mean=float(np.mean(cosines)) if cosines else 0.0,
        max_abs_error=max(abs_errs) if abs_errs else 0.0,
        max_rel_error=max(rel_errs) if rel_errs else 0.0,
        argmax_agreement=float(np.mean(agree)) if agree else None,
        task_metric=task_metric_name if task_score is not None else None,
        task_score=task_score,
        passed=False,
        failures=failures,
        data=data,
    )
    if cosines and res.cosine_min < budget.min_cosine:
        failures.append(f"cosine {res.cosine_min:.6f} < {budget.min_cosine}")
    if budget.max_abs_error is not None and res.max_abs_error > budget.max_abs_error:
        failures.append(f"max abs error {res.max_abs_error:.3g} > {budget.max_abs_error}")
    if budget.max_rel_error is not None and res.max_rel_error > budget.max_rel_error:
        failures.append(f"max rel error {res.max_rel_error:.3g} > {budget.max_rel_error}")
    if budget.min_argmax_agreement is not None and res.argmax_agreement is not None and res.argmax_agreement < budget.min_argmax_agreement:
        failures.append(f"argmax agreement {res.argmax_agreement:.4f} < {budget.min_argmax_agreement}")
    if budget.min_task_score is not None and task_score is not None and task_score < budget.min_task_score:
        failures.append(f"{task_metric_name or 'task score'} {task_score:.4f} < {budget.min_task_score}")
    if not cosines and not failures:
        failures.append("no numeric outputs to compare")
    return res.model_copy(update={"passed": not failures, "failures": failures})


def describe(res: FidelityResult) -> str:
    """One line for tables and messages."""
    parts = [f"cos {res.cosine_min:.5f}", f"max|Δ| {res.max_abs_error:.2e}"]
    if res.argmax_agreement is not None:
        parts.append(f"argmax {res.argmax_agreement:.3f}")
    if res.task_score is not None:
        parts.append(f"{res.task_metric} {res.task_score:.4f}")
    parts.append(f"n={res.samples} ({res.data})")
    return ", ".join(parts)
