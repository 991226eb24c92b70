"""The history: every deploy and bench appends one record to an SQLite file, the single store of measurements.

Safe by construction: WAL journal + busy timeout so concurrent writers (two deploys, a fleet sweep) wait instead of
failing or corrupting; each append is one transaction; the schema carries a version (PRAGMA user_version) and an
application id, upgraded by ordered migrations. A file that is not an edgekit history, is corrupt, or was written
by a newer edgekit raises HistoryError and is never modified.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from edgekit.core.errors import EdgekitError

APPLICATION_ID = 0x45444B48  # "EDKH"
SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 30_000
ENV = "EDGEKIT_HISTORY"
DISABLED = ("off", "none", "0")


class HistoryError(EdgekitError):
    """The history database cannot be opened, read or written."""


# Ordered migrations: MIGRATIONS[v] takes a database at version v-1 to version v. Never edit a released one.
MIGRATIONS: Dict[int, Sequence[str]] = {
    1: (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created TEXT NOT NULL,
            kind TEXT NOT NULL,
            command TEXT,
            edgekit_version TEXT,
            model TEXT,
            model_sha256 TEXT,
            artifact_path TEXT,
            artifact_sha256 TEXT,
            artifact_format TEXT,
            profile TEXT,
            precision TEXT,
            runtime TEXT,
            runtime_version TEXT,
            host TEXT,
            arch TEXT,
            cpu_model TEXT,
            device TEXT,
            runs INTEGER,
            median_ms REAL,
            p90_ms REAL,
            p99_ms REAL,
            mean_ms REAL,
            samples BLOB,
            peak_rss_mb REAL,
            energy_mj REAL,
            energy TEXT,
            fidelity TEXT,
            report_path TEXT
        )""",
        "CREATE INDEX runs_model ON runs(model)",
        "CREATE INDEX runs_host ON runs(host)",
    ),
    # 2: interleaved `bench --rounds` records share a session id and carry their per-round medians
    2: (
        "ALTER TABLE runs ADD COLUMN session TEXT",
        "ALTER TABLE runs ADD COLUMN round_medians TEXT",
        "CREATE INDEX runs_created ON runs(created)",
    ),
}

COLUMNS = (
    "id", "created", "kind", "command", "edgekit_version", "model", "model_sha256", "artifact_path", "artifact_sha256",
    "artifact_format", "profile", "precision", "runtime", "runtime_version", "host", "arch", "cpu_model", "device", "runs",
    "median_ms", "p90_ms", "p99_ms", "mean_ms", "samples", "peak_rss_mb", "energy_mj", "energy", "fidelity", "report_path",
    "session", "round_medians",
)
JSON_COLUMNS = ("device", "energy", "fidelity", "round_medians")


def default_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("edgekit")) / "history.sqlite"


def resolve_path(path: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """--history PATH, else $EDGEKIT_HISTORY, else the user data dir; None when set to 'off'."""
    value = str(path) if path is not None else os.environ.get(ENV) or ""
    if value.strip().lower() in DISABLED:
        return None
    return Path(value).expanduser() if value else default_path()


def pack_samples(samples: Sequence[float]) -> bytes:
    return zlib.compress(np.asarray(samples, dtype="<f8").tobytes(), 6)


def unpack_samples(blob: Optional[bytes]) -> List[float]:
    if not blob:
        return []
    return np.frombuffer(zlib.decompress(blob), dtype="<f8").tolist()


class History:
    """One history file. Open with `History.open(path)`; every method raises HistoryError with the file named."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn

    # ---- opening and schema
    @classmethod
    def open(cls, path: Optional[Union[str, Path]] = None, create: bool = True) -> "History":
        p = resolve_path(path)
        if p is None:
            raise HistoryError(f"the history is turned off (${ENV}={os.environ.get(ENV)})", hint=f"unset {ENV} or pass --history PATH")
        if p.is_dir():
            raise HistoryError(f"history path {p} is a directory", hint="pass a file path, e.g. --history runs.sqlite")
        if not p.exists() and not create:
            raise HistoryError(f"no history at {p} (nothing recorded yet)", hint="run `edgekit deploy` or `edgekit bench` first, or pass --history PATH")
        if p.exists() and p.stat().st_size > 0:
            with open(p, "rb") as f:
                head = f.read(16)
            if head != b"SQLite format 3\x00":
                raise HistoryError(f"{p} is not an SQLite database (corrupt, or another kind of file); edgekit left it untouched",
                                   hint="move it away or pass --history to another file")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(p), timeout=BUSY_TIMEOUT_MS / 1000.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open history {p}: {exc}", hint="pass --history to a writable file") from exc
        h = cls(p, conn)
        try:
            h._prepare()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise HistoryError(f"history {p} is unreadable ({exc}); edgekit left it untouched",
                               hint="move it away (or restore a backup) and run again; pass --history to use another file") from exc
        except HistoryError:
            conn.close()
            raise
        return h

    def _prepare(self) -> None:
        c = self.conn
        c.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        version, app = self._check_identity()
        if version == SCHEMA_VERSION:
            c.execute("PRAGMA journal_mode = WAL")  # only on a file known to be ours
            return
        c.execute("BEGIN IMMEDIATE")  # one migrator at a time; others wait on the busy timeout
        try:
            version, app = self._check_identity()
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[v]:
                    c.execute(stmt)
            c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        c.execute("PRAGMA journal_mode = WAL")

    def _check_identity(self):
        c = self.conn
        version = c.execute("PRAGMA user_version").fetchone()[0]
        app = c.execute("PRAGMA application_id").fetchone()[0]
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        if app not in (0, APPLICATION_ID) or (app == 0 and tables):
            raise HistoryError(f"{self.path} is an SQLite database but not an edgekit history (tables: {', '.join(tables) or 'none'}); edgekit left it untouched",
                               hint="pass --history to another file")
        if version > SCHEMA_VERSION:
            raise HistoryError(f"history {self.path} has schema version {version}, newer than this edgekit understands ({SCHEMA_VERSION}); edgekit left it untouched",
                               hint="upgrade edgekit (pip install -U edgekit), or pass --history to another file")
        return version, app

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise HistoryError(f"history {self.path} stayed locked for {BUSY_TIMEOUT_MS // 1000} s: {exc}", hint="another edgekit is writing; retry") from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Undo the open transaction, if there still is one: a Ctrl-C (KeyboardInterrupt) can land after COMMIT has
        already ended it, and a failing ROLLBACK must not replace the exception being raised (it turned Ctrl-C during
        a sweep into "cannot write to history ... cannot rollback - no transaction is active", exit 1)."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original exception says what went wrong

    # ---- writing
    def append(self, record: Dict[str, Any]) -> int:
        """Insert one record (keys from COLUMNS except id); returns its id."""
        rec = {k: v for k, v in record.items() if k in COLUMNS and k != "id"}
        for k in JSON_COLUMNS:
            if k in rec and rec[k] is not None and not isinstance(rec[k], str):
                rec[k] = json.dumps(rec[k], default=str)
        cols = ", ".join(rec)
        qs = ", ".join("?" for _ in rec)
        try:
            with self._write() as c:
                cur = c.execute(f"INSERT INTO runs ({cols}) VALUES ({qs})", list(rec.values()))
                return int(cur.lastrowid)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot write to history {self.path}: {exc}", hint="check free space and permissions, or pass --history") from exc

    # ---- reading
    def query(self, model: Optional[str] = None, device: Optional[str] = None, last: Optional[int] = None) -> List[Dict[str, Any]]:
        """Runs oldest first; `model` and `device` match substrings (model name/sha/path; host/cpu/arch/profile)."""
        where, args = [], []
        if model:
            where.append("(model LIKE ? OR artifact_path LIKE ? OR model_sha256 LIKE ? OR artifact_sha256 LIKE ?)")
            args += [f"%{model}%", f"%{model}%", f"{model}%", f"{model}%"]
        if device:
            where.append("(host LIKE ? OR cpu_model LIKE ? OR arch LIKE ? OR profile LIKE ?)")
            args += [f"%{device}%"] * 4
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if last:
            sql += f" LIMIT {int(last)}"
        try:
            cur = self.conn.execute(sql, args)
            rows = [self._row(cur.description, r) for r in cur]
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot read history {self.path}: {exc}") from exc
        return rows[::-1]

    def get(self, run_id: int) -> Dict[str, Any]:
        try:
            cur = self.conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),))
            row = cur.fetchone()
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot read history {self.path}: {exc}") from exc
        if row is None:
            n = self.conn.execute("SELECT MAX(id) FROM runs").fetchone()[0]
            raise HistoryError(f"no run #{run_id} in history {self.path} (ids go up to {n or 0})", hint="list them with `edgekit history`")
        return self._row(cur.description, row)

    @staticmethod
    def _row(description, row: Sequence[Any]) -> Dict[str, Any]:
        rec = dict(zip([d[0] for d in description], row))
        for k in JSON_COLUMNS:
            if rec.get(k):
                rec[k] = json.loads(rec[k])
        rec["samples"] = unpack_samples(rec.get("samples"))
        return rec


# ---- building records from results


def record_from_benchmark(b, *, kind: str, command: str, model: Optional[str] = None, model_sha256: Optional[str] = None,
                          profile: Optional[str] = None, power_mode: Optional[str] = None, fidelity: Any = None,
                          report_path: Optional[str] = None, session: Optional[str] = None,
                          round_medians: Optional[List[float]] = None, artifact_format: Optional[str] = None) -> Dict[str, Any]:
    from edgekit import __version__
    from edgekit.report.identity import identity

    ident = identity(b, profile=profile, power_mode=power_mode)
    s = b.timing.stats
    e = b.energy
    return {
        "created": b.created,
        "kind": kind,
        "command": command,
        "edgekit_version": __version__,
        "model": model or Path(b.model.path).name,
        "model_sha256": model_sha256 or b.model.sha256,
        "artifact_path": b.model.path,
        "artifact_sha256": b.model.sha256,
        "artifact_format": artifact_format or b.model.format,
        "profile": profile,
        "precision": b.model.precision,
        "runtime": b.runtime.name,
        "runtime_version": b.runtime.version,
        "host": ident["host"],
        "arch": ident["arch"],
        "cpu_model": ident["cpu_model"],
        "device": ident,
        "runs": b.timing.runs,
        "median_ms": s.median_ms,
        "p90_ms": s.p90_ms,
        "p99_ms": s.p99_ms,
        "mean_ms": s.mean_ms,
        "samples": pack_samples(b.timing.samples_ms),
        "peak_rss_mb": b.memory.peak_rss_mb,
        "energy_mj": e.energy_per_inference_mj if e.available else None,
        "energy": e.model_dump(mode="json", exclude={"trace"}),
        "fidelity": fidelity.model_dump(mode="json") if hasattr(fidelity, "model_dump") else fidelity,
        "report_path": report_path,
        "session": session,
        "round_medians": round_medians,
    }


def append_benchmark(history_path, b, **kw) -> Optional[int]:
    """Open (or create) the history, append one run, close. Returns the id, or None when the history is off."""
    if resolve_path(history_path) is None:
        return None
    with History.open(history_path) as h:
        return h.append(record_from_benchmark(b, **kw))


def check_writable(history_path) -> None:
    """Open the history once before any long work, so a bad file fails fast (and is left untouched)."""
    if resolve_path(history_path) is None:
        return
    History.open(history_path).close()
