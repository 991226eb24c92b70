"""QAT / mixed-precision / compound figures for benchmarks/COMPOUND.md.

Two subcommands, so that scoring and building stay outside the benchcore queue and only timing runs inside it:

  score  LABEL=PATH ...   text agreement (PP-OCRv4 rec lines identical to the FP32 ONNX model, spaces at the ends
                          of a line ignored as the zoo's metric does; also without that) on N held-out
                          zoo lines (the "eval" split, never used for calibration or training), every artifact run
                          through edgekit's own harness adapter with the options the device gets
  time   LABEL=PATH ...   interleaved rounds: each round runs every artifact `--runs` times in turn (order rotated per
                          round), 1 thread; prints per-artifact median of the round medians, min–max of the round
                          medians, and the ratio to the first artifact per round (median and range)

PATH: .onnx (run by ONNX Runtime, or by OpenVINO with --ov) or .xml (OpenVINO IR). A label ending in "fp32" is
compiled with the f32 hint (edgekit's fp32 contract; this CPU would otherwise run bf16), as is one ending in
"@f32" (an INT8 model whose float parts then run f32), others with the defaults
edgekit uses for their precision. Run `time` under /work/bin/benchcore:

  python benchmarks/compound.py score fp32=/path/rec.onnx qat=out/rec.qat.xml --n 200
  /work/bin/benchcore python benchmarks/compound.py time ov-fp32=rec_fp32.xml qat-int8=rec.qat.xml --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402


F32_ALL = False  # --f32: every OpenVINO model with the f32 hint (the float parts of an INT8 model then run f32, not bf16)
OV_ONNX = False  # --ov: .onnx files run by OpenVINO (read_model on the ONNX file, as edgekit's openvino target converts it)


def _session(label: str, path: str, threads: int = 1):
    from edgekit.core.registry import harness_module

    p = Path(path)
    runtime = "openvino" if (p.suffix == ".xml" or OV_ONNX) else "onnxruntime"
    opts = {"inference_precision_hint": "f32"} if (runtime == "openvino" and (label.endswith("fp32") or label.endswith("@f32") or F32_ALL)) else {}
    return harness_module("adapters").open_session(runtime, str(p), threads, opts), runtime


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


def score(args) -> Dict[str, float]:
    from edgekit.quality.metrics import same_line, text_agreement
    from edgekit.zoo.datasets import decode_rec, rapidocr_model, rec_samples

    samples = rec_samples("eval", args.n, args.seed)
    feeds = [s.feeds for s in samples]
    truth = [str(s.label) for s in samples]
    ref_sess, _ = _session("ref-fp32", str(rapidocr_model("rec")))
    ref_out = [ref_sess.run(f)[0] for f in feeds]
    ref = [decode_rec([o])[0] for o in ref_out]
    res = {}
    if args.truth:
        print(json.dumps({"label": "fp32 (ONNX Runtime, the reference)", "lines": len(feeds), **_vs_truth(ref, truth)}), flush=True)
    for label, path in _pairs(args.artifacts):
        sess, rt = _session(label, path)
        outs = [sess.run(f)[0] for f in feeds]
        got = [decode_rec([o])[0] for o in outs]
        res[label] = round(text_agreement(ref, got), 4)
        rec = {"label": label, "runtime": rt, "lines": len(feeds), "identical": res[label],
               "identical_with_edge_spaces": round(float(np.mean([a == b for a, b in zip(ref, got)])), 4)}
        if args.truth:
            rec.update(_vs_truth(got, truth))
        if args.margins:
            # where do lines flip: timesteps whose top-1 class differs from FP32, and FP32's own top-1 - top-2
            # probability margin there (a small margin = FP32 itself was unsure)
            r = np.concatenate([o.reshape(-1, o.shape[-1]) for o in ref_out])
            g = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs])
            top2 = np.sort(r, axis=-1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
            flips = r.argmax(-1) != g.argmax(-1)
            # "fragile" lines: FP32's own top-1/top-2 margin falls below 0.01 at some timestep (any perturbation may flip them)
            line_min = [float(np.min(np.diff(np.sort(o.reshape(-1, o.shape[-1]), -1)[:, -2:], axis=-1))) for o in ref_out]
            differ = [i for i, (a, b) in enumerate(zip(ref, got)) if not same_line(a, b)]
            rec.update(timesteps=int(len(r)), flipped_timesteps=int(flips.sum()),
                       fp32_fragile_lines=int(sum(m < 0.01 for m in line_min)),
                       differing_lines_fp32_min_margin=[round(line_min[i], 3) for i in differ],
                       fp32_margin_at_flips_q10_q50_q90=[round(float(q), 3) for q in np.quantile(margin[flips], [0.1, 0.5, 0.9])] if flips.any() else None,
                       fp32_margin_median_all=round(float(np.median(margin)), 3),
                       lines_differing=[{"fp32": ref[i], "int8": got[i]} for i in differ][: args.margins])
        print(json.dumps(rec), flush=True)
    return res


def _vs_truth(got: List[str], truth: List[str]) -> Dict[str, float]:
    """Accuracy against the rendered text itself (what a user reads), beside agreement with FP32: exact lines (spaces
    at the ends ignored) and the character error rate (edit distance / characters of the truth, pooled)."""
    from edgekit.quality.metrics import edit_distance, text_agreement

    exact = text_agreement(truth, got)
    cer = sum(edit_distance(g.strip(), t.strip()) for g, t in zip(got, truth)) / max(1, sum(len(t.strip()) for t in truth))
    return {"truth_exact_lines": round(exact, 4), "truth_cer": round(cer, 5)}


def round_medians(sessions: List[Tuple[str, Any]], feed: Dict[str, Any], rounds: int, runs: int) -> Dict[str, List[float]]:
    """5 warm-up calls each, then `rounds` interleaved rounds (order rotated per round) of `runs` timed `s.run(feed)`
    calls per session; returns each label's per-round median in ms (compound_bench.py times with it too)."""
    for _, s in sessions:
        for _ in range(5):
            s.run(feed)
    per: Dict[str, List[float]] = {label: [] for label, _ in sessions}
    for r in range(rounds):
        order = sessions[r % len(sessions):] + sessions[: r % len(sessions)]
        for label, s in order:
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(feed)
                ts.append((time.perf_counter() - t0) * 1e3)
            per[label].append(statistics.median(ts))
    return per


def timing(args) -> None:
    from edgekit.zoo.datasets import rec_samples

    feed = rec_samples("eval", 1, 0)[0].feeds
    items = _pairs(args.artifacts)
    per = round_medians([(label, _session(label, path)[0]) for label, path in items], feed, args.rounds, args.runs)
    base = items[0][0]
    print(f"machine: {describe()}; benchcore={'yes' if __import__('os').environ.get('EDGEKIT_BENCHCORE') else 'NO'}; "
          f"1 thread; {args.rounds} interleaved rounds x {args.runs} runs; PP-OCRv4 rec 1x3x48x320")
    for label, _ in items:
        m = per[label]
        ratios = [b / x for b, x in zip(per[base], m)]
        print(json.dumps({"label": label, "median_ms": round(statistics.median(m), 3), "min_ms": round(min(m), 3), "max_ms": round(max(m), 3),
                          f"speedup_vs_{base}": round(statistics.median(ratios), 3), "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)]}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--f32", action="store_true", help="compile every OpenVINO model with the f32 hint (float parts of INT8 models in f32)")
    ap.add_argument("--ov", action="store_true", help="run .onnx artifacts with OpenVINO instead of ONNX Runtime")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("artifacts", nargs="+")
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--seed", type=int, default=0, help="the eval draw: 0 = s0 (COMPOUND.md's default); 1 = s1, the zoo's own "
                   "eval draw (its first 128 lines are the deploy's held-out check)")
    s.add_argument("--margins", type=int, default=0, metavar="K", help="also print flipped timesteps, FP32's top-1/top-2 margin at "
                   "them, and the first K differing lines")
    s.add_argument("--truth", action="store_true", help="also score every artifact (and the FP32 reference) against the "
                   "rendered text: exact lines and character error rate")
    t = sub.add_parser("time")
    t.add_argument("artifacts", nargs="+")
    t.add_argument("--rounds", type=int, default=7)
    t.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    global F32_ALL, OV_ONNX
    F32_ALL, OV_ONNX = args.f32, args.ov
    if args.cmd == "score":
        score(args)
    else:
        timing(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
