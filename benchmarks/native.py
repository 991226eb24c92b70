"""Each runtime's figure from edgekit's harness vs the runtime's own tool on the same artifact (issue 15 §2).

    python benchmarks/native.py prepare --work /tmp/native          # build the artifacts (outside benchcore)
    /work/bin/benchcore python benchmarks/native.py measure --work /tmp/native --rounds 5 --out benchmarks/NATIVE.md

Same artifact, same feeds, 1 thread everywhere. Every figure is a fresh process (like the harness on a device), and
the variants are interleaved: each round runs every (model, tool) once, in an order rotated per round; a figure is
the median latency of that process's timed runs, and the table shows the median over rounds and the spread
(min-max over rounds). Tools:

- edgekit:  the harness itself (`python harness.pyz spec.json`), timed region as report.json's timing.timed_region.
- OpenVINO: `benchmark_app -nthreads 1 -nstreams 1 -hint none -api sync -infer_precision f32` (its "Median").
- ORT:      onnxruntime_perf_test is not in the pip wheel; a bare loop with io_binding (outputs allocated once)
            and a bare plain `sess.run(None, feeds)` loop instead.
- TFLite:   LiteRT's own Python benchmark (ai_edge_litert.tools.benchmark_litert_model, CompiledModel API) and a
            bare `Interpreter.invoke()` loop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
MODELS = ("ppocr-det", "ppocr-rec", "minilm")


# ---------------------------------------------------------------- prepare (outside benchcore)

def _onnx_source(z, work: Path):
    from edgekit.core.artifact import load_artifact

    art = z.artifact()
    if art.format == "onnx":
        return art
    import torch

    path = work / f"{z.name}.onnx"
    torch.onnx.export(art.module, art.example_inputs, str(path), input_names=list(z.input_names),
                      output_names=list(z.output_names), dynamic_axes={k: {0: "batch", 1: "seq"} for k in z.input_names},
                      opset_version=17, dynamo=False)
    return load_artifact(path)


def _step(name: str, src, config: Dict[str, Any], z, work: Path, shapes):
    from edgekit.core.registry import get_step
    from edgekit.core.steps import StepContext

    cls = get_step(name)
    ctx = StepContext(work_dir=work, profile=None, calib_data=lambda n: z.calib_feeds(n, shapes=shapes),
                      eval_data=lambda n: z.eval_feeds(n, shapes=shapes), task_metric=z.task_metric,
                      task_metric_name=z.task_metric_name)
    return cls().run(src, cls.Config(**config), ctx)


def _onnx2tf_reason(where: Path) -> str:
    """The exception line at the end of onnx2tf's log, if there is one."""
    for log in sorted(where.glob("onnx2tf-*/onnx2tf.log")):
        errs = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if re.match(r"\w+(Error|Exception): ", ln.strip())]
        if errs:
            return f" — onnx2tf: {errs[-1][:200]}"
    return ""


def prepare(work: Path, models: List[str], with_tflite: bool) -> None:
    """ONNX (FP32), OpenVINO IR (FP32) and, through edgekit's onnx2tf step, TFLite (FP32) per model; one real feed
    per artifact in its own names/layout (feeds_<runtime>.npz); manifest.json lists them."""
    from edgekit.quality.fidelity import _to_model_feed
    from edgekit.zoo import models as zoo

    manifest: Dict[str, Any] = {}
    for name in models:
        z = zoo.resolve("zoo:" + name)
        shapes = dict(z.default_shapes)
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        feed = z.eval_feeds(1, shapes=shapes)[0]
        entry: Dict[str, Any] = {}
        arts = {"onnxruntime": _onnx_source(z, d)}
        arts["openvino"] = _step("openvino", arts["onnxruntime"], {"precision": "fp32"}, z, d / "ov", shapes)
        if with_tflite:
            try:
                arts["tflite"] = _step("tflite", arts["onnxruntime"], {"precision": "fp32"}, z, d / "tfl", shapes)
            except Exception as exc:  # recorded in NATIVE.md: which model has no TFLite and why
                entry["tflite_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" + _onnx2tf_reason(d / "tfl")
                print(f"{name}: no TFLite ({entry['tflite_error']})", flush=True)
        for rt, art in arts.items():
            mfeed = _to_model_feed(art, feed)
            fp = d / f"feeds_{rt}.npz"
            np.savez(fp, **mfeed)
            entry[rt] = {"path": str(art.path), "format": art.format, "feeds": str(fp),
                         "shapes": {k: list(v.shape) for k, v in mfeed.items()},
                         "dtypes": {k: v.dtype.name for k, v in mfeed.items()}}
        manifest[name] = entry
        print(f"{name}: " + ", ".join(f"{rt}={e['path']}" for rt, e in entry.items() if isinstance(e, dict)), flush=True)
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))


# ---------------------------------------------------------------- bare loops (each in its own process)

def _loop(step, seconds: float, warmup: int = 5) -> Dict[str, Any]:
    """Warm-up, then time step() for >= 10 runs and >= seconds: per-call perf_counter like the harness."""
    for _ in range(warmup):
        step()
    samples = []
    t_start = time.perf_counter()
    while len(samples) < 10 or time.perf_counter() - t_start < seconds:
        t0 = time.perf_counter()
        step()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": statistics.median(samples), "runs": len(samples)}


def bare(kind: str, model: str, feeds_path: str, seconds: float) -> Dict[str, Any]:
    feeds = dict(np.load(feeds_path))
    if kind in ("ort-plain", "ort-iobinding"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        if kind == "ort-plain":
            return _loop(lambda: sess.run(None, feeds), seconds)
        io = sess.io_binding()
        for k, v in feeds.items():
            io.bind_cpu_input(k, v)
        outs = [ort.OrtValue.ortvalue_from_numpy(np.empty(o.shape, o.dtype)) for o in sess.run(None, feeds)]
        for o, v in zip(sess.get_outputs(), outs):
            io.bind_ortvalue_output(o.name, v)
        return _loop(lambda: sess.run_with_iobinding(io), seconds)
    if kind == "tflite-invoke":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=model, num_threads=1)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], feeds[d["name"]].astype(d["dtype"]))
        return _loop(it.invoke, seconds)
    raise SystemExit(f"unknown bare loop '{kind}'")


# ---------------------------------------------------------------- one measurement = one process

def _run(argv: List[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def m_edgekit(rt: str, e: Dict[str, Any], seconds: float, work: Path) -> Dict[str, Any]:
    from edgekit.core.registry import harness_path
    from edgekit.core.runtimes import runtime_options_for

    spec = {"model_path": e["path"], "model_format": e["format"], "runtime": rt, "threads": 1,
            "precision": "fp32", "runtime_options": runtime_options_for(rt, "fp32"),
            "inputs": [{"name": k, "shape": s, "dtype": e["dtypes"][k]} for k, s in e["shapes"].items()],
            "inputs_file": e["feeds"], "warmup_runs": 5, "warmup_seconds": 0.5, "min_runs": 10,
            "min_seconds": seconds, "idle_seconds": 0.0}
    sp = work / f"spec_{rt}_{Path(e['path']).stem}.json"
    sp.write_text(json.dumps(spec))
    p = _run([sys.executable, str(harness_path()), str(sp)])
    if p.returncode != 0:
        raise RuntimeError(f"harness exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    doc = json.loads(p.stdout)
    return {"median_ms": doc["timing"]["stats"]["median_ms"], "runs": doc["timing"]["runs"],
            "timed_region": doc["timing"].get("timed_region")}


def m_benchmark_app(e: Dict[str, Any], seconds: float, work: Path) -> Dict[str, Any]:
    exe = shutil.which("benchmark_app")
    argv = [exe] if exe else [sys.executable, "-m", "openvino.tools.benchmark.main"]
    shape = ",".join(f"{k}[{','.join(map(str, s))}]" for k, s in e["shapes"].items())
    argv += ["-m", e["path"], "-d", "CPU", "-nthreads", "1", "-nstreams", "1", "-hint", "none", "-api", "sync",
             "-infer_precision", "f32", "-t", str(int(max(seconds, 1))), "-shape", shape]
    p = _run(argv)
    m = re.search(r"Median:\s+([0-9.]+)\s*ms", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"benchmark_app exit {p.returncode}: {(p.stdout + p.stderr).strip().splitlines()[-1:]}")
    n = re.search(r"Count:\s+(\d+)", p.stdout)
    return {"median_ms": float(m.group(1)), "runs": int(n.group(1)) if n else None}


def m_litert_benchmark(e: Dict[str, Any], seconds: float, work: Path, runs_hint: int) -> Dict[str, Any]:
    out = work / f"litert_{Path(e['path']).parent.name}.json"
    p = _run([sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", f"--model={e['path']}",
              "--num_threads=1", "--warmup_runs=5", f"--num_runs={runs_hint}", f"--result_json={out}"])
    if p.returncode != 0 or not out.exists():
        raise RuntimeError(f"benchmark_litert_model exit {p.returncode}: {(p.stdout + p.stderr).strip().splitlines()[-1:]}")
    doc = json.loads(out.read_text())
    med = _find(doc, "median_ms")
    return {"median_ms": float(med), "runs": runs_hint}


def _find(doc: Any, key: str) -> Any:
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        for v in doc.values():
            r = _find(v, key)
            if r is not None:
                return r
    return None


def m_bare(kind: str, e: Dict[str, Any], seconds: float) -> Dict[str, Any]:
    p = _run([sys.executable, __file__, "bare", kind, e["path"], e["feeds"], "--seconds", str(seconds)])
    if p.returncode != 0:
        raise RuntimeError(f"bare {kind} exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cells(manifest: Dict[str, Any]) -> List[tuple]:
    """(model, runtime, tool) for everything to time."""
    out = []
    for name, entry in manifest.items():
        if "onnxruntime" in entry:
            out += [(name, "onnxruntime", t) for t in ("edgekit", "bare io_binding loop", "bare sess.run loop")]
        if "openvino" in entry:
            out += [(name, "openvino", t) for t in ("edgekit", "benchmark_app")]
        if "tflite" in entry:
            out += [(name, "tflite", t) for t in ("edgekit", "benchmark_litert_model", "bare invoke loop")]
    return out


def measure_one(cell: tuple, manifest: Dict[str, Any], seconds: float, work: Path, runs_hint: Dict[str, int]) -> Dict[str, Any]:
    name, rt, tool = cell
    e = manifest[name][rt]
    if tool == "edgekit":
        return m_edgekit(rt, e, seconds, work)
    if tool == "benchmark_app":
        return m_benchmark_app(e, seconds, work)
    if tool == "benchmark_litert_model":
        return m_litert_benchmark(e, seconds, work, runs_hint.get(name, 20))
    kind = {"bare io_binding loop": "ort-iobinding", "bare sess.run loop": "ort-plain", "bare invoke loop": "tflite-invoke"}[tool]
    return m_bare(kind, e, seconds)


def measure(work: Path, rounds: int, seconds: float) -> Dict[str, Any]:
    manifest = json.loads((work / "manifest.json").read_text())
    todo = cells(manifest)
    results: Dict[str, Dict[str, Any]] = {"|".join(c): {"figures": [], "errors": []} for c in todo}
    runs_hint: Dict[str, int] = {}
    for r in range(rounds):
        order = todo[r % len(todo):] + todo[:r % len(todo)]  # rotate: no tool always first or last
        for cell in order:
            key = "|".join(cell)
            try:
                got = measure_one(cell, manifest, seconds, work, runs_hint)
            except Exception as exc:  # a tool that fails is recorded in NATIVE.md, the others go on
                results[key]["errors"].append(str(exc)[:300])
                print(f"round {r + 1} {key}: {exc}", flush=True)
                continue
            results[key]["figures"].append(got["median_ms"])
            if got.get("timed_region"):
                results[key]["timed_region"] = got["timed_region"]
            if cell[2] == "edgekit" and cell[1] == "tflite":  # LiteRT's tool takes a run count: match edgekit's
                runs_hint[cell[0]] = max(10, int(got.get("runs") or 10))
            print(f"round {r + 1} {key}: {got['median_ms']:.3f} ms", flush=True)
    return {"manifest": manifest, "results": results, "rounds": rounds, "seconds": seconds}


def to_markdown(data: Dict[str, Any], machine: str, lscpu: str) -> str:
    res = data["results"]
    lines = ["# Each runtime in edgekit vs its own tool (same artifact, 1 thread)", "",
             f"Generated by `benchmarks/native.py` on {data.get('when') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} under "
             f"`/work/bin/benchcore` (one reserved core, every other process fenced off; 1 thread everywhere, "
             f"OMP_NUM_THREADS=1). {data['rounds']} interleaved rounds (order rotated per round), each figure a fresh "
             f"process timing >= {data['seconds']:g} s after warm-up; the table gives the median over rounds of each "
             f"process's median latency, the spread is min-max over rounds, and Δ is vs the runtime's own tool.", "",
             f"Machine: {machine}", "", f"lscpu: {lscpu}", "",
             "| model | runtime | tool | median ms | spread (min-max) | Δ vs native | rounds |", "|---|---|---|---|---|---|---|"]
    native_of = {"onnxruntime": "bare io_binding loop", "openvino": "benchmark_app", "tflite": "benchmark_litert_model"}
    verdicts = []
    for key, v in res.items():
        name, rt, tool = key.split("|")
        f = v["figures"]
        if not f:
            lines.append(f"| {name} | {rt} | {tool} | failed | {'; '.join(v['errors'])[:200]} | | 0 |")
            continue
        med = statistics.median(f)
        nat = res.get(f"{name}|{rt}|{native_of[rt]}", {}).get("figures")
        delta = ""
        if nat and tool != native_of[rt]:
            d = med / statistics.median(nat) - 1.0
            delta = f"{d:+.1%}"
            if tool == "edgekit":
                verdicts.append((name, rt, d, min(f), max(f), min(nat), max(nat)))
        lines.append(f"| {name} | {rt} | {tool} | {med:.2f} | {min(f):.2f}–{max(f):.2f} | {delta} | {len(f)} |")
    lines += ["", "## edgekit vs native: within ±5 %?", ""]
    for name, rt, d, lo, hi, nlo, nhi in verdicts:
        overlap = not (hi < nlo or nhi < lo)
        ok = abs(d) <= 0.05
        lines.append(f"- {name} / {rt}: {d:+.1%} vs {native_of[rt]} — " + ("within ±5 %" if ok else f"outside ±5 % by {abs(d) - 0.05:.1%}")
                     + ("; the round-to-round ranges overlap" if overlap else "; the ranges do not overlap"))
    timed = sorted({(k.split('|')[1], v.get('timed_region')) for k, v in res.items() if v.get('timed_region')})
    lines += ["", "## What edgekit's timed region is, per runtime (report.json timing.timed_region)", ""]
    lines += [f"- {rt}: {t}" for rt, t in timed]
    missing = [f"{n}: {e['tflite_error']}" for n, e in data["manifest"].items() if e.get("tflite_error")]
    if missing:
        lines += ["", "No TFLite artifact for: " + "; ".join(missing)]
    lines += ["", "onnxruntime_perf_test (ORT's native tool) is a C++ binary built from source; it is not in the "
              "onnxruntime pip wheel, so ORT is compared with bare Python loops (io_binding, plain sess.run).", ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--no-tflite", action="store_true")
    m = sub.add_parser("measure")
    m.add_argument("--work", type=Path, required=True)
    m.add_argument("--rounds", type=int, default=5)
    m.add_argument("--seconds", type=float, default=2.0)
    m.add_argument("--out", type=Path, default=HERE / "NATIVE.md")
    rp = sub.add_parser("report", help="re-render the Markdown from WORK/native.json (no timing)")
    rp.add_argument("--work", type=Path, required=True)
    rp.add_argument("--out", type=Path, default=HERE / "NATIVE.md")
    b = sub.add_parser("bare")
    b.add_argument("kind")
    b.add_argument("model")
    b.add_argument("feeds")
    b.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        a.work.mkdir(parents=True, exist_ok=True)
        prepare(a.work, a.models, not a.no_tflite)
        return 0
    if a.cmd == "bare":
        print(json.dumps(bare(a.kind, a.model, a.feeds, a.seconds)))
        return 0
    if a.cmd == "measure" and os.environ.get("EDGEKIT_BENCHCORE") != "1":
        print("note: not under /work/bin/benchcore: these figures are not for committing", file=sys.stderr)
    sys.path.insert(0, str(HERE))
    from machine import describe

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Flags")), "?")
    if a.cmd == "report":
        data = json.loads((a.work / "native.json").read_text())
        for name, entry in data["manifest"].items():  # a reason found in onnx2tf's log after the run
            if entry.get("tflite_error") and " — onnx2tf: " not in entry["tflite_error"]:
                entry["tflite_error"] += _onnx2tf_reason(a.work / name / "tfl")
    else:
        data = measure(a.work, a.rounds, a.seconds)
        data["machine"] = f"{describe()}, Python {sys.version.split()[0]}"
        data["lscpu"] = f"{model}; flags: {flags}"
        data["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        (a.work / "native.json").write_text(json.dumps(data, indent=2))
    a.out.write_text(to_markdown(data, data.get("machine") or f"{describe()}, Python {sys.version.split()[0]}",
                                 data.get("lscpu") or f"{model}; flags: {flags}"))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
