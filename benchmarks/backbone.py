"""Backbone figures (issue 2), one run on this machine:

1. harness median latency vs a bare onnxruntime timing loop on the same artifact, same run (target ±5%);
2. cached re-run of `edgekit deploy` vs the first run (wall time);
3. `edgekit --help` wall time (heavy imports must be lazy).

Usage: python benchmarks/backbone.py [--model zoo:ppocr-det] [--out benchmarks/BACKBONE.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_ort_median(model_path: str, feed: dict, threads: int, min_runs: int, min_seconds: float, warmup: int = 10) -> float:
    """The loop a user would write by hand: one session, the same feed, time sess.run only. Deliberately NOT
    edgekit's timing loop (runners/harness/bench.py): it is the reference the harness is measured against."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        sess.run(None, feed)
    samples = []
    t_end = time.perf_counter() + min_seconds
    while len(samples) < min_runs or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        sess.run(None, feed)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(samples))


def harness_vs_bare(model: str, min_runs: int, min_seconds: float) -> dict:
    from edgekit.api import deploy
    from edgekit.workflows.deploy import benchmark, build_data, resolve_model
    from edgekit.core.profiles import load_profile
    from edgekit.core.registry import get_runner
    from edgekit.core.shapes import random_feeds

    prof = load_profile("x86-cpu")
    report = deploy(model, prof, runtime="onnxruntime", run_benchmark=False)
    art_path = report.artifact["path"]
    from edgekit.core.artifact import load_artifact

    art = load_artifact(art_path)
    data = build_data(resolve_model(model))
    feed = random_feeds(data.inputs, 1, seed=0)[0]
    bench = {"min_runs": min_runs, "min_seconds": min_seconds, "warmup_runs": 10, "warmup_seconds": 1.0}
    bare1 = bare_ort_median(str(art.path), feed, prof.threads, min_runs, min_seconds)
    with get_runner("local")(prof) as runner:
        res = benchmark(art, prof, runner, data.inputs, runtime="onnxruntime", bench=bench)
    bare2 = bare_ort_median(str(art.path), feed, prof.threads, min_runs, min_seconds)
    bare = (bare1 + bare2) / 2
    h = res.timing.stats.median_ms
    return {"model": model, "artifact": Path(art_path).name, "bare_before_ms": bare1, "bare_after_ms": bare2, "harness_ms": h, "diff_pct": (h - bare) / bare * 100, "runs": res.timing.runs}


def cached_rerun(model: str) -> dict:
    cache = tempfile.mkdtemp(prefix="edgekit-bench-cache-")
    env = dict(os.environ, EDGEKIT_CACHE_DIR=cache)
    out = {}
    for label in ("first", "cached"):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgekit.cli.main", "deploy", model, "--profile", "x86-cpu", "--no-bench", "-q", "--json"], check=True, env=env, capture_output=True)
        out[label] = time.perf_counter() - t0
    return out


def help_time(n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["edgekit", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:ppocr-det")
    ap.add_argument("--min-runs", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=10.0)
    ap.add_argument("--out", default=None, help="write a Markdown table here")
    args = ap.parse_args()
    hv = harness_vs_bare(args.model, args.min_runs, args.min_seconds)
    cr = cached_rerun(args.model)
    ht = help_time()
    lines = [
        "| figure | value | target |",
        "|---|---|---|",
        f"| bare onnxruntime loop median ({hv['artifact']}), before / after | {hv['bare_before_ms']:.2f} / {hv['bare_after_ms']:.2f} ms | |",
        f"| edgekit harness median (LocalRunner, {hv['runs']} runs) | {hv['harness_ms']:.2f} ms | |",
        f"| harness vs bare | {hv['diff_pct']:+.1f} % | within ±5 % |",
        f"| `edgekit deploy {args.model} --no-bench`, cold cache | {cr['first']:.1f} s | |",
        f"| same, cached re-run | {cr['cached']:.1f} s | near-instant |",
        f"| `edgekit --help` wall time (median of 5) | {ht * 1000:.0f} ms | fast (no heavy imports) |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(f"# Backbone figures\n\nMeasured with `python benchmarks/backbone.py` on this machine (2 threads).\n\n{text}\n")


if __name__ == "__main__":
    main()
