"""History export: CSV (stdlib) or Parquet (pyarrow, optional extra)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Dict, List, Optional

from edgekit.core.errors import UsageError

FLAT = ("id", "created", "kind", "model", "model_sha256", "artifact_path", "artifact_sha256", "artifact_format", "profile",
        "precision", "runtime", "runtime_version", "host", "arch", "cpu_model", "runs", "median_ms", "p90_ms", "p99_ms",
        "mean_ms", "peak_rss_mb", "energy_mj", "session", "command", "edgekit_version", "report_path")


def _row(r: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: r.get(k) for k in FLAT}
    for k in ("device", "energy", "fidelity", "round_medians"):
        out[k] = json.dumps(r.get(k), sort_keys=True) if r.get(k) is not None else None
    return out


def export_runs(runs: List[Dict[str, Any]], fmt: str, out: Optional[str]) -> Optional[str]:
    """CSV text when `out` is None; otherwise writes `out` atomically and returns None."""
    from edgekit.core.fsutil import atomic_write_bytes, atomic_write_text

    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*FLAT, "device", "energy", "fidelity", "round_medians", "samples_ms"], lineterminator="\n")
        w.writeheader()
        for r in runs:
            w.writerow({**_row(r), "samples_ms": " ".join(repr(float(x)) for x in r["samples"])})
        if out is None:
            return buf.getvalue()
        atomic_write_text(out, buf.getvalue())
        return None
    if fmt == "parquet":
        if out is None:
            raise UsageError("parquet is binary: pass --out FILE.parquet")
        from edgekit.core.errors import require

        pa = require("pyarrow", "parquet", "history export --format parquet")
        import pyarrow.parquet as pq

        rows = [{**_row(r), "samples_ms": [float(x) for x in r["samples"]]} for r in runs]
        table = pa.Table.from_pylist(rows) if rows else pa.table({k: [] for k in [*FLAT, "samples_ms"]})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        atomic_write_bytes(out, sink.getvalue())
        return None
    raise UsageError(f"unknown export format '{fmt}'")
