"""Per-cell overhead of `edgekit sweep` (time beyond the benchmark itself), with and without Ray, 1 to 3 boards.

Usage (root, openssh-server, iproute2; Ray from edgekit[fleet] for the Ray rows):
    python benchmarks/sweep_overhead.py [--md benchmarks/SWEEP.md] [--json out.json] [--no-ray]

Boards are real sshd servers, each in its own network namespace (tests/fleet/boards.py). The cache is warmed
first, so the figures are the sweep's own costs, not conversions. Per cell:
  * benchmark itself = the harness's model load + first inference + warm-up + timed window (its own clocks);
  * board overhead   = the board worker's wall time for the cell minus that (lock, ssh connect on a board's
                       first cell, push check, remote process start, result parsing);
  * sweep overhead   = (sweep wall time - the busiest board's summed benchmark time) / that board's cells:
                       what the whole run costs per cell on its critical path (executor start-up, dispatch,
                       store writes, Ray connection and actors, report).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fleet"))
sys.path.insert(0, str(REPO / "benchmarks"))

SWEEP = """models: [zoo:ppocr-rec, zoo:minilm]
fleet: fleet.yaml
precisions: [fp32]
runtimes: [onnxruntime, openvino]
bench: {warmup_runs: 3, warmup_seconds: 0, min_runs: 20, min_seconds: 0.5}
"""


def run(shelf, root: Path, n: int, ray_address, ssh_config) -> dict:
    from edgekit.workflows.sweep import run_sweep

    d = root / f"{'ray' if ray_address else 'pool'}-{n}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    shelf.fleet_yaml(d / "fleet.yaml", shelf.names[:n])
    (d / "sweep.yaml").write_text(SWEEP)
    t0 = time.perf_counter()
    summary = run_sweep(d / "sweep.yaml", d / "out", ray=ray_address, ssh_config=ssh_config)
    wall = time.perf_counter() - t0
    with sqlite3.connect(d / "out" / "sweep.sqlite") as db:
        rows = db.execute("SELECT board, status, bench_s, cell_s FROM cells").fetchall()
    assert all(r[1] == "done" for r in rows), rows
    per_board = {}
    for board, _, bench_s, cell_s in rows:
        per_board.setdefault(board, []).append((bench_s, cell_s))
    busiest = max(per_board.values(), key=lambda v: sum(b for b, _ in v))
    board_over = [c - b for v in per_board.values() for b, c in v]
    return {
        "executor": "ray" if ray_address else "pool", "boards": n, "cells": len(rows), "wall_s": round(wall, 2),
        "bench_s_median": round(statistics.median(b for v in per_board.values() for b, _ in v), 3),
        "board_overhead_s_median": round(statistics.median(board_over), 3),
        "board_overhead_s_max": round(max(board_over), 3),
        "sweep_overhead_s_per_cell": round((wall - sum(b for b, _ in busiest)) / len(busiest), 3),
        "ran": summary["ran"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    from boards import RayCluster, Shelf
    from machine import describe

    root = Path(tempfile.mkdtemp(prefix="eksweep"))
    os.environ.setdefault("EDGEKIT_CACHE_DIR", str(root / "cache"))
    os.environ.setdefault("EDGEKIT_DATA_DIR", str(root / "data"))
    os.environ.setdefault("EDGEKIT_HISTORY", str(root / "history.sqlite"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    shelf = Shelf(root / "shelf", 3).start()
    cluster = None
    rows = []
    try:
        print("warming the cache (conversions are not part of the figures)...", flush=True)
        run(shelf, root, 1, None, shelf.ssh_config)
        if not args.no_ray:
            cluster = RayCluster().start()
        for n in (1, 2, 3):
            for ray in ([None] + ([cluster.address] if cluster else [])):
                r = run(shelf, root, n, ray, shelf.ssh_config)
                rows.append(r)
                print(json.dumps(r), flush=True)
    finally:
        if cluster:
            cluster.stop()
        shelf.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.md:
        lines = [
            "# Sweep overhead: the time a sweep adds beyond the benchmarks themselves",
            "",
            f"Measured {datetime.date.today()} with `python benchmarks/sweep_overhead.py --md benchmarks/SWEEP.md` on {describe()}.",
            "**The machine was loaded by four other engineers' builds and tests while this ran** (2 cores shared): the",
            "absolute figures are high and noisy; compare rows with each other, and re-measure on a quiet machine for",
            "absolute costs. One run per row.",
            "",
            "Each board is a real OpenSSH server in its own network namespace (tests/fleet/boards.py); the device is this",
            "machine, so three boards also share its two cores. Sweep: " + SWEEP.replace("\n", " ").strip(),
            "(4 cells per board, each a short benchmark), artifact cache warm. Ray: a local cluster of a head and one",
            "worker node (`ray start`, 1 CPU each), started before the timed runs.",
            "",
            "| executor | boards | cells | sweep wall s | benchmark itself s (median) | board overhead s/cell (median, max) | sweep overhead s/cell |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(f"| {r['executor']} | {r['boards']} | {r['cells']} | {r['wall_s']:.1f} | {r['bench_s_median']:.2f} | "
                         f"{r['board_overhead_s_median']:.2f}, {r['board_overhead_s_max']:.2f} | {r['sweep_overhead_s_per_cell']:.2f} |")
        lines += ["", "- benchmark itself: the harness's own clocks (load + first inference + warm-up + timed window).",
                  "- board overhead: board worker wall time per cell minus the benchmark itself (lock, ssh connect on the",
                  "  board's first cell, push check, remote process start, result parsing).",
                  "- sweep overhead: (sweep wall - busiest board's summed benchmark time) / its cells; includes executor",
                  "  start-up (process pool spawn, Ray connect + actor creation), dispatch, store writes and the report.", ""]
        Path(args.md).write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
