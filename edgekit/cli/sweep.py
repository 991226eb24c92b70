"""`edgekit sweep SWEEP.yaml --out DIR [--ray auto|ADDRESS] [--ssh-config FILE]`."""

from __future__ import annotations

import threading
from typing import Any, Dict

import click

from edgekit.cli.common import console, is_tty, json_option, print_json


class BoardProgress:
    """Live per-board counts (done / running / failed / queued) as a rich table on a terminal, else one line per event."""

    def __init__(self, live: bool):
        self.live = live
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.lines = []
        self.err = console(stderr=True)
        self._lock = threading.Lock()
        self._live = None

    def _row(self, board: str) -> Dict[str, Any]:
        return self.rows.setdefault(board, {"done": 0, "failed": 0, "queued": 0, "running": "", "phase": ""})

    def table(self):
        from rich.table import Table

        t = Table(title="sweep", show_lines=False)
        for col in ("board", "done", "running", "failed", "queued", "now"):
            t.add_column(col)
        for name, r in sorted(self.rows.items()):
            t.add_row(name, str(r["done"]), "1" if r["running"] else "0", str(r["failed"]), str(r["queued"]), f"{r['running']} {r['phase']}".strip())
        return t

    def say(self, msg: str) -> None:
        from rich.markup import escape

        if self._live is not None:
            self._live.console.print(f"[dim]›[/dim] {escape(msg)}")
        else:
            self.err.print(f"[dim]›[/dim] {escape(msg)}", soft_wrap=True)

    def event(self, kind: str, d: Dict[str, Any]) -> None:
        with self._lock:
            if kind == "plan":
                for b in d["boards"]:
                    self._row(b)
                self.say(f"{d['cells']} cells, {d['todo']} to run ({d['conversions']} conversions)" + (f"; {d['stale']} left running by an interrupted sweep will run again" if d["stale"] else ""))
                if self.live and d["todo"]:
                    from rich.live import Live

                    self._live = Live(self.table(), console=self.err, refresh_per_second=4, transient=False)
                    self._live.start()
            elif kind == "executor":
                self.say(f"executor: {d['describe']}")
            elif kind == "converting":
                j = d["job"]
                self.say(f"converting {j['model']} for {j['profile_name']} ({j['runtime'] or 'profile runtime'}/{j['precision']})")
            elif kind == "conversion":
                j = d["job"]
                self.say(f"conversion {j['model']} {j['profile_name']} {j['precision']}: {d['status']}" + (" (recorded earlier)" if d.get("reused") else "") + (f" — {d['reason']}" if d.get("reason") else ""))
            elif kind == "queued":
                self._row(d["board"])["queued"] += 1
            elif kind == "cell":
                r = self._row(d["board"])
                r["queued"] = max(0, r["queued"] - 1) if d["status"] in ("done", "failed") and "bench_s" in d else r["queued"]
                r["running"], r["phase"] = "", ""
                r["done" if d["status"] in ("done", "rejected", "infeasible") else "failed"] += 1
                c = d["cell"]
                self.say(f"{d['board']}: {c['model']} {c['precision']} {d['status']}" + (f" — {d['reason']}" if d.get("reason") else ""))
            if self._live is not None:
                self._live.update(self.table())

    def board(self, board: str, p: Dict[str, Any]) -> None:
        with self._lock:
            r = self._row(board)
            r["running"] = "benchmark"
            r["phase"] = str(p.get("phase") or p.get("event") or "")
            if self._live is not None:
                self._live.update(self.table())

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


@click.command("sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Directory for sweep.sqlite (the resumable record) and sweep-report.html.")
@click.option("--ray", default=None, metavar="auto|ADDRESS", help="Run on Ray (pip install 'edgekit[fleet]'): `auto` joins the running cluster or starts a local one; or a cluster address.")
@click.option("--ssh-config", type=click.Path(dir_okay=False), default=None, help="ssh config file for the boards' host aliases (default ~/.ssh/config).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Artifact cache (default: the user cache; must be shared by all Ray nodes).")
@click.option("--history", default=None, help="History database to append results to (default: the user's; 'off' to skip).")
@json_option
def sweep(sweep_file, out, ray, ssh_config, cache_dir, history, as_json):
    """Benchmark models x precisions across a fleet of boards (resumable; re-run to finish what is missing).

    \b
    Conversions run once per model x profile x precision (cached); benchmarks run in parallel
    across boards, never two at once on one board (an OS lock that other sweeps respect).
    Ctrl-C, a lost board or a crash loses nothing measured; re-running skips finished cells.
    """
    from edgekit.workflows.deploy import command_line
    from edgekit.workflows.sweep import run_sweep

    prog = BoardProgress(live=is_tty() and not as_json)
    try:
        summary = run_sweep(sweep_file, out, ray=ray, ssh_config=ssh_config, cache_dir=cache_dir, history=history,
                            on_event=prog.event, on_board_progress=prog.board, command=command_line())
    finally:
        prog.stop()
    if as_json:
        print_json(dict(summary))
        return
    c = console()
    c.print(f"{summary['cells']} cells: " + ", ".join(f"{n} {s}" for s, n in summary["by_status"].items()) + f"; ran {summary['ran']} now in {summary['seconds']:.1f} s")
    c.print(f"report: {summary['report']}\nstore:  {summary['store']}")
    if summary["by_status"].get("failed") or summary["by_status"].get("interrupted"):
        c.print("some cells did not finish: re-run the same command to retry only those")
        raise SystemExit(1)
