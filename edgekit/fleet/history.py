"""The one place the sweep talks to the history store (issue 12's edgekit.report.history)."""

from __future__ import annotations

from typing import Any, Dict, Optional


def append(history: Optional[str], result: Dict[str, Any], cell: Dict[str, Any], command: str) -> Optional[int]:
    """Append one measured cell to the history; returns its id (None when history is switched off)."""
    try:
        from edgekit.report.history import append_benchmark
    except ImportError:
        return None  # this build has no history store yet; the sweep store in --out holds every result
    from edgekit.results import BenchmarkResult

    return append_benchmark(history, BenchmarkResult.model_validate(result), kind="sweep", command=command, model=cell["model"])


def available() -> bool:
    """True when this build has the history store."""
    try:
        import edgekit.report.history  # noqa: F401
    except ImportError:
        return False
    return True


def records(history: Optional[str], command_contains: str = "") -> list:
    """History rows written by sweeps (for tests and `edgekit history`)."""
    from edgekit.report.history import History

    with History.open(history, create=False) as h:
        return [r for r in h.query() if r.get("kind") == "sweep" and command_contains in (r.get("command") or "")]
