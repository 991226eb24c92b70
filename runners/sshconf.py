"""SSH host specs, ~/.ssh/config resolution and the known_hosts policy used by the SSH runner."""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import re
from pathlib import Path
from typing import List, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field

from edgekit.core.errors import ConnectionFailed, HostKeyError, UsageError
from edgekit.core.fsutil import atomic_write_text

DEFAULT_PORT = 22

_SPEC_RE = re.compile(
    r"""^(?:ssh://)?
        (?:(?P<user>[^@\s/]+)@)?
        (?:\[(?P<host6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^\s:@/\[\]]+))
        (?::(?P<port>\d+))?/?$""",
    re.VERBOSE,
)


class HostSpec(BaseModel):
    """What the user typed: `[ssh://][user@]host[:port]` (IPv6 in brackets) or an ssh_config alias."""

    model_config = ConfigDict(extra="forbid")
    host: str
    user: Optional[str] = None
    port: Optional[int] = None


class ResolvedHost(BaseModel):
    """A host after ssh_config, profile defaults and built-in defaults were applied."""

    model_config = ConfigDict(extra="forbid")
    alias: str
    hostname: str
    user: str
    port: int = DEFAULT_PORT
    identity_files: List[str] = Field(default_factory=list)
    identities_only: bool = False
    proxy_jump: List[str] = Field(default_factory=list)  # hop specs, outermost first
    known_hosts: Optional[str] = None  # UserKnownHostsFile from ssh_config, if any
    accept_new: bool = False  # StrictHostKeyChecking accept-new in ssh_config
    connect_timeout: Optional[float] = None
    keepalive_s: Optional[int] = None

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files the key under: `host` on port 22, `[host]:port` otherwise."""
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"

    @property
    def display(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.user}@{host}:{self.port}"


def parse_host_spec(spec: str) -> HostSpec:
    """Split `user@host:port` into parts; raise UsageError for anything that is not a host spec."""
    text = (spec or "").strip()
    m = _SPEC_RE.match(text)
    if not text or not m:
        raise UsageError(
            f"'{spec}' is not a valid SSH host",
            hint="use user@host, user@host:port, [user@][ipv6]:port, or a Host alias from ~/.ssh/config",
        )
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not (0 < port < 65536):
        raise UsageError(f"'{spec}': port {port} is out of range", hint="ports are 1-65535")
    return HostSpec(host=m.group("host6") or m.group("host"), user=m.group("user"), port=port)


def _yes(value: Optional[str]) -> bool:
    return str(value or "").strip().lower() in ("yes", "true", "on")


def resolve_host(
    spec: str,
    *,
    ssh_config: Optional[os.PathLike | str] = None,
    default_user: Optional[str] = None,
    default_port: Optional[int] = None,
) -> ResolvedHost:
    """Apply ssh_config (HostName, User, Port, IdentityFile, ProxyJump, ...) to a host spec.

    Precedence: the spec itself > ssh_config > the device profile's defaults > local user / port 22.
    """
    hs = parse_host_spec(spec)
    cfg: dict = {}
    path = Path(ssh_config).expanduser() if ssh_config else Path("~/.ssh/config").expanduser()
    if path.is_file():
        import paramiko

        try:
            conf = paramiko.SSHConfig.from_path(str(path))
            cfg = conf.lookup(hs.host)
        except (OSError, paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
            raise UsageError(f"{path}: cannot read ssh config ({exc})", hint="fix the file or pass --ssh-config") from exc
    elif ssh_config:
        raise UsageError(f"{path}: ssh config file not found", hint="check the --ssh-config path")

    hostname = cfg.get("hostname", hs.host)
    user = hs.user or cfg.get("user") or default_user or getpass.getuser()
    port_s = hs.port or cfg.get("port") or default_port or DEFAULT_PORT
    try:
        port = int(port_s)
    except ValueError as exc:
        raise UsageError(f"{path}: Port '{port_s}' for host {hs.host} is not a number", hint="fix the Port line") from exc
    jumps: List[str] = []
    pj = cfg.get("proxyjump")
    if pj and pj.strip().lower() != "none":
        jumps = [j.strip() for j in pj.split(",") if j.strip()]
    if cfg.get("proxycommand") and cfg["proxycommand"].strip().lower() != "none":
        raise UsageError(
            f"{path}: host {hs.host} uses ProxyCommand, which edgekit does not run",
            hint="use ProxyJump instead (edgekit tunnels through the jump host itself)",
        )
    known = None
    ukh = cfg.get("userknownhostsfile")
    if ukh:
        known = str(Path(ukh.split()[0]).expanduser())
    strict = str(cfg.get("stricthostkeychecking", "")).strip().lower()
    timeout = cfg.get("connecttimeout")
    alive = cfg.get("serveraliveinterval")
    return ResolvedHost(
        alias=hs.host,
        hostname=hostname,
        user=user,
        port=port,
        identity_files=[str(Path(p).expanduser()) for p in cfg.get("identityfile", [])],
        identities_only=_yes(cfg.get("identitiesonly")),
        proxy_jump=jumps,
        known_hosts=known,
        accept_new=strict == "accept-new",
        connect_timeout=float(timeout) if timeout else None,
        keepalive_s=int(alive) if alive and str(alive).isdigit() else None,
    )


def fingerprint(key) -> str:
    """OpenSSH-style SHA256 fingerprint of a paramiko key (`SHA256:base64` without padding)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _pretty(path: Path) -> str:
    home = str(Path.home())
    s = str(path)
    return "~" + s[len(home):] if s.startswith(home + os.sep) else s


def _bad_line(path: Path, line: Optional[str]) -> str:
    """'line N' of a known_hosts file that paramiko rejected (it reports the text, not the number)."""
    if line:
        try:
            for n, text in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
                if text.strip() == line.strip():
                    return f"line {n}"
        except OSError:
            pass
    return "a line"


class KnownHosts:
    """known_hosts verification with OpenSSH semantics: unknown = refuse unless accept-new; changed = always refuse."""

    SYSTEM_FILE = Path("/etc/ssh/ssh_known_hosts")

    def __init__(self, path: Optional[os.PathLike | str] = None, accept_new: bool = False):
        self.path = Path(path).expanduser() if path else Path("~/.ssh/known_hosts").expanduser()
        # like OpenSSH, the system-wide file is consulted (read-only) unless a file was chosen explicitly
        self.system_file: Optional[Path] = None if path else self.SYSTEM_FILE
        self.accept_new = accept_new
        self.accepted: List[str] = []  # "name fingerprint" of keys recorded during this session

    def _load(self):
        import paramiko

        keys = paramiko.HostKeys()
        for f in (self.system_file, self.path):
            if f is not None and f.is_file():
                try:
                    keys.load(str(f))  # handles hashed `|1|` entries and `[host]:port` names
                except (OSError, UnicodeDecodeError) as exc:
                    raise HostKeyError(f"cannot read {f}: {exc}", hint="fix or remove the unreadable known_hosts file") from exc
                except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError) as exc:
                    raise HostKeyError(
                        f"{f}: {_bad_line(f, getattr(exc, 'line', None))} is not a valid known_hosts entry ({type(exc).__name__})",
                        hint="fix or delete that line (ssh-keygen -R HOST -f FILE removes a host's entries)",
                    ) from None
        return keys

    def verify(self, name: str, key, display: str) -> None:
        """Check `key` offered by `name` (`host` or `[host]:port`); record it if new and accept_new is on."""
        keys = self._load()
        known = keys.lookup(name)
        if known:
            same_type = known.get(key.get_name())
            if same_type is not None and same_type == key:
                return
            old = same_type if same_type is not None else list(known.values())[0]
            raise self.changed_error(name, key, old, display)
        if not self.accept_new:
            raise HostKeyError(
                f"host key for {name} is not in {_pretty(self.path)}",
                host=display,
                hint=f"verify the fingerprint ({key.get_name()} {fingerprint(key)}) and re-run with "
                f"--accept-new-host-key, or add it with ssh-keyscan (and compare the fingerprint)",
            )
        self._append(name, key)

    def changed_error(self, name: str, key, old, display: str) -> HostKeyError:
        """A changed host key is always refused; the message shows both fingerprints."""
        return HostKeyError(
            f"HOST KEY CHANGED for {name}: {_pretty(self.path)} has {old.get_name()} {fingerprint(old)}, "
            f"but the host now offers {key.get_name()} {fingerprint(key)}. Refusing to connect "
            "(someone may be intercepting the connection, or the device was reinstalled)",
            host=display,
            hint=f"if the device was really reinstalled, remove the old entry with "
            f"`ssh-keygen -R '{name}' -f {_pretty(self.path)}`, verify the new fingerprint, and reconnect",
        )

    def _append(self, name: str, key) -> None:
        """Append one entry atomically (temp file + rename), keeping every existing line byte for byte."""
        try:
            old = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
        except OSError as exc:
            raise HostKeyError(f"cannot read {self.path}: {exc.strerror or exc}", hint="check its permissions") from exc
        if old and not old.endswith("\n"):
            old += "\n"
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o600
        atomic_write_text(self.path, old + line)
        os.chmod(self.path, mode)
        self.accepted.append(f"{name} {key.get_name()} {fingerprint(key)}")


def describe_auth_failure(resolved: ResolvedHost, tried: List[str]) -> Tuple[str, str]:
    """Message and hint for a refused login (never suggests passwords: edgekit does not use them)."""
    msg = f"authentication as {resolved.user} to {resolved.display} failed (tried: {', '.join(tried) or 'nothing'})"
    hint = (
        "add your public key to the device's ~/.ssh/authorized_keys (ssh-copy-id), load it into ssh-agent, "
        "or pass --identity-file; edgekit never uses passwords"
    )
    return msg, hint


def connection_error(resolved: ResolvedHost, what: str, exc: BaseException) -> ConnectionFailed:
    """A ConnectionFailed naming the host and the underlying socket/SSH error."""
    return ConnectionFailed(
        f"cannot {what} {resolved.display}: {exc.__class__.__name__}: {exc}",
        host=resolved.display,
        hint="check that the device is on, reachable from here and running sshd on that port "
        "(try `ssh -p PORT USER@HOST true`)",
    )
