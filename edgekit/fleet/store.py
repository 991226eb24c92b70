"""The sweep store: one SQLite file (WAL) in --out; each finished cell is committed before the next starts,
so Ctrl-C, a lost board or a crash loses nothing measured and a re-run skips what is done."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from edgekit.core.errors import EdgekitError

SCHEMA = 1
# done/rejected/infeasible are final; failed and interrupted cells run again on the next sweep
FINAL = ("done", "rejected", "infeasible")


class StoreError(EdgekitError):
    """The sweep store in --out cannot be used."""


class SweepStore:
    """Thread-safe: one connection guarded by a lock; every write is its own committed transaction."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA:
                raise StoreError(f"{self.path} was written by a newer edgekit (store schema {version} > {SCHEMA})", hint="use a newer edgekit or another --out directory")
            self.db.executescript(
                """
                CREATE TABLE IF NOT EXISTS cells (
                  id TEXT PRIMARY KEY, model TEXT, profile TEXT, runtime TEXT, precision TEXT, board TEXT,
                  conversion TEXT, status TEXT, attempts INTEGER DEFAULT 0, reason TEXT DEFAULT '',
                  result TEXT, bench_s REAL, cell_s REAL, started REAL, finished REAL);
                CREATE TABLE IF NOT EXISTS conversions (
                  key TEXT PRIMARY KEY, model TEXT, profile TEXT, runtime TEXT, precision TEXT,
                  status TEXT, reason TEXT DEFAULT '', info TEXT, build_s REAL, finished REAL);
                CREATE TABLE IF NOT EXISTS events (t REAL, kind TEXT, board TEXT, cell TEXT, detail TEXT);
                PRAGMA user_version = 1;
                """
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable sweep store: {exc}", hint="point --out at a fresh directory (the file is left untouched)") from None

    def _x(self, sql: str, args: Iterable[Any] = ()) -> List[sqlite3.Row]:
        with self._lock:
            return self.db.execute(sql, tuple(args)).fetchall()

    # ---- cells
    def add_cells(self, cells: List[Dict[str, Any]]) -> None:
        """Insert cells not seen before (a re-run keeps what is recorded)."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            for c in cells:
                self.db.execute(
                    "INSERT OR IGNORE INTO cells (id, model, profile, runtime, precision, board, conversion, status) VALUES (?,?,?,?,?,?,?,'pending')",
                    (c["id"], c["model"], c["profile"], c["runtime"] or "", c["precision"], c["board"], c["conversion"]),
                )
            self.db.execute("COMMIT")

    def status(self, cell_id: str) -> Optional[str]:
        rows = self._x("SELECT status FROM cells WHERE id=?", (cell_id,))
        return rows[0][0] if rows else None

    def mark_running(self, cell_id: str) -> None:
        self._x("UPDATE cells SET status='running', attempts=attempts+1, started=? WHERE id=?", (time.time(), cell_id))

    def finish(self, cell_id: str, status: str, reason: str = "", result: Optional[Dict[str, Any]] = None,
               bench_s: Optional[float] = None, cell_s: Optional[float] = None) -> None:
        self._x(
            "UPDATE cells SET status=?, reason=?, result=?, bench_s=?, cell_s=?, finished=? WHERE id=?",
            (status, reason, json.dumps(result) if result is not None else None, bench_s, cell_s, time.time(), cell_id),
        )

    def reset_running(self) -> int:
        """Cells left 'running' by a crashed or interrupted sweep run again."""
        with self._lock:
            cur = self.db.execute("UPDATE cells SET status='interrupted', reason='the sweep stopped while this cell ran' WHERE status='running'")
            return cur.rowcount

    def cells(self, status: Optional[str] = None) -> List[Dict[str, Any]]:
        sql = "SELECT id, model, profile, runtime, precision, board, conversion, status, attempts, reason, result, bench_s, cell_s, started, finished FROM cells"
        rows = self._x(sql + (" WHERE status=?" if status else "") + " ORDER BY model, precision, board", (status,) if status else ())
        keys = ["id", "model", "profile", "runtime", "precision", "board", "conversion", "status", "attempts", "reason", "result", "bench_s", "cell_s", "started", "finished"]
        out = []
        for r in rows:
            d = dict(zip(keys, r))
            d["result"] = json.loads(d["result"]) if d["result"] else None
            out.append(d)
        return out

    # ---- conversions
    def conversion(self, key: str) -> Optional[Dict[str, Any]]:
        rows = self._x("SELECT status, reason, info, build_s FROM conversions WHERE key=?", (key,))
        if not rows:
            return None
        status, reason, info, build_s = rows[0]
        return {"status": status, "reason": reason, "info": json.loads(info) if info else None, "build_s": build_s}

    def record_conversion(self, key: str, job: Dict[str, Any], status: str, reason: str, info: Optional[Dict[str, Any]], build_s: Optional[float]) -> None:
        self._x(
            "INSERT OR REPLACE INTO conversions (key, model, profile, runtime, precision, status, reason, info, build_s, finished) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (key, job["model"], job["profile"], job.get("runtime") or "", job["precision"], status, reason, json.dumps(info) if info else None, build_s, time.time()),
        )

    def event(self, kind: str, board: str = "", cell: str = "", detail: str = "") -> None:
        self._x("INSERT INTO events VALUES (?,?,?,?,?)", (time.time(), kind, board, cell, detail))

    def events(self, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        rows = self._x("SELECT t, kind, board, cell, detail FROM events" + (" WHERE kind=?" if kind else "") + " ORDER BY t", (kind,) if kind else ())
        return [dict(zip(["t", "kind", "board", "cell", "detail"], r)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self.db.close()
