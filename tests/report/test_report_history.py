"""The SQLite history: records round-trip, schema migrations, concurrent writers, and files it must not touch."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from edgekit.report import history as hist
from edgekit.report.history import History, HistoryError


def _record(result, **kw):
    return hist.record_from_benchmark(result, kind="bench", command="edgekit bench x", profile="x86-cpu", **kw)


def test_append_and_query_round_trip(tmp_path, real_result):
    path = tmp_path / "h.sqlite"
    with History.open(path) as h:
        i1 = h.append(_record(real_result, model="light_shufflenet"))
        i2 = h.append(_record(real_result, model="other-model"))
        assert (i1, i2) == (1, 2)
        r = h.get(i1)
        assert r["samples"] == real_result.timing.samples_ms  # full samples, exact after compression
        assert r["median_ms"] == real_result.timing.stats.median_ms
        assert r["device"]["cpu_model"] == real_result.device.cpu_model
        assert r["device"]["runtime_version"] == real_result.runtime.version
        assert r["artifact_sha256"] == real_result.model.sha256 and r["edgekit_version"]
        assert [x["id"] for x in h.query(model="other")] == [2]
        assert [x["id"] for x in h.query(last=1)] == [2]
        assert [x["id"] for x in h.query(device=real_result.device.arch)] == [1, 2]
        assert h.query(device="no-such-board") == []
        with pytest.raises(HistoryError, match=r"no run #9 .*ids go up to 2"):
            h.get(9)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == hist.SCHEMA_VERSION
    blob = con.execute("SELECT samples FROM runs WHERE id = 1").fetchone()[0]
    assert len(blob) < 8 * len(real_result.timing.samples_ms) + 64  # stored compressed, not as JSON text


class _InterruptedAt:
    """The history's connection, with a Ctrl-C (KeyboardInterrupt) arriving right after the statement `at` ran, as a
    SIGINT can: the statement itself took effect (COMMIT ended the transaction; INSERT left one open)."""

    def __init__(self, conn, at: str):
        self._conn, self._at = conn, at

    def execute(self, sql, *args):
        cur = self._conn.execute(sql, *args)
        if sql.strip().upper().startswith(self._at):
            raise KeyboardInterrupt
        return cur

    def __getattr__(self, name):
        return getattr(self._conn, name)


@pytest.mark.parametrize("at, rows_after", [("COMMIT", 1), ("INSERT", 0)])
def test_ctrl_c_during_a_write_stays_a_ctrl_c_and_leaves_a_consistent_file(tmp_path, real_result, at, rows_after):
    # Ctrl-C after COMMIT used to run ROLLBACK on no transaction, and that sqlite3 error replaced the KeyboardInterrupt:
    # `edgekit sweep` interrupted by Ctrl-C exited 1 with "cannot write to history ... cannot rollback" instead of 130
    path = tmp_path / "h.sqlite"
    with History.open(path) as h:
        real_conn = h.conn
        h.conn = _InterruptedAt(real_conn, at)
        with pytest.raises(KeyboardInterrupt):
            h.append(_record(real_result, model="m"))
        h.conn = real_conn
        assert not real_conn.in_transaction
        assert len(h.query()) == rows_after
        assert h.append(_record(real_result, model="m2")) == rows_after + 1  # the file still takes writes


def test_migrates_a_version_1_file_and_keeps_its_rows(tmp_path, real_result):
    path = tmp_path / "v1.sqlite"
    con = sqlite3.connect(path)
    for stmt in hist.MIGRATIONS[1]:
        con.execute(stmt)
    con.execute(f"PRAGMA application_id = {hist.APPLICATION_ID}")
    con.execute("PRAGMA user_version = 1")
    con.execute("INSERT INTO runs (created, kind, model, median_ms) VALUES ('2026-01-01T00:00:00Z', 'bench', 'old-run', 4.5)")
    con.commit()
    con.close()
    with History.open(path) as h:
        old = h.get(1)
        assert old["model"] == "old-run" and old["session"] is None and old["samples"] == []
        new = h.append(_record(real_result, session="abc", round_medians=[1.0, 2.0]))
        assert h.get(new)["session"] == "abc" and h.get(new)["round_medians"] == [1.0, 2.0]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def _unchanged(path, before):
    assert path.read_bytes() == before


def test_corrupt_file_gives_clear_error_and_is_left_untouched(tmp_path):
    path = tmp_path / "h.sqlite"
    path.write_bytes(b"this is not a database\n" * 10)
    before = path.read_bytes()
    with pytest.raises(HistoryError, match="not an SQLite database .*left it untouched"):
        History.open(path)
    _unchanged(path, before)


def test_truncated_database_gives_clear_error(tmp_path, real_result):
    path = tmp_path / "h.sqlite"
    with History.open(path) as h:
        for _ in range(30):
            h.append(_record(real_result))
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    data = path.read_bytes()
    path.write_bytes(data[:4096] + b"\x00" * 512 + data[4608:6000])  # header intact, pages lost
    before = path.read_bytes()
    with pytest.raises(HistoryError, match="unreadable|not an edgekit history"):
        with History.open(path) as h:
            h.query()
    _unchanged(path, before)


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "h.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, future_column TEXT)")
    con.execute(f"PRAGMA application_id = {hist.APPLICATION_ID}")
    con.execute(f"PRAGMA user_version = {hist.SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(HistoryError, match=f"schema version {hist.SCHEMA_VERSION + 1}, newer than this edgekit"):
        History.open(path)
    _unchanged(path, before)


def test_someone_elses_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "app.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(HistoryError, match="not an edgekit history \\(tables: users\\)"):
        History.open(path)
    _unchanged(path, before)


WRITER = textwrap.dedent(
    """
    import json, sys
    from edgekit.report.history import History
    rec = json.load(open(sys.argv[2]))
    rec["samples"] = bytes.fromhex(rec["samples"])
    for i in range(int(sys.argv[3])):
        with History.open(sys.argv[1]) as h:  # open per append, like separate deploys do
            h.append(dict(rec, command="writer %s #%d" % (sys.argv[4], i)))
    """
)


def test_concurrent_writers_never_lose_or_corrupt_records(tmp_path, real_result):
    path = tmp_path / "shared.sqlite"  # does not exist yet: the writers also race to create and migrate it
    rec = _record(real_result)
    rec["samples"] = rec["samples"].hex()
    (tmp_path / "rec.json").write_text(json.dumps(rec))
    (tmp_path / "w.py").write_text(WRITER)
    n_proc, n_each = 4, 15
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "w.py"), str(path), str(tmp_path / "rec.json"), str(n_each), str(k)],
                              stderr=subprocess.PIPE, text=True) for k in range(n_proc)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT id), COUNT(DISTINCT command) FROM runs").fetchone() == (n_proc * n_each,) * 3
    with History.open(path) as h:
        assert all(r["samples"] == real_result.timing.samples_ms for r in h.query())


def test_history_off_and_env_override(tmp_path, monkeypatch, real_result):
    monkeypatch.setenv("EDGEKIT_HISTORY", "off")
    assert hist.append_benchmark(None, real_result, kind="bench", command="x") is None
    monkeypatch.setenv("EDGEKIT_HISTORY", str(tmp_path / "env.sqlite"))
    assert hist.append_benchmark(None, real_result, kind="bench", command="x") == 1
    assert hist.append_benchmark(tmp_path / "flag.sqlite", real_result, kind="bench", command="x") == 1  # --history wins
    assert (tmp_path / "env.sqlite").exists() and (tmp_path / "flag.sqlite").exists()


def test_export_csv_and_parquet(tmp_path, real_result, cli):
    path = tmp_path / "h.sqlite"
    hist.append_benchmark(path, real_result, kind="bench", command="edgekit bench a|b", model="m1")
    r = cli("history", "export", "--format", "csv", "--history", str(path))
    assert r.returncode == 0, r.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 1 and rows[0]["model"] == "m1" and rows[0]["command"] == "edgekit bench a|b"
    assert [float(x) for x in rows[0]["samples_ms"].split()] == real_result.timing.samples_ms
    assert json.loads(rows[0]["device"])["arch"] == real_result.device.arch
    r = cli("history", "export", "--format", "parquet", "--out", str(tmp_path / "h.parquet"), "--history", str(path))
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert r.returncode != 0 and "pip install 'edgekit[parquet]'" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "h.parquet").exists()
    else:
        assert r.returncode == 0, r.stderr
        t = pq.read_table(tmp_path / "h.parquet").to_pylist()
        assert t[0]["model"] == "m1" and t[0]["samples_ms"] == real_result.timing.samples_ms


def test_history_cli_lists_and_filters(tmp_path, real_result, cli):
    path = tmp_path / "h.sqlite"
    for m in ("alpha-model", "beta-model", "alpha-model"):
        hist.append_benchmark(path, real_result, kind="bench", command="x", model=m)
    r = cli("history", "--model", "alpha", "--json", "--history", str(path))
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)
    assert [x["id"] for x in runs] == [1, 3] and runs[0]["samples_ms"] == real_result.timing.samples_ms
    r = cli("history", "--last", "1", "--json", "--history", str(path))
    assert [x["id"] for x in json.loads(r.stdout)] == [3]
    r = cli("history", "--history", str(tmp_path / "missing.sqlite"))
    assert r.returncode != 0 and "no history at" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "missing.sqlite").exists()


def test_api_bench_records_its_run(tmp_path):
    from edgekit.api import bench
    from reporthelp import light_model

    path = tmp_path / "api.sqlite"
    r = bench(str(light_model("squeezenet")), "x86-cpu", bench={"warmup_runs": 1, "warmup_seconds": 0.0, "min_runs": 5, "min_seconds": 0.0}, history=str(path))
    with History.open(path) as h:
        (rec,) = h.query()
    assert rec["kind"] == "bench" and rec["model"] == "light_squeezenet.onnx" and rec["samples"] == r.timing.samples_ms
    assert rec["profile"] == "x86-cpu" and rec["command"] == "edgekit.api.bench(...)"


def test_deploy_with_a_corrupt_history_fails_before_any_work(tmp_path, cli):
    from reporthelp import light_model

    bad = tmp_path / "h.sqlite"
    bad.write_bytes(b"\x00garbage" * 100)
    before = bad.read_bytes()
    r = cli("deploy", str(light_model("squeezenet")), "--profile", "x86-cpu", "--out", str(tmp_path / "out"), "--history", str(bad))
    assert r.returncode != 0 and "not an SQLite database" in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "report.json").exists() and "›" not in r.stderr  # no plan/progress line: nothing ran
    assert bad.read_bytes() == before
