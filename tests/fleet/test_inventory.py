"""fleet.yaml / sweep.yaml: the issue's minimal form, cell expansion, and one clear error per bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgekit.fleet.cells import expand
from edgekit.fleet.inventory import FleetError, load_fleet, load_sweep
from edgekit.fleet.lock import BoardBusy, BoardLock
from edgekit.fleet.store import SweepStore
from edgekit.report.sweep_html import pareto, recommend


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(textwrap.dedent(text))
    return p


ISSUE_FLEET = """\
boards:
  - name: shelf-pi-1
    host: pi1             # ssh alias or user@host[:port]; `serial:` instead for adb
    profile: raspberry-pi-5
    python: /opt/venv/bin/python   # optional: the board's Python
"""
ISSUE_SWEEP = """\
models: [zoo:ppocr-det, zoo:minilm]
fleet: fleet.yaml
precisions: [fp32, int8]
max_drop: 1%
"""


def test_issue_minimal_form_expands_to_cells(tmp_path):
    write(tmp_path, "fleet.yaml", ISSUE_FLEET)
    spec = load_sweep(write(tmp_path, "sweep.yaml", ISSUE_SWEEP))
    assert spec.max_drop_fraction == pytest.approx(0.01)
    assert spec.fleet.boards[0].python == "/opt/venv/bin/python"
    jobs, cells = expand(spec)
    assert len(jobs) == 4 and len(cells) == 4
    assert {(c["model"], c["precision"]) for c in cells} == {(m, p) for m in ("zoo:ppocr-det", "zoo:minilm") for p in ("fp32", "int8")}


def test_boards_of_one_profile_share_conversions(tmp_path):
    fleet = ISSUE_FLEET + "  - {name: shelf-pi-2, host: pi2, profile: raspberry-pi-5}\n  - {name: nano, host: nano, profile: jetson-nano}\n"
    write(tmp_path, "fleet.yaml", fleet)
    jobs, cells = expand(load_sweep(write(tmp_path, "sweep.yaml", ISSUE_SWEEP)))
    assert len(cells) == 12
    assert len(jobs) == 8  # 2 models x 2 precisions x 2 profiles: the two Pis share theirs
    pi = {c["conversion"] for c in cells if c["board"] == "shelf-pi-1"}
    assert pi == {c["conversion"] for c in cells if c["board"] == "shelf-pi-2"}
    assert not pi & {c["conversion"] for c in cells if c["board"] == "nano"}
    assert len({c["id"] for c in cells}) == 12


def test_precisions_auto_takes_the_profiles_list(tmp_path):
    write(tmp_path, "fleet.yaml", ISSUE_FLEET)
    spec = load_sweep(write(tmp_path, "sweep.yaml", ISSUE_SWEEP.replace("[fp32, int8]", "auto")))
    from edgekit.core.profiles import load_profile

    assert {c["precision"] for c in expand(spec)[1]} == set(load_profile("raspberry-pi-5").precisions)


def test_profile_file_relative_to_the_fleet_file(tmp_path):
    from edgekit.core.profiles import bundled_dir

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "my-pi.yaml").write_text(f"extends: {bundled_dir() / 'raspberry-pi-5.yaml'}\nname: my-pi\n")
    fleet = load_fleet(write(tmp_path, "fleet.yaml", ISSUE_FLEET.replace("raspberry-pi-5", "profiles/my-pi.yaml")))
    assert fleet.boards[0].profile == str((tmp_path / "profiles" / "my-pi.yaml").resolve())


@pytest.mark.parametrize("fleet,expect", [
    ("boards:\n  - name: a\n    host: a\n", "fleet.yaml: boards[0].profile: Field required"),
    ("boards:\n  - {name: a, host: a, serial: X, profile: x86-cpu}\n", "boards[0]: give exactly one of `host:`"),
    ("boards:\n  - {name: a, profile: x86-cpu}\n", "boards[0]: give exactly one of `host:`"),
    ("boards:\n  - {name: a, host: a, profile: x86-cpu}\n  - {name: a, host: b, profile: x86-cpu}\n", "'a' is used twice"),
    ("boards:\n  - {name: 'a b', host: a, profile: x86-cpu}\n", "boards[0].name: use letters"),
    ("boards:\n  - {name: a, host: a, profile: raspbery-pi-5}\n", "fleet.yaml: boards[0].profile:"),
    ("boards:\n  - {name: a, host: a, profile: x86-cpu, colour: red}\n", "boards[0].colour: Extra inputs are not permitted"),
    ("boards: []\n", "boards: List should have at least 1 item"),
    ("boards:\n  - {name: a, host: a\n", "fleet.yaml line"),
    ("- just a list\n", "expected a mapping at the top level"),
])
def test_bad_fleet_files_name_file_and_field(tmp_path, fleet, expect):
    write(tmp_path, "fleet.yaml", fleet)
    with pytest.raises(FleetError) as ei:
        load_fleet(tmp_path / "fleet.yaml")
    assert expect in ei.value.message
    assert str(tmp_path / "fleet.yaml") in ei.value.message
    assert "\n" not in ei.value.message


def test_unknown_profile_suggests_the_close_name(tmp_path):
    write(tmp_path, "fleet.yaml", "boards:\n  - {name: a, host: a, profile: raspbery-pi-5}\n")
    with pytest.raises(FleetError) as ei:
        load_fleet(tmp_path / "fleet.yaml")
    assert "raspberry-pi-5" in str(ei.value)


@pytest.mark.parametrize("sweep,expect", [
    ("models: [zoo:minilm]\nfleet: fleet.yaml\nprecisions: [fp8]\n", "precisions: unknown precision 'fp8'"),
    ("models: [zoo:minilm]\nfleet: fleet.yaml\nmax_drop: 1.5\n", "max_drop: 1.5 must be between 0 and 100%"),
    ("models: [zoo:minilm]\nfleet: fleet.yaml\nmax_drop: lots\n", "max_drop: 'lots': expected a fraction"),
    ("models: []\nfleet: fleet.yaml\n", "models: List should have at least 1 item"),
    ("models: [zoo:minilm]\n", "fleet: missing"),
    ("models: [zoo:minilm]\nfleet: nowhere.yaml\n", "nowhere.yaml not found"),
    ("models: [zoo:minilm]\nfleet: fleet.yaml\nbench: {min_runs: 0}\n", "bench.min_runs: Input should be greater than or equal to 1"),
])
def test_bad_sweep_files_name_file_and_field(tmp_path, sweep, expect):
    write(tmp_path, "fleet.yaml", ISSUE_FLEET)
    write(tmp_path, "sweep.yaml", sweep)
    with pytest.raises(FleetError) as ei:
        load_sweep(tmp_path / "sweep.yaml")
    assert expect in ei.value.message


def test_cli_bad_sweep_is_one_line_without_traceback(tmp_path, cli):
    write(tmp_path, "fleet.yaml", ISSUE_FLEET)
    write(tmp_path, "sweep.yaml", "models: [zoo:minilm]\nfleet: fleet.yaml\nprecisions: [fp8]\n")
    r = cli("sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "out"))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "sweep.yaml: precisions: unknown precision 'fp8'" in r.stderr
    assert not (tmp_path / "out" / "sweep.sqlite").exists()


def test_ray_missing_names_the_extra(tmp_path, monkeypatch):
    from edgekit.core.errors import MissingDependencyError
    from edgekit.fleet.executors import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError) as ei:
        import_ray()
    assert "pip install 'edgekit[fleet]'" in str(ei.value)


def test_board_lock_excludes_another_process_and_frees_on_its_death(tmp_path, lock_from_another_thread):
    holder = subprocess.Popen([sys.executable, "-c", "import sys;from edgekit.fleet.lock import BoardLock\n"
                               "l=BoardLock('ssh:pi1', holder='other sweep');l.acquire();print('locked',flush=True);sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BoardBusy) as ei:
            BoardLock("ssh:pi1", timeout_s=0.3).acquire()
        assert f"locked by pid {holder.pid} (other sweep)" in ei.value.message
        with BoardLock("ssh:pi2", timeout_s=0.3):  # another board is free
            pass
    finally:
        holder.kill()  # no release: the kernel drops the lock with the process
        holder.wait()
    with BoardLock("ssh:pi1", timeout_s=5):
        # also exclusive between two threads of one process (a thread that holds it re-enters: tests/runners/test_board_lock_deploy.py)
        assert lock_from_another_thread("ssh:pi1", 0.2), "another thread of the same process must not get a held board"


def test_store_resets_cells_left_running(tmp_path):
    s = SweepStore(tmp_path / "sweep.sqlite")
    s.add_cells([{"id": "c1", "model": "m", "profile": "p", "runtime": None, "precision": "fp32", "board": "b", "conversion": "k"}])
    s.mark_running("c1")
    s.close()
    s = SweepStore(tmp_path / "sweep.sqlite")  # a new sweep after a crash
    assert s.reset_running() == 1
    assert s.status("c1") == "interrupted"
    s.add_cells([{"id": "c1", "model": "m", "profile": "p", "runtime": None, "precision": "fp32", "board": "b", "conversion": "k"}])
    assert s.cells()[0]["attempts"] == 1  # re-adding keeps the record
    s.close()


def test_store_refuses_a_file_that_is_not_a_store(tmp_path):
    from edgekit.fleet.store import StoreError

    (tmp_path / "sweep.sqlite").write_text("not a database at all " * 100)
    with pytest.raises(StoreError) as ei:
        SweepStore(tmp_path / "sweep.sqlite")
    assert "is not a usable sweep store" in ei.value.message
    assert (tmp_path / "sweep.sqlite").read_text().startswith("not a database")


def test_pareto_and_recommendation_under_budget():
    rows = [
        {"median_ms": 10.0, "score": 0.995, "energy_mj": None, "size_mb": 5.0},  # fast, within a 1 % drop
        {"median_ms": 8.0, "score": 0.95, "energy_mj": None, "size_mb": 3.0},   # fastest, violates it
        {"median_ms": 20.0, "score": 1.0, "energy_mj": None, "size_mb": 10.0},  # exact, slow
        {"median_ms": 25.0, "score": 0.99, "energy_mj": None, "size_mb": 10.0},  # dominated
    ]
    assert sorted(pareto(rows, "median_ms", "score")) == [0, 1, 2]
    assert recommend(rows, 0.01, {}) is rows[0]
    assert recommend(rows, 0.06, {}) is rows[1]
    assert recommend(rows, 0.01, {"size_mb": 4.0}) is None
    assert recommend(rows, 0.0, {"latency_ms": 15.0}) is None


def test_live_progress_counts_per_board():
    from edgekit.cli.sweep import BoardProgress

    p = BoardProgress(live=False)
    cell = {"model": "zoo:minilm", "precision": "fp32"}
    p.event("plan", {"cells": 4, "todo": 4, "stale": 0, "boards": ["a", "b"], "conversions": 1})
    for b in ("a", "a", "b", "b"):
        p.event("queued", {"board": b, "cell": cell})
    p.board("a", {"phase": "timed"})
    assert p.rows["a"]["running"] and p.rows["a"]["phase"] == "timed"
    p.event("cell", {"board": "a", "cell": cell, "status": "done", "reason": "", "bench_s": 1.0})
    p.event("cell", {"board": "b", "cell": cell, "status": "failed", "reason": "connection lost", "bench_s": None})
    assert p.rows["a"] == {"done": 1, "failed": 0, "queued": 1, "running": "", "phase": ""}
    assert p.rows["b"]["failed"] == 1 and p.rows["b"]["queued"] == 1
    t = p.table()
    assert [c.header for c in t.columns] == ["board", "done", "running", "failed", "queued", "now"] and t.row_count == 2
