"""Fidelity: run artifacts in-process on reference inputs and compare their outputs with the source's."""

from __future__ import annotations

from pathlib import Path
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
        session = harness_module("adapters").open_session(rt.harness_adapter, str(artifact.path), threads, rt.session_options(artifact.precision, artifact.metadata))
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
    interval = None
    if task_metric is not None and not failures:
        task_score = float(task_metric(list(ref), list(new)))
    if not failures and len(ref):
        interval = _interval(ref, new, task_metric)
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
        interval=interval,
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


def _interval(ref: Sequence[Outputs], new: Sequence[Outputs], task_metric) -> Optional[Dict[str, float]]:
    """95 % bootstrap interval of the score (task metric, else mean output cosine) over the samples."""
    from edgekit.quality.stats import mean_interval

    per: List[float] = []
    for r, n in zip(ref, new):
        if task_metric is not None:
            per.append(float(task_metric([r], [n])))
        else:
            cs = [cosine(a, b) for a, b in zip(r, n) if np.issubdtype(np.asarray(a).dtype, np.number)]
            if cs:
                per.append(float(np.mean(cs)))
    try:
        iv = mean_interval(per)
    except ValueError:
        return None
    return {"lo": iv["lo"], "hi": iv["hi"], "level": iv["level"]}


def score_of(res: FidelityResult) -> float:
    """The one number a budget judges: the task score, else the mean output cosine."""
    return res.task_score if res.task_score is not None else res.cosine_mean


def describe(res: FidelityResult) -> str:
    """One line for tables and messages."""
    parts = [f"cos {res.cosine_min:.5f}", f"max|Δ| {res.max_abs_error:.2e}"]
    if res.argmax_agreement is not None:
        parts.append(f"argmax {res.argmax_agreement:.3f}")
    if res.task_score is not None:
        parts.append(f"{res.task_metric} {res.task_score:.4f}")
    if res.interval is not None:
        parts.append(f"95% [{res.interval['lo']:.4f}, {res.interval['hi']:.4f}]")
    parts.append(f"n={res.samples} ({res.data})")
    if res.where == "device":
        parts.append(f"on the device{' ' + res.device if res.device else ''}")
    if res.reduced and any(h != "full" for h in res.reduced):
        parts.append(f"outputs kept there: {', '.join(res.reduced)} (the reference alike)")
    return ", ".join(parts)


# ---- on-device fidelity: the held-out feeds go to the device, the runtime's outputs come back (harness evaluate.py)
def write_eval_feeds(artifact: Artifact, feeds: Sequence[Feeds], directory: Path) -> Path:
    """The feeds in the artifact's own names/layout as one compressed evaluation archive named by its content
    (written once: a re-run finds it, and the runner skips the upload when the device has the same sha256)."""
    import hashlib

    from edgekit.core.fsutil import atomic_write_bytes

    mapped = [_to_model_feed(artifact, f) for f in feeds]
    names = list(mapped[0]) if mapped else [t.name for t in artifact.inputs]
    arrays: Dict[str, np.ndarray] = {"__inputs__": np.array(names), "__samples__": np.array(len(mapped))}
    h = hashlib.sha256(repr((names, len(mapped))).encode())
    for i, feed in enumerate(mapped):
        for k, name in enumerate(names):
            a = np.asarray(feed[name])
            arrays[f"i{k}_s{i}"] = a
            h.update(f"{k}|{i}|{a.dtype.name}|{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    path = Path(directory) / f"eval-{h.hexdigest()[:16]}.npz"
    if not path.exists():
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
    return path


def outputs_path_for(device_inputs: str, artifact: Artifact, runtime: str) -> str:
    """Where the harness writes the outputs: beside the pushed feeds, named by artifact and runtime (device path)."""

    stem = device_inputs[: -len(".npz")] if device_inputs.endswith(".npz") else device_inputs
    return f"{stem}.out-{artifact.sha256[:16]}-{runtime}.npz"


def device_reductions(artifact: Artifact, reduce: Optional[Sequence[Optional[str]]]) -> Optional[List[str]]:
    """The harness's `eval_reduce` (device output order and axes) for `reduce`, one reduction per SOURCE output
    (DataSources.device_reduce); None when every output is fetched whole. A top-k along the source's last axis is
    taken along the device axis that becomes it (an NHWC TFLite output is transposed back on the host)."""
    if not reduce or all(r in (None, "", "full") for r in reduce):
        return None
    order: Optional[List[int]] = artifact.metadata.get("output_order")
    transpose: Dict[str, List[int]] = artifact.metadata.get("output_transpose", {})
    out = ["full"] * len(reduce)
    for j, how in enumerate(reduce):
        how = how or "full"
        perm = transpose.get(str(j))
        if how.startswith("topk:") and perm is not None:
            parts = how.split(":")
            axis = int(parts[2]) if len(parts) == 3 else -1
            how = f"topk:{parts[1]}:{perm[axis]}"
        out[order[j] if order is not None else j] = how
    return out


def _reduce_alike(outputs: Sequence[Outputs], reduce: Sequence[Optional[str]]) -> List[Outputs]:
    """The host's own outputs (source order/layout) reduced and expanded as the device's were: equal terms."""
    from edgekit.core.registry import harness_module

    r = harness_module("reduce")
    return [[r.expand(r.reduce_output(o, how or "full"), how or "full") for o, how in zip(outs, reduce)] for outs in outputs]


def read_eval_outputs(path: Path, artifact: Artifact, samples: int) -> List[Outputs]:
    """The device's outputs (fetched archive) in the source model's output order and layout; outputs the harness
    reduced (`__reduce__`, runners/harness/reduce.py) are expanded back to their shape."""
    from edgekit.core.registry import harness_module

    r = harness_module("reduce")
    where = f"evaluation outputs {path}"
    try:
        data = np.load(path, allow_pickle=False)
        n = int(data["__samples__"])
        n_out = len(data["__outputs__"])
        how = [str(x) for x in data["__reduce__"].tolist()] if "__reduce__" in data.files else ["full"] * n_out
        prefixes = [[f"o{j}_s{i}" for j in range(n_out)] for i in range(n)]
        out = [_from_model_outputs(artifact, [r.expand(_parts(data, p), h) for p, h in zip(row, how)]) for row in prefixes]
    except (OSError, ValueError, KeyError) as exc:
        raise EdgekitError(f"{where} are unreadable: {exc}", hint="re-run; if it persists, the harness on the device is out of date") from exc
    if n != samples:
        raise EdgekitError(f"{where} hold {n} samples, {samples} were sent", hint="re-run; the device may have run an older evaluation")
    return out


def _parts(data: Any, prefix: str) -> Dict[str, np.ndarray]:
    """One output's stored parts: the whole array under `prefix`, or reduce.py's parts under `prefix_PART`."""
    if prefix in data.files:
        return {"": np.asarray(data[prefix])}
    parts = {k[len(prefix) + 1:]: np.asarray(data[k]) for k in data.files if k.startswith(prefix + "_")}
    if not parts:
        raise KeyError(prefix)
    return parts


def device_label(result: Any) -> str:
    """'aarch64 (emulated) board-name, onnxruntime 1.x' for the device that computed the outputs."""
    dev = result.device
    label = dev.arch + (" (emulated)" if dev.emulated else "")
    if dev.device_model:
        label += f" {dev.device_model}"
    return f"{label}, {result.runtime.name} {result.runtime.version}"


def device_fidelity(ref: Sequence[Outputs], result: Any, runner: Any, artifact: Artifact, budget: FidelityBudget,
                    task_metric: Optional[Callable[[Any, Any], float]] = None, task_metric_name: Optional[str] = None,
                    data: str = "eval", reduce: Optional[Sequence[Optional[str]]] = None) -> FidelityResult:
    """Score the outputs the harness computed on the device (result.evaluation) against the source model's `ref`
    outputs on the same held-out feeds, with the same scorer as the host check. The runner fetches the archive.
    Outputs the device reduced (`reduce`, per source output, as sent with the feeds) are compared with `ref` reduced
    the same way: the task metric is exact, cosine/max|Δ| describe the reduced tensors."""
    import tempfile

    ev = result.evaluation
    if not ev or not ev.get("outputs_file"):
        raise EdgekitError("the device run returned no evaluation outputs", hint="the harness on the device is out of date; re-run")
    with tempfile.TemporaryDirectory(prefix="edgekit-eval-") as td:
        local = Path(td) / "outputs.npz"
        try:
            runner.pull(ev["outputs_file"], local)
        finally:
            _remove_on_device(runner, ev["outputs_file"])  # outputs are big (PP-OCR rec: ~1 MB a line); fetched once
        new = read_eval_outputs(local, artifact, len(ref))
    reduced = list(ev.get("reduce") or [])
    if reduced and any(h != "full" for h in reduced):
        src = [h or "full" for h in (reduce or [])]
        if len(src) != len(ref[0] if ref else src):
            raise EdgekitError(f"the device reduced its outputs ({', '.join(reduced)}) but the host has no matching reductions for the source's outputs",
                               hint="pass the same reduce= to benchmark() and device_fidelity()")
        ref = _reduce_alike(ref, src)
    else:
        src = None
    res = compare(ref, new, budget, task_metric, task_metric_name, data=data)
    return res.model_copy(update={"where": "device", "device": device_label(result), "reduced": src})


def _remove_on_device(runner: Any, path: str) -> None:
    """Delete the fetched outputs archive where the harness wrote it (the feeds stay: they are reused)."""
    import os

    if getattr(runner, "name", None) == "local":
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    exec_ = getattr(runner, "exec", None)
    if callable(exec_):
        try:
            exec_(["rm", "-f", path], 60.0)
        except (EdgekitError, OSError, TimeoutError):
            pass  # a leftover file in the work dir is not worth failing a finished run for


def check_row(where: str, res: Optional[FidelityResult], budget_score: float, metric: str, why: Optional[str] = None) -> Dict[str, Any]:
    """One side of the host/device comparison in a report: metric, score, drop, budget, n, interval, or why not."""
    if res is None:
        return {"where": where, "metric": metric, "measured": False, "status": f"not measured: {why or 'unknown reason'}",
                "budget": round(budget_score, 6)}
    s = score_of(res)
    return {"where": where, "metric": res.task_metric or "output cosine", "measured": True, "score": round(s, 6),
            "drop": round(1.0 - s, 6), "budget": round(budget_score, 6), "samples": res.samples,
            "interval": res.interval, "meets_budget": s >= budget_score - 1e-12, "device": res.device,
            "status": "measured" + (f" on {res.device}" if res.device else " on this host")}
