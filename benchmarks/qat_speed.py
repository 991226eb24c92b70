"""Seconds per QAT step on PP-OCRv4 rec (batch 8, every weighted op INT8), edgekit's QatStep with different trainer
settings, interleaved: `rounds` rounds, each running every variant for `steps` optimiser steps in turn (order rotated).

  /work/bin/benchcore python benchmarks/qat_speed.py --rounds 5 --steps 6

Variants: `interp` = last session's trainer (node-by-node interpreter, teacher run in torch at every step, learnable
activation ranges); `fast` = planned forward (constant/shape nodes folded, elementwise chains fused) + teacher top-16
cached once on ONNX Runtime; `fast-frozen` = fast with the activation ranges frozen after initialisation (the fused
non-learnable fake-quant op). A step's time is the step record's train_s / steps (range init, caching and export are
not in it; the cache's time is printed separately). Threads: torch.get_num_threads() (1 under benchcore).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402

VARIANTS = {
    "interp": {"fast": False, "teacher_topk": 0},
    "fast": {"fast": True, "teacher_topk": 16},
    "fast-frozen": {"fast": True, "teacher_topk": 16, "learn_act_ranges": False},
}


def run_once(model: Path, feeds, overrides, steps: int):
    from edgekit.converters.qat import QatConfig, QatStep
    from edgekit.core.artifact import load_artifact
    from edgekit.core.profiles import CPU, DeviceProfile
    from edgekit.core.steps import StepContext

    with tempfile.TemporaryDirectory() as d:
        profile = DeviceProfile(name="bench", os="linux", cpu=CPU(model="bench", cores=1, isa="x86_64"), memory_mb=4096,
                                runtimes=["onnxruntime"], precisions=["fp32"], threads=1)
        ctx = StepContext(work_dir=Path(d), profile=profile, calib_data=lambda n: feeds[:n])
        cfg = QatConfig(train_budget_s=3600, max_steps=steps, batch_size=8, train_samples=len(feeds), init_samples=8,
                        val_samples=0, mixed="off", tail="off", **overrides)
        QatStep().run(load_artifact(model), cfg, ctx)
        rec = ctx.report["qat"]
        return rec["train_s"] / rec["steps"], (rec.get("teacher_cache") or {}).get("cache_s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    import os

    import torch

    from edgekit.zoo.datasets import rapidocr_model, rec_samples

    model = rapidocr_model("rec")
    feeds = [s.feeds for s in rec_samples("calib", args.samples, 0)]
    names = args.variants.split(",")
    per = {n: [] for n in names}
    cache = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            s, c = run_once(model, feeds, VARIANTS[n], args.steps)
            per[n].append(s)
            if c is not None:
                cache[n].append(c)
            print(json.dumps({"round": r, "variant": n, "s_per_step": round(s, 3)}), flush=True)
    print(f"machine: {describe()}; benchcore={'yes' if os.environ.get('EDGEKIT_BENCHCORE') else 'NO'}; torch threads "
          f"{torch.get_num_threads()}; PP-OCRv4 rec, batch 8x3x48x320, all 47 weighted ops INT8; {args.rounds} rounds x {args.steps} steps")
    base = statistics.median(per[names[0]])
    for n in names:
        m = statistics.median(per[n])
        print(json.dumps({"variant": n, "median_s_per_step": round(m, 3), "min": round(min(per[n]), 3), "max": round(max(per[n]), 3),
                          "steps_per_s": round(1 / m, 3), f"speedup_vs_{names[0]}": round(base / m, 2),
                          "teacher_cache_s_for_samples": round(statistics.median(cache[n]), 1) if cache[n] else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
