"""`edgekit sweep`: models x precisions x boards. Conversions once per (model, profile, runtime, precision),
benchmarks in parallel across boards and serial on each, every finished cell committed to the sweep store
before the next is taken, results appended to the history, and sweep-report.html written at the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from edgekit.fleet.cells import expand
from edgekit.fleet.inventory import SweepSpec, load_sweep
from edgekit.fleet.store import FINAL, SweepStore
from edgekit.core.fsutil import ensure_writable_dir

Event = Callable[[str, Dict[str, Any]], None]
STORE_NAME = "sweep.sqlite"
REPORT_NAME = "sweep-report.html"
WAIT_SLICE_S = 0.5  # how often the driver wakes to notice Ctrl-C; nothing waits unboundedly


class SweepSummary(dict):
    """What the sweep did: counts by status, cells run in this invocation, where the outputs are."""


def _artifact_present(info: Optional[Dict[str, Any]]) -> bool:
    if not info:
        return False
    art = info.get("artifact") or {}
    return all(Path(p).is_file() for p in [art.get("path"), *art.get("extra_files", [])] if p)


def run_sweep(
    sweep: Union[str, Path, SweepSpec],
    out: Union[str, Path],
    *,
    ray: Optional[str] = None,
    ssh_config: Optional[str] = None,
    ssh: Optional[Dict[str, Any]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    history: Optional[Union[str, Path]] = None,
    on_event: Optional[Event] = None,
    on_board_progress: Optional[Callable[[str, Dict[str, Any]], None]] = None,
    command: str = "edgekit.workflows.sweep.run_sweep(...)",
) -> SweepSummary:
    """Run (or resume) a sweep into `out`; returns a summary. Safe to interrupt at any point."""
    emit = on_event or (lambda kind, data: None)
    from edgekit.report.history import check_writable

    spec = sweep if isinstance(sweep, SweepSpec) else load_sweep(sweep)
    out_dir = ensure_writable_dir(out, "--out directory")
    check_writable(history)  # a bad history file fails now, not after the first measurement
    store = SweepStore(out_dir / STORE_NAME)
    t_start = time.perf_counter()
    ran: List[str] = []
    try:
        stale = store.reset_running()
        from edgekit.core.pipeline import default_cache_dir

        # one absolute cache for every worker (Ray workers do not inherit this process's environment)
        jobs, cells = expand(spec, str(Path(cache_dir or default_cache_dir()).resolve()))
        store.add_cells(cells)
        todo = [c for c in cells if store.status(c["id"]) not in FINAL]
        emit("plan", {"cells": len(cells), "todo": len(todo), "stale": stale, "boards": [b.name for b in spec.fleet.boards],
                      "conversions": len({c["conversion"] for c in todo})})
        if todo:
            ran = _execute(spec, store, jobs, todo, ray, ssh_config, ssh, history, emit, on_board_progress, command)
    finally:
        rows = store.cells()
        store.close()
    summary = SweepSummary(
        cells=len(rows), ran=len(ran), seconds=round(time.perf_counter() - t_start, 3),
        by_status={s: sum(1 for r in rows if r["status"] == s) for s in sorted({r["status"] for r in rows})},
        store=str(out_dir / STORE_NAME), report=str(out_dir / REPORT_NAME),
    )
    from edgekit.report.sweep_html import write_sweep_report

    write_sweep_report(out_dir / REPORT_NAME, rows, spec)
    emit("finished", dict(summary))
    return summary


def _make_executor(spec: SweepSpec, ray: Optional[str], ssh: Dict[str, Any], on_board_progress):
    boards = [b.model_dump(mode="json") for b in spec.fleet.boards]
    retries, bench = spec.retries.model_dump(), spec.bench.model_dump()
    if ray:
        from edgekit.fleet.executors import RayExecutor

        return RayExecutor(ray, boards, ssh, retries, bench)
    from edgekit.fleet.executors import PoolExecutor

    return PoolExecutor(boards, ssh, retries, bench, workers=spec.conversion_workers, on_progress=on_board_progress)


def _execute(spec, store: SweepStore, jobs, todo, ray, ssh_config, ssh, history, emit: Event, on_board_progress, command) -> List[str]:
    ssh_kw = dict(ssh or {})
    if ssh_config:
        ssh_kw["ssh_config"] = str(ssh_config)
    by_conv: Dict[str, List[Dict[str, Any]]] = {}
    for c in todo:
        by_conv.setdefault(c["conversion"], []).append(c)
    jobs_by_key = {j["key"]: j for j in jobs}
    from edgekit.fleet.history import HistorySink

    sink = HistorySink(history, command)
    ex = _make_executor(spec, ray, ssh_kw, on_board_progress)
    emit("executor", {"describe": ex.describe()})
    pending: Dict[Any, Dict[str, Any]] = {}
    ran: List[str] = []
    interrupted = False

    def dispatch(key: str, outcome: Dict[str, Any]) -> None:
        for c in by_conv[key]:
            if outcome["status"] == "ok":
                store.mark_running(c["id"])
                emit("queued", {"board": c["board"], "cell": c})
                pending[ex.submit_cell(c["board"], c, outcome["info"])] = {"kind": "cell", "cell": c, "fidelity": outcome["info"].get("fidelity")}
            else:
                final = {"infeasible": "infeasible", "rejected": "rejected"}.get(outcome["status"], "failed")
                reason = outcome["reason"] if final != "failed" else f"conversion failed: {outcome['reason']}"
                store.finish(c["id"], final, reason)
                emit("cell", {"board": c["board"], "cell": c, "status": final, "reason": reason})

    try:
        for key in by_conv:
            prior = store.conversion(key)
            if prior and prior["status"] in ("ok", "infeasible", "rejected") and (prior["status"] != "ok" or _artifact_present(prior["info"])):
                emit("conversion", {"key": key, "job": jobs_by_key[key], "status": prior["status"], "reused": True})
                dispatch(key, prior)
                continue
            pending[ex.submit_conversion(jobs_by_key[key])] = {"kind": "conversion", "key": key}
            emit("converting", {"key": key, "job": jobs_by_key[key]})
        while pending:
            done, _ = ex.wait(list(pending), WAIT_SLICE_S)
            for fut in done:
                meta = pending.pop(fut)
                if meta["kind"] == "conversion":
                    key = meta["key"]
                    try:
                        outcome = ex.result(fut)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:  # noqa: BLE001 - a crashed worker (after Ray's retries) is this conversion's result
                        outcome = {"status": "failed", "reason": f"conversion worker crashed: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", "build_s": None}
                    store.record_conversion(key, jobs_by_key[key], outcome["status"], outcome.get("reason", ""), outcome.get("info"), outcome.get("build_s"))
                    emit("conversion", {"key": key, "job": jobs_by_key[key], "status": outcome["status"], "reason": outcome.get("reason", ""), "build_s": outcome.get("build_s")})
                    dispatch(key, outcome)
                    continue
                c = meta["cell"]
                try:
                    res = ex.result(fut)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001 - the board's worker died beyond Ray's restarts: a failed cell, the sweep goes on
                    res = {"status": "failed", "reason": f"board worker crashed: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", "result": None, "bench_s": None, "cell_s": None}
                if res["status"] == "interrupted":
                    continue  # left 'running' in the store: reset to interrupted, re-run next time
                store.finish(c["id"], res["status"], res.get("reason", ""), res.get("result"), res.get("bench_s"), res.get("cell_s"))
                ran.append(c["id"])
                if res["status"] == "done" and res.get("result"):
                    sink.append(res["result"], {**c, "fidelity": meta["fidelity"]})
                emit("cell", {"board": c["board"], "cell": c, "status": res["status"], "reason": res.get("reason", ""), "bench_s": res.get("bench_s"), "cell_s": res.get("cell_s")})
    except KeyboardInterrupt:
        interrupted = True
        ex.interrupt()
        store.reset_running()
        raise
    finally:
        sink.close()
        if not interrupted:
            ex.close()
    return ran

