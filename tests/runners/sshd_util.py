"""Start and stop a real OpenSSH server for tests: own host key, own client key, loopback or a netns."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

SSHD = "/usr/sbin/sshd"


def have_sshd() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A passphrase-less key pair at `path` / `path.pub`."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "edgekit-test", "-f", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Wait until an SSH banner comes back from host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                if s.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not accept connections on {host}:{port} within {timeout} s")


class SshdServer:
    """One sshd process with its own config/keys in `root`; stopped by PID."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: Optional[int] = None, netns: Optional[str] = None,
                 host_key: Optional[Path] = None, client_pubkeys: Optional[List[Path]] = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port()
        self.netns = netns
        self.host_key = host_key or keygen(self.root / "ssh_host_ed25519_key")
        self.authorized = self.root / "authorized_keys"
        self.authorized.write_text("".join(Path(str(p)).read_text() for p in (client_pubkeys or [])))
        self.config = self.root / "sshd_config"
        self.log = self.root / "sshd.log"
        self.pidfile = self.root / "sshd.pid"
        self.proc: Optional[subprocess.Popen] = None

    def write_config(self) -> None:
        self.config.write_text(
            "\n".join([
                f"Port {self.port}",
                f"ListenAddress {self.host}",
                f"HostKey {self.host_key}",
                f"AuthorizedKeysFile {self.authorized}",
                f"PidFile {self.pidfile}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "AllowTcpForwarding yes",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "MaxStartups 50",
                "",
            ])
        )

    def start(self) -> "SshdServer":
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.write_config()
        cmd = [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(self.host, self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"sshd failed to start: {self.log.read_text() if self.log.exists() else ''}")
        return self

    def session_pids(self) -> List[int]:
        """PIDs of the per-connection sshd children (the listener's descendants)."""
        if not self.proc:
            return []
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
        children = {}
        for line in out.split("\n"):
            parts = line.split()
            if len(parts) == 2:
                children.setdefault(int(parts[1]), []).append(int(parts[0]))
        found, todo = [], list(children.get(self.proc.pid, []))
        while todo:
            p = todo.pop()
            found.append(p)
            todo.extend(children.get(p, []))
        return found

    def stop(self) -> None:
        """Stop the listener and any per-connection children it left (all started by this object)."""
        leftovers = self.session_pids()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass  # already gone with its connection
        self.proc = None

    def known_hosts_line(self) -> str:
        pub = Path(str(self.host_key) + ".pub").read_text().split()
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {pub[0]} {pub[1]}\n"

    @property
    def spec(self) -> str:
        return f"root@{self.host}:{self.port}"


def netns_available() -> bool:
    """True when this process may create network namespaces (root, CAP_SYS_ADMIN, iproute2 present)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"ekprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if r.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return True


class NetnsLink:
    """A private namespace `ns` joined to the root namespace by a veth pair: a separate 'host' at `peer_ip`."""

    def __init__(self, tag: str, subnet: str = "10.231.77"):
        self.ns = f"ek{tag}"
        self.host_if = f"ekh{tag}"[:15]
        self.ns_if = f"ekn{tag}"[:15]
        self.local_ip = f"{subnet}.1"
        self.peer_ip = f"{subnet}.2"

    def _ip(self, *args: str, ns: bool = False) -> None:
        cmd = (["ip", "netns", "exec", self.ns] if ns else []) + ["ip", *args]
        subprocess.run(cmd, check=True, capture_output=True)

    def up(self) -> "NetnsLink":
        self._ip("netns", "add", self.ns)
        try:
            self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            self._ip("link", "set", self.ns_if, "netns", self.ns)
            self._ip("addr", "add", f"{self.local_ip}/30", "dev", self.host_if)
            self._ip("link", "set", self.host_if, "up")
            self._ip("addr", "add", f"{self.peer_ip}/30", "dev", self.ns_if, ns=True)
            self._ip("link", "set", self.ns_if, "up", ns=True)
            self._ip("link", "set", "lo", "up", ns=True)
        except subprocess.CalledProcessError:
            self.down()
            raise
        return self

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
