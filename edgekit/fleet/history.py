"""The one place the sweep talks to the history store (issue 12's edgekit.report.history)."""

from __future__ import annotations

from typing import Any, Dict, Optional


def append(history: Optional[str], result: Dict[str, Any], cell: Dict[str, Any], command: str) -> Optional[int]:
    """Append one measured cell to the history; returns its id (None when history is switched off)."""
    from edgekit.core.results import BenchmarkResult
    from edgekit.report.history import append_benchmark

    return append_benchmark(history, BenchmarkResult.model_validate(result), kind="sweep", command=command, model=cell["model"],
                            profile=cell["profile"], fidelity=cell.get("fidelity"))


def records(history: Optional[str]) -> list:
    """History rows written by sweeps."""
    from edgekit.report.history import History

    with History.open(history, create=False) as h:
        return [r for r in h.query() if r.get("kind") == "sweep"]
