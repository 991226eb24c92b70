"""A real sweep: 2 zoo models x 3 sshd boards (each in its own network namespace), with and without Ray,
resumed after a lost board, a held board lock, Ctrl-C, and a Ray worker killed mid-conversion."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgekit.workflows.sweep import run_sweep

MODELS = "[zoo:ppocr-rec, zoo:minilm]"
BENCH = "{warmup_runs: 2, warmup_seconds: 0, min_runs: 10, min_seconds: 0.2}"


def write_sweep(shelf, d: Path, models: str = MODELS, names=None, extra: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    shelf.fleet_yaml(d / "fleet.yaml", names)
    p = d / "sweep.yaml"
    p.write_text(f"models: {models}\nfleet: fleet.yaml\nprecisions: [fp32]\nruntimes: [onnxruntime]\nbench: {BENCH}\n"
                 f"retries: {{attempts: 2, backoff_s: 0.2, lock_timeout_s: 600}}\n{extra}")
    return p


def cells(out: Path):
    db = sqlite3.connect(out / "sweep.sqlite")
    try:
        return {(r[0], r[1]): {"status": r[2], "reason": r[3], "finished": r[4], "attempts": r[5]}
                for r in db.execute("SELECT board, model, status, reason, finished, attempts FROM cells")}
    except sqlite3.OperationalError:
        return {}  # the sweep has not created its tables yet
    finally:
        db.close()


def _results(out: Path):
    from edgekit.fleet.store import SweepStore

    s = SweepStore(out / "sweep.sqlite")
    try:
        return s.cells("done")
    finally:
        s.close()


def sweep_cli(*args, **kw):
    env = dict(os.environ)
    env.pop("EDGEKIT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", "sweep", *map(str, args)], capture_output=True, text=True, env=env, timeout=1800, **kw)


def test_sweep_three_boards_then_rerun_does_no_work(shelf, tmp_path):
    spec = write_sweep(shelf, tmp_path / "s")
    out = tmp_path / "out"
    events = []
    summary = run_sweep(spec, out, ssh_config=shelf.ssh_config, on_event=lambda k, d: events.append((k, d)))
    assert summary["by_status"] == {"done": 6}, cells(out)
    assert summary["ran"] == 6
    # one conversion per model for the three boards of one profile, not one per board
    assert sum(1 for k, _ in events if k == "converting") == 2
    rows = cells(out)
    assert {b for b, _ in rows} == set(shelf.names)
    html = (out / "sweep-report.html").read_text()
    assert "device class x86-cpu" in html and "recommended for zoo:minilm" in html and "recommended for zoo:ppocr-rec" in html
    assert html.count('data-chart="variants"') == 2 and 'class="variant chosen"' in html and "<script" not in html
    # each measurement is also in the history store
    from edgekit.fleet import history as hist

    recorded = [r for r in hist.records(os.environ["EDGEKIT_HISTORY"]) if r["artifact_sha256"] in {c["result"]["model"]["sha256"] for c in _results(out)}]
    assert len(recorded) >= 6 and {r["profile"] for r in recorded} == {"x86-cpu"}
    events.clear()
    again = run_sweep(spec, out, ssh_config=shelf.ssh_config, on_event=lambda k, d: events.append((k, d)))
    assert again["ran"] == 0 and again["by_status"] == {"done": 6}
    assert not [k for k, _ in events if k in ("converting", "executor", "queued")]  # nothing started: no pool, no connection
    assert cells(out) == rows  # untouched


def test_lost_board_mid_sweep_then_rerun_finishes_only_its_cells(shelf, tmp_path):
    spec = write_sweep(shelf, tmp_path / "s")
    out = tmp_path / "out"
    killed = []

    def cut_board_b(board, p):
        # board-b's sshd dies while its first benchmark is in the timed phase (a board dropping off the network)
        if board == "board-b" and p.get("phase") == "timed" and not killed:
            killed.append(time.time())
            shelf.server("board-b").stop()

    try:
        summary = run_sweep(spec, out, ssh_config=shelf.ssh_config, on_board_progress=cut_board_b)
        assert killed
        rows = cells(out)
        assert all(rows[(b, m)]["status"] == "done" for b in ("board-a", "board-c") for m in ("zoo:ppocr-rec", "zoo:minilm"))
        lost = {k: v for k, v in rows.items() if k[0] == "board-b"}
        assert all(v["status"] == "failed" for v in lost.values()), lost
        assert any("lost" in v["reason"] or "connect" in v["reason"] for v in lost.values()), lost
        assert summary["by_status"] == {"done": 4, "failed": 2}
    finally:
        shelf.server("board-b").start()
    before = cells(out)
    again = run_sweep(spec, out, ssh_config=shelf.ssh_config)
    assert again["ran"] == 2 and again["by_status"] == {"done": 6}
    after = cells(out)
    for key, row in before.items():
        if row["status"] == "done":
            assert after[key] == row  # nothing measured was redone or lost


def test_board_lock_is_respected_by_a_second_sweep(shelf, tmp_path):
    """Another process holds board-a's lock: the sweep waits for it (here: gives up after 1 s) and never
    benchmarks on board-a meanwhile; the other boards go on."""
    spec = write_sweep(shelf, tmp_path / "s", models="[zoo:ppocr-rec]", extra="")
    spec.write_text(spec.read_text().replace("lock_timeout_s: 600", "lock_timeout_s: 1"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time;from edgekit.fleet.lock import BoardLock\n"
                               "l=BoardLock('ssh:board-a', holder='test holder');l.acquire();print('locked',flush=True);sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = tmp_path / "out"
        run_sweep(spec, out, ssh_config=shelf.ssh_config)
        rows = cells(out)
        assert rows[("board-a", "zoo:ppocr-rec")]["status"] == "failed"
        assert f"locked by pid {holder.pid} (test holder)" in rows[("board-a", "zoo:ppocr-rec")]["reason"]
        assert rows[("board-b", "zoo:ppocr-rec")]["status"] == "done" and rows[("board-c", "zoo:ppocr-rec")]["status"] == "done"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    again = run_sweep(spec, out, ssh_config=shelf.ssh_config)
    assert again["ran"] == 1 and again["by_status"] == {"done": 3}


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_measured(shelf, tmp_path):
    spec = write_sweep(shelf, tmp_path / "s")
    out = tmp_path / "out"
    env = dict(os.environ)
    env.pop("EDGEKIT_DEBUG", None)
    # Ctrl-C in a terminal: SIGINT to the whole foreground process group (the sweep and its conversion workers)
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli.main", "sweep", str(spec), "--out", str(out), "--ssh-config", str(shelf.ssh_config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            # a terminal's foreground job has SIGINT at its default; a test run launched in the background
                            # (`cmd &` in a script) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "sweep.sqlite").exists() and sum(1 for r in cells(out).values() if r["status"] == "done") >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    rows = cells(out)
    done = {k for k, v in rows.items() if v["status"] == "done"}
    assert 1 <= len(done) < 6, rows
    assert not [k for k, v in rows.items() if v["status"] == "running"]
    again = run_sweep(spec, out, ssh_config=shelf.ssh_config)
    assert again["ran"] == 6 - len(done) and again["by_status"] == {"done": 6}
    assert all(cells(out)[k] == rows[k] for k in done)


@pytest.mark.slow
def test_sweep_on_a_ray_cluster_then_rerun_does_no_work(shelf, ray_cluster, tmp_path):
    spec = write_sweep(shelf, tmp_path / "s")
    out = tmp_path / "out"
    r = sweep_cli(spec, "--out", out, "--ssh-config", shelf.ssh_config, "--ray", ray_cluster.address, "--json")
    assert r.returncode == 0, r.stderr
    assert "executor: ray (2 node(s)" in r.stderr and "openvino" in r.stderr
    rows = cells(out)
    assert len(rows) == 6 and all(v["status"] == "done" for v in rows.values()), rows
    r2 = sweep_cli(spec, "--out", out, "--ssh-config", shelf.ssh_config, "--ray", ray_cluster.address, "--json")
    assert r2.returncode == 0 and '"ran": 0' in r2.stdout, r2.stdout + r2.stderr
    assert "executor:" not in r2.stderr  # a finished sweep does not even connect to Ray
    assert cells(out) == rows


def _ray_task_pids(name: str):
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if f"ray::{name}" in line]


@pytest.mark.slow
def test_ray_worker_killed_mid_conversion_is_retried(shelf, ray_cluster, tmp_path):
    spec = write_sweep(shelf, tmp_path / "s", models="[zoo:ppocr-rec]")
    out = tmp_path / "out"
    killed = []
    stop = threading.Event()

    def killer():
        while not stop.is_set() and not killed:
            for pid in _ray_task_pids("convert_job"):
                os.kill(pid, signal.SIGKILL)  # the Ray worker process running the conversion dies mid-way
                killed.append(pid)
                break
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        # a cold cache of its own: the conversion really runs (and is really interrupted)
        r = sweep_cli(spec, "--out", out, "--ssh-config", shelf.ssh_config, "--ray", ray_cluster.address, "--cache-dir", tmp_path / "cache", "--json")
    finally:
        stop.set()
        t.join()
    assert killed, "no Ray worker ran convert_job"
    assert r.returncode == 0, r.stderr
    rows = cells(out)
    assert len(rows) == 3 and all(v["status"] == "done" for v in rows.values()), rows


def _arm64_board():
    """The emulated arm64 board of the ARM-boards issue (tests/boards/arm64-board up), if it is up."""
    import socket

    state = Path(os.environ.get("EDGEKIT_BOARDS_CACHE", str(Path.home() / ".cache/edgekit-boards"))) / "arm64-state" / "board.env"
    env = dict(line.split("=", 1) for line in state.read_text().split() if "=" in line) if state.is_file() else {}
    try:
        if env:
            socket.create_connection(("127.0.0.1", int(env["PORT"])), timeout=5).close()
            return env
    except OSError:
        pass
    if os.environ.get("EDGEKIT_REQUIRE_ARM64") and not os.environ.get("EDGEKIT_ARM64_UNAVAILABLE"):
        pytest.fail("EDGEKIT_REQUIRE_ARM64 is set but the arm64 board is not up (tests/boards/arm64-board up)")
    pytest.skip("the emulated arm64 board is not up: run `tests/boards/arm64-board up` (as root) first")


@pytest.mark.slow
def test_sweep_across_an_x86_board_and_the_emulated_arm64_board(shelf, tmp_path):
    """Two device classes in one sweep: a shelf board (x86-cpu) and the qemu arm64 board (raspberry-pi-5 profile,
    its own aarch64 Python with onnxruntime); one conversion per profile, each benchmarked on its own board."""
    env = _arm64_board()
    d = tmp_path / "s"
    d.mkdir()
    cfg = d / "ssh_config"
    cfg.write_text(shelf.ssh_config.read_text() + "\n" + Path(env["SSH_CONFIG"]).read_text())
    shelf.fleet_yaml(d / "fleet.yaml", ["board-a"])
    with open(d / "fleet.yaml", "a") as f:
        f.write(f"  - name: arm64\n    host: edgekit-arm64\n    profile: raspberry-pi-5\n    python: /opt/edgekit-sys/bin/python\n"
                f"    workdir: ~/edgekit-fleet-{os.getpid()}\n    limits: {{cell_timeout_s: 900, connect_timeout_s: 30}}\n")
    (d / "sweep.yaml").write_text("models: [zoo:ppocr-rec]\nfleet: fleet.yaml\nprecisions: [fp32]\nruntimes: [onnxruntime]\n"
                                  "bench: {warmup_runs: 1, warmup_seconds: 0, min_runs: 3, min_seconds: 0}\n")
    events = []
    summary = run_sweep(d / "sweep.yaml", tmp_path / "out", ssh_config=cfg, on_event=lambda k, e: events.append((k, e)))
    rows = cells(tmp_path / "out")
    assert summary["by_status"] == {"done": 2}, rows
    assert sorted(e["job"]["profile_name"] for k, e in events if k == "converting") == ["raspberry-pi-5", "x86-cpu"]
    done = {c["board"]: c["result"] for c in _results(tmp_path / "out")}
    assert done["arm64"]["device"]["arch"] == "aarch64" and done["board-a"]["device"]["arch"] == "x86_64"
    html = (tmp_path / "out" / "sweep-report.html").read_text()
    assert "device class raspberry-pi-5" in html and "device class x86-cpu" in html
