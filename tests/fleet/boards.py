"""A shelf of real boards for fleet tests and benchmarks/sweep_overhead.py: N OpenSSH servers, each in its own
network namespace (a separate 'host' behind a veth pair), an ssh config with one alias per board, a fleet.yaml."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runners"))
from sshd_util import NetnsLink, SshdServer, free_port, keygen  # noqa: E402


class Shelf:
    """Boards `board-a`, `board-b`, ... reachable by alias through `ssh_config`; start()/stop() by PID."""

    def __init__(self, root: Path, n: int = 3, python: Optional[str] = None, tag: Optional[str] = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.n = n
        self.python = python or sys.executable  # the board's Python: the one with onnxruntime/openvino here
        self.tag = tag or f"{os.getpid() % 10000}"
        self.key = keygen(self.root / "client_ed25519")
        self.links: List[NetnsLink] = []
        self.servers: List[SshdServer] = []
        self.names = [f"board-{chr(ord('a') + i)}" for i in range(n)]
        self.ssh_config = self.root / "ssh_config"
        self.known_hosts = self.root / "known_hosts"

    def start(self) -> "Shelf":
        try:
            for i, name in enumerate(self.names):
                link = NetnsLink(f"{self.tag}{chr(97 + i)}", subnet=f"10.{200 + (os.getpid() % 50)}.{60 + i}").up()
                self.links.append(link)
                srv = SshdServer(self.root / name, host=link.peer_ip, port=22, netns=link.ns, client_pubkeys=[Path(str(self.key) + ".pub")])
                self.servers.append(srv.start())
            self.known_hosts.write_text("".join(s.known_hosts_line() for s in self.servers))
            self.ssh_config.write_text("".join(
                f"Host {name}\n  HostName {srv.host}\n  User root\n  Port 22\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  ConnectTimeout 5\n\n"
                for name, srv in zip(self.names, self.servers)))
        except BaseException:
            self.stop()
            raise
        return self

    def server(self, name: str) -> SshdServer:
        return self.servers[self.names.index(name)]

    def restart(self, name: str) -> None:
        srv = self.server(name)
        srv.stop()
        srv.start()

    def fleet_yaml(self, path: Path, names: Optional[List[str]] = None, profile: str = "x86-cpu") -> Path:
        lines = ["boards:"]
        for name in names or self.names:
            lines += [f"  - name: {name}", f"    host: {name}", f"    profile: {profile}", f"    python: {self.python}",
                      f"    workdir: {self.root / name / 'device-workdir'}", "    limits: {cell_timeout_s: 300, connect_timeout_s: 5}"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def stop(self) -> None:
        for srv in self.servers:
            srv.stop()
        for link in self.links:
            link.down()
        self.servers, self.links = [], []


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
