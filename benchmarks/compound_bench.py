"""PP-OCRv4 det and MiniLM figures for benchmarks/COMPOUND.md (issue 16): QAT vs post-training INT8 (det), and
prune -> distill -> INT8 / low-rank -> INT8 compounds against NNCF (MiniLM). Building, training and scoring run outside
benchcore; only `time` runs inside it.

  build-det-qat --work W [--budget 600] [--max-drop 0.03] [--max-steps N]   edgekit's qat step on det (its defaults: mixed-precision search, early
                                                 stopping on 64 calibration samples held out of training) -> QDQ ONNX -> IR
  build-det-qat --model rec --max-drop 0.01 [--val-samples N] [--search-budget S]   the same step on PP-OCRv4 rec (its
                                                 build-up search on N validation lines; default: the step's own)
  build-minilm-prune --work W --ratio R [--budget S]   structured prune (FFN neurons + heads, ratio R) of the zoo's PyTorch
                                                 MiniLM, distilled from the source on zoo sentences (calib split) for S
                                                 seconds, exported to ONNX, then FP32 IR and NNCF INT8 (TRANSFORMER)
  score MODEL LABEL=PATH ...                     the zoo task metric (det: text-mask IoU; MiniLM: embedding cosine) vs
                                                 the FP32 source on the 100 (det) / 200 (MiniLM) held-out eval feeds of
                                                 benchmarks/peers.py (feeds 64.., never calibration or training data)
  time MODEL LABEL=PATH ...                      interleaved rounds, 1 thread, run under /work/bin/benchcore

PATH: an OpenVINO IR (.xml). A label ending in "f32" is compiled with INFERENCE_PRECISION_HINT=f32 (edgekit's contract
for FP32 artifacts); every other label with OpenVINO's defaults (bf16 for float parts on CPUs that have it), which is
what edgekit's harness gives INT8 artifacts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402

CALIB_N = 100
HELD_OUT_OFFSET = 64
HELD_OUT_N = {"ppocr-det": 100, "minilm": 200}
ZOO = {"det": "ppocr-det", "ppocr-det": "ppocr-det", "minilm": "minilm"}
BUILD_QAT = {"det": "ppocr-det", "rec": "ppocr-rec"}  # rec is scored and timed by benchmarks/compound.py


def _zoo(name: str):
    from edgekit.zoo import models as zoo

    return zoo.resolve("zoo:" + {**ZOO, **BUILD_QAT}[name])


def _ctx(z, work: Path, progress=print):
    from edgekit.core.profiles import load_profile
    from edgekit.core.steps import StepContext

    shapes = dict(z.default_shapes)
    return StepContext(work_dir=work, profile=load_profile("x86-cpu"), calib_data=lambda n: z.calib_feeds(n, shapes=shapes),
                       eval_data=lambda n: z.eval_feeds(n, shapes=shapes), task_metric=z.task_metric,
                       task_metric_name=z.task_metric_name, progress=progress)


def _ir(onnx_path: Path, xml: Path) -> Path:
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml


def _nncf_int8(xml: Path, out: Path, z, transformer: bool) -> Path:
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(xml))
    kw = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {"preset": nncf.QuantizationPreset.MIXED}
    calib = z.calib_feeds(CALIB_N, shapes=dict(z.default_shapes))
    q = nncf.quantize(model, nncf.Dataset(calib), subset_size=len(calib), **kw)
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


def _say(m: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {m}", flush=True)


def build_det_qat(args) -> None:
    import torch

    from edgekit.converters.qat import QatConfig, QatStep
    from edgekit.core.artifact import load_artifact

    torch.set_num_threads(1)
    z = _zoo(args.model)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src = Path(z.artifact().path)
    extra: Dict[str, Any] = {}
    if args.float_nodes:  # the mixed-precision search's pick from an earlier run of this command (skips re-running it)
        extra = {"float_nodes": args.float_nodes.split(","), "mixed": "off"}
    if args.max_steps:
        extra["max_steps"] = args.max_steps
    if args.val_samples is not None:
        extra["val_samples"] = args.val_samples
    if args.search_budget is not None:
        extra["search_budget_s"] = args.search_budget
    if args.search_evals is not None:
        extra["max_search_evals"] = args.search_evals
    cfg = QatConfig(target="openvino", train_budget_s=args.budget, max_drop=args.max_drop, threads=1, **extra)
    t0 = time.perf_counter()
    art = QatStep().run(load_artifact(src), cfg, _ctx(z, work, _say))
    wall = time.perf_counter() - t0
    xml = _ir(Path(art.path), work / f"{args.model}_qat.xml")
    rec = {"qdq": str(art.path), "xml": str(xml), "wall_s": round(wall, 1), "load_at_end": os.getloadavg(), "qat": art.metadata.get("qat")}
    (work / f"{args.model}_qat.json").write_text(json.dumps(rec, indent=1, default=str))
    print(json.dumps({k: v for k, v in rec.items() if k != "qat"}), flush=True)


def build_minilm_prune(args) -> None:
    import torch

    from edgekit.converters.finetune import finetune_module
    from edgekit.converters.prune import prune

    torch.set_num_threads(1)
    z = _zoo("minilm")
    art = z.artifact()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tag = f"p{int(round(args.ratio * 100))}" + (f"-ft{int(args.budget)}" if args.budget else "")
    t0 = time.perf_counter()
    model, details = prune(art.module, art.example_inputs, mode="structured", ratio=args.ratio, head_ratio=args.head_ratio)
    prune_s = time.perf_counter() - t0
    tune: Dict[str, Any] = {}
    if args.budget:
        names = list(z.input_names)
        feeds = z.calib_feeds(args.samples, shapes=dict(z.default_shapes))
        tune = finetune_module(torch, model, art.module, feeds, names, budget_s=args.budget, lr=args.lr, batch_size=args.batch, say=_say)
    onnx_path = work / f"minilm-{tag}.onnx"
    torch.onnx.export(model, art.example_inputs, str(onnx_path), input_names=list(z.input_names), output_names=list(z.output_names),
                      dynamic_axes={k: {0: "batch", 1: "seq"} for k in z.input_names}, opset_version=17, dynamo=False)
    fp32 = _ir(onnx_path, work / f"minilm-{tag}-fp32.xml")
    t1 = time.perf_counter()
    int8 = _nncf_int8(fp32, work / f"minilm-{tag}-int8.xml", z, transformer=True)
    rec = {"tag": tag, "ratio": args.ratio, "head_ratio": args.head_ratio, "details": details, "prune_s": round(prune_s, 1),
           "finetune": tune, "nncf_s": round(time.perf_counter() - t1, 1), "fp32": str(fp32), "int8": str(int8),
           "load_at_end": os.getloadavg()}
    (work / f"minilm-{tag}.json").write_text(json.dumps(rec, indent=1, default=str))
    print(json.dumps(rec, default=str), flush=True)


def _pairs(items: List[str]) -> List[Tuple[str, str]]:
    out = []
    for it in items:
        if "=" not in it:
            raise SystemExit(f"expected LABEL=PATH, got {it!r}")
        k, v = it.split("=", 1)
        if not Path(v).is_file():
            raise SystemExit(f"{v}: no such file")
        out.append((k, v))
    return out


def _session(label: str, path: str, threads: int):
    from edgekit.core.registry import harness_module

    opts = {"inference_precision_hint": "f32"} if label.endswith("f32") else {}
    return harness_module("adapters").open_session("openvino", str(path), threads, opts)


def _predict(sess, feed):
    return [np.asarray(o) for o in sess.run(feed)]


def score(args) -> None:
    from edgekit.quality.fidelity import predict

    z = _zoo(args.model)
    n = args.n or HELD_OUT_N[ZOO[args.model]]
    held = z.eval_feeds(HELD_OUT_OFFSET + n, shapes=dict(z.default_shapes))[HELD_OUT_OFFSET:]
    ref = predict(z.artifact(), held, threads=2)
    for label, path in _pairs(args.artifacts):
        sess = _session(label, path, 2)
        new = [_predict(sess, f) for f in held]
        s = float(z.task_metric(ref, new))
        p = Path(path)
        size = sum(f.stat().st_size for f in (p, p.with_suffix(".bin")) if f.exists())
        from benchmarks.peers import _bootstrap  # the 95 % interval PEERS.md reports (500 resamples of the held-out feeds)

        lo, hi = _bootstrap(z.task_metric, ref, new)
        print(json.dumps({"model": ZOO[args.model], "label": label, "held_out": n, "metric": z.task_metric_name, "score": round(s, 5),
                          "ci95": [round(lo, 4), round(hi, 4)], "drop": round(1 - s, 5), "size_mb": round(size / 1e6, 2)}), flush=True)


def timing(args) -> None:
    z = _zoo(args.model)
    feed = z.eval_feeds(1, shapes=dict(z.default_shapes))[0]
    items = _pairs(args.artifacts)
    from benchmarks.compound import round_medians  # the one interleaved loop of both compound scripts

    per = round_medians([(label, _session(label, path, 1)) for label, path in items], feed, args.rounds, args.runs)
    base = items[0][0]
    shape = {k: list(v.shape) for k, v in feed.items()}
    print(f"machine: {describe()}; benchcore={'yes' if os.environ.get('EDGEKIT_BENCHCORE') else 'NO'}; 1 thread; "
          f"{args.rounds} interleaved rounds x {args.runs} runs; {ZOO[args.model]} {shape}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for label, _ in items:
        m = per[label]
        ratios = [b / x for b, x in zip(per[base], m)]
        print(json.dumps({"label": label, "median_ms": round(statistics.median(m), 3), "min_ms": round(min(m), 3), "max_ms": round(max(m), 3),
                          f"speedup_vs_{base}": round(statistics.median(ratios), 3), "range": [round(min(ratios), 3), round(max(ratios), 3)]}), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-det-qat")
    b.add_argument("--work", required=True)
    b.add_argument("--budget", type=float, default=600.0)
    b.add_argument("--max-drop", type=float, default=0.03, help="the qat step's budget (mixed-precision search target)")
    b.add_argument("--max-steps", type=int, default=None, help="stop training after this many steps")
    b.add_argument("--float-nodes", default="", help="comma-separated ops kept FP32 (mixed search off): a previous run's pick")
    b.add_argument("--model", choices=sorted(BUILD_QAT), default="det")
    b.add_argument("--val-samples", type=int, default=None, help="calibration samples held out for the mixed-precision search")
    b.add_argument("--search-budget", type=float, default=None, help="seconds after which no search evaluation starts")
    b.add_argument("--search-evals", type=int, default=None, help="build+score evaluations of the search (default: the step's)")
    m = sub.add_parser("build-minilm-prune")
    m.add_argument("--work", required=True)
    m.add_argument("--ratio", type=float, required=True)
    m.add_argument("--head-ratio", type=float, default=None)
    m.add_argument("--budget", type=float, default=0.0, help="distillation seconds (0: none)")
    m.add_argument("--samples", type=int, default=512)
    m.add_argument("--lr", type=float, default=1e-4)
    m.add_argument("--batch", type=int, default=16)
    for name, fn in (("score", score), ("time", timing)):
        s = sub.add_parser(name)
        s.add_argument("model", choices=sorted(ZOO))
        s.add_argument("artifacts", nargs="+")
        s.set_defaults(fn=fn)
        if name == "score":
            s.add_argument("--n", type=int, default=None)
        else:
            s.add_argument("--rounds", type=int, default=7)
            s.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)
    if args.cmd == "build-det-qat":
        build_det_qat(args)
    elif args.cmd == "build-minilm-prune":
        build_minilm_prune(args)
    else:
        args.fn(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
