"""Everything a person or a program reads after a run: terminal table, report.json/.md/.html with inline SVG
charts, the SQLite history of every run, and run-to-run comparison.

Belongs here: rendering (text.py: terminal + Markdown; html.py + charts.py: the self-contained report.html),
writing a deploy's output directory (outputs.py), device/software identity of a run (identity.py),
the history store (history.py) and compare (compare.py). Statistics themselves live in edgekit.quality.stats.
Callers import from this package; heavy modules (html, history) are imported only where used.
"""

from edgekit.report.outputs import build_report, manifest_beside, write_outputs, write_partial, write_search_failure
from edgekit.report.text import bench_rows, render_terminal, step_rows, to_markdown, variant_rows

__all__ = [
    "bench_rows",
    "build_report",
    "manifest_beside",
    "render_terminal",
    "step_rows",
    "to_markdown",
    "variant_rows",
    "write_outputs",
    "write_partial",
    "write_search_failure",
]
