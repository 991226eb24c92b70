"""The one place the sweep talks to the history store (issue 12's edgekit.report.history)."""

from __future__ import annotations

from typing import Any, Dict, Optional


class HistorySink:
    """Appends each measured cell to the history, keeping the file open for the whole sweep (opening it per
    append cost ~31 ms here, which would make the history the head node's bottleneck at 1,000 boards)."""

    def __init__(self, history: Optional[str], command: str):
        from edgekit.report.history import History, resolve_path

        self.command = command
        self._h = History.open(history) if resolve_path(history) is not None else None

    def append(self, result: Dict[str, Any], cell: Dict[str, Any]) -> Optional[int]:
        if self._h is None:
            return None  # history switched off (EDGEKIT_HISTORY=off / --history off)
        from edgekit.core.results import BenchmarkResult
        from edgekit.report.history import record_from_benchmark

        b = BenchmarkResult.model_validate(result)
        return self._h.append(record_from_benchmark(b, kind="sweep", command=self.command, model=cell["model"],
                                                    profile=cell["profile"], fidelity=cell.get("fidelity")))

    def close(self) -> None:
        if self._h is not None:
            self._h.close()
            self._h = None


def records(history: Optional[str]) -> list:
    """History rows written by sweeps."""
    from edgekit.report.history import History

    with History.open(history, create=False) as h:
        return [r for r in h.query() if r.get("kind") == "sweep"]
