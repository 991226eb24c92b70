"""Peer comparison: common ways to get a CPU model (PyTorch eager, ORT, Optimum-style ORT INT8, OpenVINO+NNCF,
onnx2tf/LiteRT) side by side with the artifact `edgekit deploy` picks for x86-cpu; latency + task fidelity.

    python benchmarks/peers.py                          # all zoo models, writes benchmarks/PEERS.md
    python benchmarks/peers.py --models ppocr-rec --runs 30 --no-tflite --out /tmp/peers.md

Each variant is timed in-process through the harness adapters (runners/harness.py open_session), 2 threads,
after warm-up, median of at least --runs runs and --seconds seconds. Fidelity is the zoo task metric of the
variant vs the FP32 source on the zoo's evaluation feeds (never the calibration feeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = 2


def _time(fn: Callable[[], Any], runs: int, seconds: float) -> Dict[str, float]:
    """edgekit's one timing loop (the harness's bench module): 3 warm-up calls, then >= runs AND >= seconds."""
    from edgekit.core.registry import harness_module

    t = harness_module("bench").time_callable(fn, warmup_runs=3, min_runs=runs, min_seconds=seconds)
    return {"median_ms": t["median_ms"], "p90_ms": t["p90_ms"], "runs": t["runs"]}


def _harness_timer(runtime: str, path: Path, artifact, feed: Dict[str, np.ndarray]) -> Callable[[], Any]:
    from edgekit.quality.fidelity import _to_model_feed
    from edgekit.core.registry import harness_module

    from edgekit.core.runtimes import runtime_options_for

    h = harness_module()
    # as edgekit's harness does: an fp32 artifact computes in f32 (OpenVINO's CPU default is bf16 where AVX512-BF16 exists)
    sess = h.open_session(runtime, str(path), THREADS, runtime_options_for(runtime, artifact.precision))
    return sess.bind(_to_model_feed(artifact, feed))


def _onnx_source(z, work: Path):
    """The FP32 ONNX of a zoo model (PP-OCR ships ONNX; MiniLM is exported with the legacy exporter)."""
    from edgekit.core.artifact import load_artifact

    art = z.artifact()
    if art.format == "onnx":
        return art
    import torch

    path = work / f"{z.name}.onnx"
    torch.onnx.export(
        art.module, art.example_inputs, str(path), input_names=list(z.input_names), output_names=list(z.output_names),
        dynamic_axes={k: {0: "batch", 1: "seq"} for k in z.input_names}, opset_version=17, dynamo=False,
    )
    return load_artifact(path)


def _ort_dynamic_int8(src, work: Path):
    """What Optimum's AutoQuantizationConfig.avx2(is_static=False) does: dynamic QInt8 weights, per-channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekit.core.artifact import load_artifact

    work.mkdir(parents=True, exist_ok=True)
    pre = work / "pre.onnx"
    quant_pre_process(str(src.path), str(pre), skip_symbolic_shape=True)
    out = work / "ort_dyn_int8.onnx"
    quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=True)
    return load_artifact(out)


def _step(name: str, src, config: Dict[str, Any], z, work: Path, shapes):
    from edgekit.core.registry import get_step
    from edgekit.core.steps import StepContext

    cls = get_step(name)
    ctx = StepContext(
        work_dir=work, profile=None,
        calib_data=lambda n: z.calib_feeds(n, shapes=shapes),
        eval_data=lambda n: z.eval_feeds(n, shapes=shapes),
        task_metric=z.task_metric, task_metric_name=z.task_metric_name,
    )
    return cls().run(src, cls.Config(**config), ctx)


def _deploy_pick(z, work: Path, shapes, max_drop: float, searches: Dict[str, Any]):
    """What `edgekit deploy zoo:X --profile x86-cpu --precision auto --max-drop D` picks: every runtime x precision of
    the profile is built, checked against the budget on the zoo's eval feeds and quick-benchmarked; the fastest
    variant within budget wins. The search's own table is kept for the Markdown."""
    from edgekit.core.artifact import load_artifact
    from edgekit.workflows.deploy import deploy

    rep = deploy(z.spec, "x86-cpu", out=work, run_benchmark=False, shapes=shapes, precision="auto", max_drop=max_drop,
                 progress=lambda m: print("   ", m, flush=True))
    searches[z.spec] = rep.variants
    path = rep.artifact.get("path")
    art = load_artifact(path, format=rep.artifact.get("format"), metadata=rep.artifact.get("metadata") or {}) if path else None
    label = f"edgekit deploy --precision auto --max-drop {max_drop:g} ({rep.runtime} {rep.precision})"
    return art, label, rep


RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "tflite"}
# The accuracy budget per model: the issue's own figures (det IoU >= 0.97, rec >= 99 % lines, MiniLM cosine >= 0.995).
MAX_DROP = {"ppocr-det": 0.03, "ppocr-rec": 0.01, "minilm": 0.005}
# The deploy search and its steps evaluate on the first eval feeds (quantize-ort: 50); the table scores every
# variant on feeds after these, so edgekit's pick is never scored on the data it was selected with.
HELD_OUT_OFFSET = 64


def bench_model(name: str, runs: int, seconds: float, with_tflite: bool, eval_n: int, work_root: Path,
                searches: Dict[str, Any]) -> List[Dict[str, Any]]:
    from edgekit.quality import fidelity
    from edgekit.zoo import models as zoo

    z = zoo.resolve("zoo:" + name)
    shapes = dict(z.default_shapes)
    work = work_root / name
    work.mkdir(parents=True, exist_ok=True)
    src = _onnx_source(z, work)
    feeds = z.eval_feeds(HELD_OUT_OFFSET + eval_n, shapes=shapes)[HELD_OUT_OFFSET:]
    max_drop = MAX_DROP[name]
    source_art = z.artifact()
    ref = fidelity.predict(source_art, feeds)
    rows: List[Dict[str, Any]] = []

    def add(label: str, make: Callable[[], Any]):
        row: Dict[str, Any] = {"model": name, "variant": label, "max_drop": max_drop}
        try:
            t0 = time.perf_counter()
            made = make()
            art = made[0] if isinstance(made, tuple) else made
            if isinstance(made, tuple):
                row["variant"] = made[1]
            row["build_s"] = round(time.perf_counter() - t0, 1)
            if art is None:
                raise RuntimeError("no artifact")
            if art.format == "pytorch":
                import torch

                torch.set_num_threads(THREADS)
                args = [torch.from_numpy(feeds[0][k]) for k in z.input_names]
                with torch.no_grad():
                    row.update(_time(lambda: art.module(*args), runs, seconds))
            else:
                row.update(_time(_harness_timer(RUNTIME[art.format], art.path, art, feeds[0]), runs, seconds))
            row["score"] = z.task_metric(ref, fidelity.predict(art, feeds, threads=THREADS))
            row["meets"] = row["score"] >= 1.0 - max_drop - 1e-9
            row["size_mb"] = round(art.total_size_bytes / 1e6, 2) if art.format != "pytorch" else None
        except Exception as exc:  # a peer that fails is a result too: record it and go on
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            traceback.print_exc()
        print(json.dumps(row), flush=True)
        rows.append(row)

    if source_art.format == "pytorch":
        add("PyTorch eager FP32", lambda: source_art)
    add("ORT FP32", lambda: src)
    add("ORT dynamic INT8 (Optimum avx2 style)", lambda: _ort_dynamic_int8(src, work / "ortq"))
    add("OpenVINO FP32", lambda: _step("openvino", src, {"precision": "fp32"}, z, work / "ov32", shapes))
    add("OpenVINO + NNCF INT8 (defaults, 300 calib)", lambda: _step("openvino", src, {"precision": "int8", "calib_samples": 300, "preset": "performance", "model_type": "cnn", "fast_bias_correction": True, "overflow_fix": "first_layer"}, z, work / "ov8", shapes))
    if with_tflite:
        add("onnx2tf -> LiteRT dynamic-range INT8", lambda: _step("tflite", src, {"precision": "int8-dynamic", "calib_samples": 4}, z, work / "tfl", shapes))
    add("edgekit deploy", lambda: _deploy_pick(z, work / "deploy", shapes, max_drop, searches)[:2])
    return rows


def verdict(rows: List[Dict[str, Any]]) -> List[str]:
    """Per model: is edgekit's pick the fastest row that meets the budget, and faster than every peer that meets it?"""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and r["variant"].startswith("edgekit deploy")]
        ok = [r for r in rows if r["model"] == model and r.get("meets")]
        if not mine or "error" in mine[0]:
            out.append(f"- {model}: edgekit's pick failed (see Failures).")
            continue
        pick = mine[0]
        if not pick.get("meets"):
            out.append(f"- {model}: edgekit's pick scores {pick['score']:.4f} on the held-out feeds, **outside** the budget "
                       f"(>= {1 - pick['max_drop']:.3f}).")
            continue
        peers = [r for r in ok if r is not pick]
        faster = [r for r in peers if r["median_ms"] < pick["median_ms"]]
        same = [r for r in peers if abs(r["median_ms"] - pick["median_ms"]) <= 0.03 * pick["median_ms"]]
        if faster and not all(r in same for r in faster):
            out.append(f"- {model}: edgekit's pick ({pick['median_ms']:.1f} ms) is **not** the fastest within budget: "
                       + ", ".join(f"{r['variant']} {r['median_ms']:.1f} ms" for r in faster if r not in same) + ".")
        elif same:
            out.append(f"- {model}: edgekit's pick ({pick['median_ms']:.1f} ms) ties (within 3 %) with "
                       + ", ".join(f"{r['variant']} {r['median_ms']:.1f} ms" for r in same)
                       + " — it is the same kind of artifact; no peer within budget is faster.")
        else:
            nxt = min(peers, key=lambda r: r["median_ms"], default=None)
            out.append(f"- {model}: edgekit's pick leads: {pick['median_ms']:.1f} ms at score {pick['score']:.4f}"
                       + (f"; the fastest peer within budget is {nxt['variant']} at {nxt['median_ms']:.1f} ms "
                          f"({nxt['median_ms'] / pick['median_ms']:.2f}x slower)." if nxt else "."))
    return out


def to_markdown(rows: List[Dict[str, Any]], meta: Dict[str, Any], searches: Dict[str, Any]) -> str:
    budgets = ", ".join(f"{m} {d:g}" for m, d in MAX_DROP.items())
    lines = [
        "# Peer comparison (generated by benchmarks/peers.py)",
        "",
        f"Machine: {meta['machine']}; {THREADS} threads; median of >= {meta['runs']} runs and >= {meta['seconds']} s after warm-up; "
        f"load average {meta.get('load', '?')} at the start, {meta.get('load_end', '?')} at the end. Generated {meta['when']}.",
        f"Fidelity = zoo task metric vs the FP32 source on {meta['eval_n']} held-out evaluation samples (eval feeds "
        f"{HELD_OUT_OFFSET}..{HELD_OUT_OFFSET + meta['eval_n'] - 1}: never calibration data, and not the feeds edgekit's search "
        f"selected with). Budget (max drop of the score) per model: {budgets}; 'meets' = score >= 1 - budget.",
        "",
        "| model | variant | median ms | p90 ms | task metric | score | meets | size MB | build s |",
        "|---|---|---:|---:|---|---:|:-:|---:|---:|",
    ]
    from edgekit.zoo import models as zoo

    for r in rows:
        metric = zoo.resolve("zoo:" + r["model"]).task_metric_name
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | failed | | {metric} | | | | {r.get('build_s', '')} |")
            continue
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {metric} | {r['score']:.4f} | "
            f"{'yes' if r.get('meets') else 'no'} | {'' if r.get('size_mb') is None else r['size_mb']} | {r.get('build_s', '')} |"
        )
    lines += ["", "## Verdict", ""] + verdict(rows)
    for spec, variants in searches.items():
        lines += ["", f"## edgekit's search for {spec} (`deploy --precision auto`; quick on-target bench, search eval feeds)", "",
                  "| runtime | precision | status | fidelity | quick median ms | size MB | reason |", "|---|---|---|---|---:|---:|---|"]
        for v in variants:
            fid = v.get("fidelity") or {}
            score = fid.get("task_score") if fid.get("task_score") is not None else fid.get("cosine_mean")
            med = "" if v.get("median_ms") is None else f"{v['median_ms']:.1f}"
            size = "" if v.get("size_bytes") is None else round(v["size_bytes"] / 1e6, 2)
            sc = "" if score is None else f"{score:.4f}"
            lines.append(f"| {v['runtime']} | {v['precision']} | {v['status']} | {sc} | {med} | {size} | {(v.get('reason') or '')[:140]} |")
    errs = [r for r in rows if "error" in r]
    if errs:
        lines += ["", "Failures:", ""] + [f"- {r['model']} / {r['variant']}: `{r['error']}`" for r in errs]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ppocr-det,ppocr-rec,minilm")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--eval", type=int, default=30, dest="eval_n")
    ap.add_argument("--no-tflite", action="store_true", help="skip onnx2tf (minutes per model on 2 cores)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("PEERS.md")))
    ap.add_argument("--json", default=None, help="also write the raw rows as JSON")
    a = ap.parse_args(argv)
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    from machine import describe

    rows: List[Dict[str, Any]] = []
    searches: Dict[str, Any] = {}
    load = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory(prefix="edgekit-peers-") as d:
        for m in [x.strip() for x in a.models.split(",") if x.strip()]:
            rows += bench_model(m, a.runs, a.seconds, not a.no_tflite, a.eval_n, Path(d), searches)
    meta = {"load": load, "load_end": round(os.getloadavg()[0], 1), "machine": f"{describe()}, Python {sys.version.split()[0]}", "runs": a.runs, "seconds": a.seconds, "eval_n": a.eval_n, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(a.out).write_text(to_markdown(rows, meta, searches))
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows, "searches": searches}, indent=2, default=str))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
