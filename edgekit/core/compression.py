"""Before/after measurements shared by the compression steps: size on disk and zipped, params, MACs, latency, fidelity."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from edgekit.core.errors import CalibrationError, StepError, require
from edgekit.core.fsutil import atomic_write_bytes
from edgekit.quality.metrics import cosine

DENSE_NOTE = "dense runtimes gain nothing from zeros"
DENSE_WHY = ("the zeros are still stored and multiplied as dense fp32 tensors; only the zipped size "
             "(and a sparse-aware runtime) can benefit")


def zipped_size(path: Path) -> int:
    """Bytes of `path` in a zip archive (DEFLATE, default level 6): what compression buys for download/storage."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.write(str(path), arcname=Path(path).name)
    return len(buf.getvalue())


def save_state(module: Any, path: Path) -> Path:
    """Write a module's state_dict atomically (torch.save) so its size on disk can be measured."""
    torch = require("torch", "torch", "saving a PyTorch module")
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def count_params(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def count_macs(module: Any, example_inputs: Sequence[Any]) -> Optional[int]:
    """MACs from torch-pruning's op counter (None if it cannot trace this module)."""
    tp = require("torch_pruning", "prune", "counting MACs")
    try:
        macs, _ = tp.utils.count_ops_and_params(module, tuple(example_inputs))
    except Exception:  # the counter's hooks fail on some custom modules; MACs are then reported as unknown
        return None
    return int(macs)


def export_onnx(module: Any, example_inputs: Sequence[Any], path: Path, input_names: List[str],
                output_names: Optional[List[str]] = None, dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None) -> Path:
    """Temporary ONNX export (legacy TorchScript exporter: fast, works for MiniLM) used to time the module in ORT."""
    torch = require("torch", "torch", "exporting to ONNX")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                module.eval(), tuple(example_inputs), str(path), input_names=input_names,
                output_names=output_names, dynamic_axes=dynamic_axes or None, opset_version=17, dynamo=False,
            )
    return path


def ort_session(path: Path, threads: int):
    ort = require("onnxruntime", "quantize", "timing ONNX models")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_callable(fn: Callable[[], Any], *, warmup: int = 3, min_runs: int = 10, min_seconds: float = 0.5) -> Dict[str, float]:
    """Median/p90 latency in ms, timed by the harness's own loop (edgekit.runners.harness.bench): `warmup` calls,
    then at least `min_runs` runs AND `min_seconds`, so compression reports measure exactly as benchmarks do."""
    from edgekit.core.registry import harness_module

    t = harness_module("bench").time_callable(fn, warmup_runs=warmup, min_runs=min_runs, min_seconds=min_seconds)
    return {"median_ms": round(t["median_ms"], 3), "p90_ms": round(t["p90_ms"], 3), "runs": t["runs"]}


def timed_onnx_call(path: Path, feed: Dict[str, np.ndarray], threads: int) -> tuple[Callable[[], Any], str]:
    """The call deploy's harness times for an ONNX file (the onnxruntime adapter's `bind`: run_with_iobinding, inputs
    bound once, outputs pre-allocated), so compress/distill reports time the same region as benchmarks do; returns
    (call, what the timed region is)."""
    from edgekit.core.registry import harness_module

    session = harness_module("adapters").open_session("onnxruntime", str(path), threads)
    names = set(session.input_names)
    step = session.bind({k: v for k, v in feed.items() if k in names})
    return step, session.options.get("timed_region", "")


def time_onnx(path: Path, feed: Dict[str, np.ndarray], threads: int, **kw) -> Dict[str, Any]:
    step, region = timed_onnx_call(path, feed, threads)
    res = time_callable(step, **kw)
    res.update({"backend": "onnxruntime", "threads": threads, "timed_region": region})
    return res


def time_torch(module: Any, example_inputs: Sequence[Any], threads: int, **kw) -> Dict[str, Any]:
    torch = require("torch", "torch", "timing PyTorch modules")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            res = time_callable(lambda: module(*example_inputs), **kw)
    finally:
        torch.set_num_threads(old)
    res.update({"backend": "torch-eager", "threads": threads})
    return res


def _flat_np(out: Any) -> List[np.ndarray]:
    from edgekit.core.artifact import _flatten_torch_outputs

    return [o.detach().cpu().numpy() if hasattr(o, "detach") else np.asarray(o) for o in _flatten_torch_outputs(out)]


def torch_feeds_to_args(feed: Dict[str, np.ndarray], input_names: List[str]) -> tuple:
    torch = require("torch", "torch", "running PyTorch modules")
    missing = [n for n in input_names if n not in feed]
    if missing:
        raise CalibrationError(
            f"evaluation feed has inputs {sorted(feed)} but the module needs {input_names} (missing {missing})",
            hint="give eval data keyed by the artifact's input names",
        )
    return tuple(torch.from_numpy(np.asarray(feed[n], order="C")) for n in input_names)


def torch_outputs(module: Any, feeds: List[Dict[str, np.ndarray]], input_names: List[str]) -> List[List[np.ndarray]]:
    torch = require("torch", "torch", "running PyTorch modules")
    outs = []
    with torch.inference_mode():
        for feed in feeds:
            outs.append(_flat_np(module.eval()(*torch_feeds_to_args(feed, input_names))))
    return outs


def onnx_outputs(path: Path, feeds: List[Dict[str, np.ndarray]], threads: int = 1) -> List[List[np.ndarray]]:
    sess = ort_session(path, threads)
    names = {i.name for i in sess.get_inputs()}
    return [list(sess.run(None, {k: v for k, v in f.items() if k in names})) for f in feeds]


def fidelity(ref: List[List[np.ndarray]], cand: List[List[np.ndarray]], ctx: Any = None) -> Dict[str, Any]:
    """Cosine (mean/min over samples, first output) and max abs error; the task metric when the context has one."""
    coss = [cosine(r[0], c[0]) for r, c in zip(ref, cand)]
    max_abs = max(float(np.max(np.abs(np.asarray(r[0], np.float64) - np.asarray(c[0], np.float64)))) for r, c in zip(ref, cand))
    out: Dict[str, Any] = {
        "samples": len(coss),
        "cosine_mean": round(float(np.mean(coss)), 6),
        "cosine_min": round(float(np.min(coss)), 6),
        "max_abs_error": round(max_abs, 6),
    }
    if ctx is not None and getattr(ctx, "task_metric", None) is not None:
        out["task_metric"] = getattr(ctx, "task_metric_name", None) or "task_metric"
        out["task_score"] = round(float(ctx.task_metric(ref, cand)), 6)
    return out


def eval_feeds(ctx: Any, artifact: Any, n: int) -> tuple[List[Dict[str, np.ndarray]], str]:
    """Evaluation feeds from the context; the artifact's example inputs (stated in the report) when none are given."""
    if ctx is not None and ctx.eval_data is not None:
        feeds = ctx.eval_data(n)
        if feeds:
            return feeds, "eval_data"
    if artifact.format == "pytorch" and artifact.example_inputs is not None:
        names = [t.name for t in artifact.inputs]
        return [{n_: t.detach().cpu().numpy() for n_, t in zip(names, artifact.example_inputs)}], "example_inputs (no eval data given)"
    return random_feeds(artifact, 1), "random inputs from the signature (no eval data given)"


def random_feeds(artifact: Any, n: int, seed: int = 0) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        feed = {}
        for spec in artifact.inputs:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
            if "int" in spec.dtype:
                feed[spec.name] = rng.integers(0, 100, size=shape).astype(spec.dtype)
            else:
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        feeds.append(feed)
    return feeds


def onnx_params(path: Path) -> int:
    onnx = require("onnx", "simplify", "reading ONNX models")
    from onnx import numpy_helper

    model = onnx.load(str(path))
    total = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    total += int(numpy_helper.to_array(a.t).size)
    return total


def measure_module(module: Any, example_inputs: Sequence[Any], work_dir: Path, label: str, threads: int,
                   input_names: List[str], dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None,
                   state_file: Optional[Path] = None, latency: bool = True, timed: bool = True) -> Dict[str, Any]:
    """Size (state_dict on disk, zipped, ONNX export), params, MACs and latency (ORT on a temporary export; torch eager if that fails).

    With latency=False only params and the state_dict sizes are measured (no export, no MACs, no timing)."""
    work_dir = Path(work_dir)
    state_file = state_file or save_state(module, work_dir / f"{label}.state.pt")
    m: Dict[str, Any] = {
        "params": count_params(module),
        "nonzero_params": int(sum(int((p != 0).sum()) for p in module.parameters())),
        "state_file": str(state_file),
        "size_bytes": state_file.stat().st_size,
        "zipped_bytes": zipped_size(state_file),
    }
    if not latency:
        return m
    m["macs"] = count_macs(module, example_inputs)
    onnx_path = work_dir / f"{label}.measure.onnx"
    try:
        export_onnx(module, example_inputs, onnx_path, input_names, dynamic_axes=dynamic_axes)
    except Exception as exc:  # exporter failures vary; we fall back to eager timing and say so in the report
        m["latency"] = time_torch(module, example_inputs, threads)
        m["latency"]["note"] = f"temporary ONNX export failed ({type(exc).__name__}: {str(exc)[:200]}); timed in torch eager"
        return m
    m["onnx_file"] = str(onnx_path)
    m["onnx_bytes"] = onnx_path.stat().st_size
    if timed:  # timed=False: the caller times before/after interleaved (compare_latency_onnx)
        feed = {n: t.detach().cpu().numpy() for n, t in zip(input_names, example_inputs)}
        m["latency"] = time_onnx(onnx_path, feed, threads)
    return m


def measure_onnx(path: Path, feed: Dict[str, np.ndarray], threads: int, latency: bool = True) -> Dict[str, Any]:
    """Size on disk, zipped, params (initializers + constants) and ORT latency of an ONNX file."""
    path = Path(path)
    m: Dict[str, Any] = {"params": onnx_params(path), "size_bytes": path.stat().st_size, "zipped_bytes": zipped_size(path)}
    if latency:
        m["latency"] = time_onnx(path, feed, threads)
    return m


def summarize(step: str, before: Dict[str, Any], after: Dict[str, Any], fid: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One report record: before/after, ratios, fidelity, and whatever the step adds (method, ratio, notes)."""
    def ratio(key: str) -> Optional[float]:
        a, b = before.get(key), after.get(key)
        return round(b / a, 4) if a and b is not None else None

    rec: Dict[str, Any] = {
        "step": step,
        "before": before,
        "after": after,
        "ratios": {
            "params": ratio("params"),
            "size_bytes": ratio("size_bytes"),
            "zipped_bytes": ratio("zipped_bytes"),
            "onnx_bytes": ratio("onnx_bytes"),
            "macs": ratio("macs"),
        },
        "latency_speedup": _speedup(before, after),
        "fidelity": fid,
    }
    rec.update(extra or {})
    return rec


def compare_latency_onnx(before_path: Path, after_path: Path, feed: Dict[str, np.ndarray], threads: int,
                         before: Dict[str, Any], after: Dict[str, Any], rounds: int = 5) -> None:
    """Time both ONNX files interleaved (the harness's loop, `rounds` rounds) into before/after["latency"]."""
    from edgekit.quality.interleaved import time_interleaved

    steps, regions = {}, {}
    for name, path in (("before", before_path), ("after", after_path)):
        steps[name], regions[name] = timed_onnx_call(path, feed, threads)
    res = time_interleaved(steps, rounds=rounds)
    before["latency"] = {**res["before"], "backend": "onnxruntime", "threads": threads, "timed_region": regions["before"]}
    after["latency"] = {**res["after"], "backend": "onnxruntime", "threads": threads, "timed_region": regions["after"]}


def _speedup(before: Dict[str, Any], after: Dict[str, Any]) -> Optional[float]:
    """before/after latency, but only from interleaved timing whose intervals separate (else None: no claim)."""
    lb, la = before.get("latency", {}), after.get("latency", {})
    if not (lb.get("median_ms") and la.get("median_ms") and lb.get("backend") == la.get("backend")):
        return None
    if "interval_ms" in lb and "interval_ms" in la:
        from edgekit.quality.interleaved import verdict

        kind, ratio = verdict(lb, la)
        return ratio if kind != "same" else None
    return round(lb["median_ms"] / la["median_ms"], 3)


def _mb(x: Optional[int]) -> str:
    return "—" if x is None else f"{x / 1e6:.2f} MB"


def _num(x: Optional[int]) -> str:
    return "—" if x is None else f"{x / 1e6:.3f} M"


def render_markdown(rec: Dict[str, Any]) -> str:
    """Markdown table of one compression record (for report.md)."""
    b, a = rec["before"], rec["after"]
    lb, la = b.get("latency", {}), a.get("latency", {})
    rows = [
        ("parameters", _num(b.get("params")), _num(a.get("params"))),
        ("non-zero parameters", _num(b.get("nonzero_params")), _num(a.get("nonzero_params"))),
        ("MACs", _num(b.get("macs")), _num(a.get("macs"))),
        ("size on disk", _mb(b.get("size_bytes")), _mb(a.get("size_bytes"))),
        ("size zipped", _mb(b.get("zipped_bytes")), _mb(a.get("zipped_bytes"))),
        ("ONNX size", _mb(b.get("onnx_bytes")), _mb(a.get("onnx_bytes"))),
        (f"latency median ({lb.get('backend', '?')}, {lb.get('threads', '?')} threads)",
         f"{lb.get('median_ms', '—')} ms", f"{la.get('median_ms', '—')} ms"),
    ]
    lines = [f"## {rec['step']}", ""]
    if rec.get("method"):
        lines += [f"method: `{rec['method']}` — {rec.get('settings', {})}", ""]
    lines += ["| | before | after |", "|---|---|---|"] + [f"| {r[0]} | {r[1]} | {r[2]} |" for r in rows if r[1] != r[2] or r[1] != "—"]
    f = rec.get("fidelity", {})
    lines += ["", f"fidelity on {f.get('samples', '?')} {rec.get('fidelity_data', 'samples')}: cosine mean {f.get('cosine_mean')}, "
              f"min {f.get('cosine_min')}, max abs error {f.get('max_abs_error')}"]
    if "task_score" in f:
        lines.append(f"task metric {f['task_metric']}: {f['task_score']}")
    if "interval_ms" in lb and "interval_ms" in la:
        lines.append(f"latency, {lb.get('rounds')} interleaved rounds (median [range of round medians]): before {lb['median_ms']} "
                     f"[{lb['interval_ms'][0]}, {lb['interval_ms'][1]}] ms, after {la['median_ms']} [{la['interval_ms'][0]}, {la['interval_ms'][1]}] ms")
        if not rec.get("latency_speedup"):
            lines.append("no speed-up claimed: the intervals overlap (no measurable latency difference)")
    if rec.get("latency_speedup"):
        lines.append(f"speed-up: {rec['latency_speedup']}x" + (" (intervals separate)" if "interval_ms" in la else ""))
    if la.get("timed_region"):
        lines.append(f"timed region: {la['timed_region']}")
    for n in rec.get("notes", []):
        lines.append(f"- {n}")
    return "\n".join(lines) + "\n"


def fail(step: str, message: str, exc: BaseException, hint: Optional[str] = None) -> StepError:
    return StepError(step, message, hint=hint, tool_message=f"{type(exc).__name__}: {exc}")


def module_io(artifact: Any) -> tuple[List[str], List[str], Dict[str, Dict[int, str]]]:
    """Input names, output names and dynamic axes of an in-memory PyTorch artifact."""
    dyn_raw = (artifact.metadata or {}).get("dynamic_axes") or {}
    dyn = {k: {int(a): s for a, s in v.items()} for k, v in dyn_raw.items()}
    return [t.name for t in artifact.inputs], [t.name for t in artifact.outputs], dyn


def require_module(step: str, artifact: Any) -> None:
    if artifact.format != "pytorch" or artifact.module is None:
        raise StepError(
            step,
            f"needs an in-memory PyTorch module, got a '{artifact.format}' artifact ({artifact.path})",
            hint="use the Python API (Artifact.from_module(module, example_inputs)) or a zoo PyTorch model such as zoo:minilm",
        )


def finish_module_step(step: str, artifact: Any, new_module: Any, ctx: Any, extra: Dict[str, Any],
                       eval_samples: int = 16, measure: bool = True) -> Any:
    """Measure before/after, check fidelity on eval feeds, record ctx.report[step], and wrap the new module as an Artifact."""
    from edgekit.core.artifact import Artifact

    names, onames, dyn = module_io(artifact)
    ex = artifact.example_inputs
    work = Path(ctx.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    threads = ctx.profile.threads
    feeds, source = eval_feeds(ctx, artifact, eval_samples)
    ref = torch_outputs(artifact.module, feeds, names)
    cand = torch_outputs(new_module, feeds, names)
    fid = fidelity(ref, cand, ctx)
    state = save_state(new_module, work / "model.state.pt")
    before = measure_module(artifact.module, ex, work, "before", threads, names, dyn, latency=measure, timed=False)
    after = measure_module(new_module, ex, work, "after", threads, names, dyn, state_file=state, latency=measure, timed=False)
    if measure:
        if "onnx_file" in before and "onnx_file" in after:
            feed = {n: t.detach().cpu().numpy() for n, t in zip(names, ex)}
            compare_latency_onnx(Path(before["onnx_file"]), Path(after["onnx_file"]), feed, threads, before, after)
        else:  # an export failed: both in torch eager (each already says why in its latency note if it has one)
            for m, mod in ((before, artifact.module), (after, new_module)):
                m.setdefault("latency", time_torch(mod, ex, threads))
    rec = summarize(step, before, after, fid, {"fidelity_data": source, **extra})
    ctx.report[step] = rec
    for n in rec.get("notes", []):
        ctx.note(f"{step}: {n}")
    out = Artifact.from_module(new_module, ex, input_names=names, output_names=onames, dynamic_axes=dyn or None,
                               name=f"{step}:{type(new_module).__name__}")
    return out.model_copy(update={"metadata": {**out.metadata, "state_file": str(state), "compression": step}})


def onnx_constants(model: Any) -> Dict[str, Any]:
    """name -> (numpy array, setter) for every initializer and Constant-node tensor (PP-OCR keeps weights in Constant nodes)."""
    from onnx import numpy_helper

    out: Dict[str, Any] = {}
    for init in model.graph.initializer:
        def set_init(arr, _init=init):
            _init.CopyFrom(numpy_helper.from_array(arr.astype(numpy_helper.to_array(_init).dtype), _init.name))
        out[init.name] = (numpy_helper.to_array(init), set_init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    def set_const(arr, _attr=attr, _name=node.output[0]):
                        _attr.t.CopyFrom(numpy_helper.from_array(arr, _name))
                    out[node.output[0]] = (numpy_helper.to_array(attr.t), set_const)
    return out


def save_onnx(model: Any, path: Path) -> Path:
    """Check and write an ONNX model atomically (single file; models here are < 2 GB)."""
    onnx = require("onnx", "simplify", "writing ONNX models")
    onnx.checker.check_model(model)
    return atomic_write_bytes(path, model.SerializeToString())


def require_onnx_file(step: str, artifact: Any) -> None:
    if artifact.format != "onnx" or not Path(artifact.path).exists():
        raise StepError(step, f"needs an ONNX file, got a '{artifact.format}' artifact ({artifact.path})",
                        hint="export the model to ONNX first (the export step)")


def finish_onnx_step(step: str, artifact: Any, model: Any, ctx: Any, extra: Dict[str, Any], eval_samples: int = 8,
                     measure: bool = True) -> Any:
    """Write the rewritten ONNX model, measure before/after in ORT, check fidelity, record ctx.report[step]."""
    from edgekit.core.artifact import Artifact

    work = Path(ctx.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = save_onnx(model, work / "model.onnx")
    threads = ctx.profile.threads
    feeds, source = eval_feeds(ctx, artifact, eval_samples)
    ref = onnx_outputs(Path(artifact.path), feeds, threads)
    cand = onnx_outputs(path, feeds, threads)
    fid = fidelity(ref, cand, ctx)
    before = measure_onnx(Path(artifact.path), feeds[0], threads, latency=False)
    after = measure_onnx(path, feeds[0], threads, latency=False)
    if measure:
        compare_latency_onnx(Path(artifact.path), path, feeds[0], threads, before, after)
    rec = summarize(step, before, after, fid, {"fidelity_data": source, **extra})
    ctx.report[step] = rec
    for n in rec.get("notes", []):
        ctx.note(f"{step}: {n}")
    return Artifact.from_file(path, metadata={**(artifact.metadata or {}), "compression": step})


def run_export_step(art: Any, path: Path) -> Path:
    """Run the registered export step on an in-memory artifact and copy its ONNX to `path`."""
    import tempfile

    from edgekit.core.fsutil import atomic_copy
    from edgekit.core.profiles import load_profile
    from edgekit.core.registry import get_step
    from edgekit.core.steps import StepContext

    step = get_step("export")
    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        ctx = StepContext(work_dir=Path(tmp), profile=load_profile("x86-cpu"))
        out = step().run(art, step.Config(), ctx)
        if out.format != "onnx":
            raise StepError("export", f"export step produced '{out.format}', expected onnx")
        atomic_copy(out.path, path)
        for extra in out.extra_files:
            atomic_copy(extra, Path(path).parent / Path(extra).name)
    return Path(path)
