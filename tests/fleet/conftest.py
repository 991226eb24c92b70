"""Fleet tests: isolated lock dir and history, a shelf of three sshd boards in network namespaces, a Ray cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runners"))
from boards import Shelf  # noqa: E402
from sshd_util import free_port, have_sshd, netns_available  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_fleet_state(tmp_path_factory):
    """Board locks and the history live in the test's own directories, never the user's."""
    data = tmp_path_factory.mktemp("edgekit-data")
    old = {k: os.environ.get(k) for k in ("EDGEKIT_DATA_DIR", "EDGEKIT_HISTORY", "RAY_USAGE_STATS_ENABLED")}
    os.environ["EDGEKIT_DATA_DIR"] = str(data)
    os.environ["EDGEKIT_HISTORY"] = str(data / "history.sqlite")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    yield data
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    if not have_sshd():
        if os.environ.get("EDGEKIT_REQUIRE_SSHD"):
            pytest.fail("EDGEKIT_REQUIRE_SSHD is set but /usr/sbin/sshd is missing: .ci/run must install openssh-server")
        pytest.skip("OpenSSH server not installed (apt-get install -y --no-install-recommends openssh-server)")
    if not netns_available():
        pytest.skip("needs root and iproute2 to put each board in its own network namespace")
    s = Shelf(tmp_path_factory.mktemp("shelf"), 3).start()
    try:
        yield s
    finally:
        s.stop()


def ray_bin() -> str:
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else (shutil.which("ray") or "")


class RayCluster:
    """`ray start --head` on loopback plus one worker node, both --block in their own sessions; stopped by PID group."""

    def __init__(self):
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="ekray", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
        self.procs = []
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, *args: str) -> None:
        log = open(Path(self.tmp) / f"start-{len(self.procs)}.log", "w")
        self.procs.append(subprocess.Popen([ray_bin(), "start", "--block", "--node-ip-address", "127.0.0.1", *args], stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env, start_new_session=True))

    def nodes(self) -> int:
        r = subprocess.run([ray_bin(), "status", "--address", self.address], capture_output=True, text=True, env=self.env, timeout=60)
        return r.stdout.split("Pending:")[0].count(" node_") if r.returncode == 0 else 0

    def start(self) -> "RayCluster":
        self._start("--head", "--port", str(self.port), "--num-cpus", "1", "--resources", '{"openvino": 1}',
                    "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", self.tmp)
        self._wait(1)
        self._start("--address", self.address, "--num-cpus", "1")
        self._wait(2)
        return self

    def _wait(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("ray start exited: " + "".join(Path(f).read_text() for f in Path(self.tmp).glob("start-*.log")))
            if self.nodes() >= n:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the Ray cluster did not reach {n} node(s) within {timeout} s")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            try:
                os.killpg(p.pid, signal.SIGKILL)  # raylet's workers share the group: none may outlive the test
            except ProcessLookupError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray", reason="Ray is the optional extra edgekit[fleet]")
    if not ray_bin():
        pytest.skip("the `ray` command is not installed")
    c = RayCluster()
    try:
        yield c.start()
    finally:
        c.stop()
