"""A shelf of real boards for fleet tests and benchmarks/sweep_overhead.py: N OpenSSH servers, each in its own
network namespace (a separate 'host' behind a veth pair), an ssh config with one alias per board, a fleet.yaml."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runners"))
from sshd_util import NetnsLink, SshdServer, keygen  # noqa: E402


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
