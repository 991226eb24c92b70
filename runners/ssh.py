"""SSHRunner: deploy an artifact to a device over SSH (paramiko), run the harness there, collect its JSON."""

from __future__ import annotations

import json
import os
import posixpath
import select
import shlex
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgekit.core.artifact import Artifact
from edgekit.core.errors import ConnectionFailed, EdgekitError, HostKeyError, RunnerError, require
from edgekit.core.profiles import DeviceProfile
from edgekit.core.results import BenchmarkResult
from edgekit.core.runner_interface import HarnessSpec, Runner
from edgekit.runners.harness_protocol import KILLED_CODES, harness_error, parse_result
from edgekit.runners.transport import FileItem, HarnessStderr, ShaCache, disk_full, harness_command, parse_probe, pushable_files
from edgekit.runners.sshconf import (
    KnownHosts,
    ResolvedHost,
    connection_error,
    describe_auth_failure,
    fingerprint,
    resolve_host,
)

MIN_PYTHON = (3, 6)

# Device-side helper sent with `python -c`: work dir setup, sha256 checks, verified atomic renames, cleanup.
# Old-Python-parsable syntax, so a too-old interpreter is reported instead of a SyntaxError.
# Reads one JSON request on stdin, prints one JSON reply; refuses every path outside the work dir.
REMOTE_TOOL = r'''
import sys, os, json, hashlib, time
req = json.loads(sys.stdin.read())
out = {"python": list(sys.version_info[:3]), "executable": sys.executable}
if sys.version_info < (3, 6):
    print(json.dumps(out))
    sys.exit(0)
wd = req.get("workdir")
if wd:
    wd = os.path.expanduser(wd)
else:
    wd = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgekit")
wd = os.path.realpath(os.path.abspath(wd))
out["workdir"] = wd
mk = os.path.join(wd, "venv", "edgekit-setup.json")
if os.path.isfile(mk) and os.path.isfile(os.path.join(wd, "venv", "bin", "python")):
    try:
        with open(mk) as f:
            out["setup"] = json.load(f)
        out["venv_python"] = os.path.join(wd, "venv", "bin", "python")
    except ValueError:
        pass
def inside(rel):
    p = os.path.realpath(os.path.join(wd, rel))
    if p != wd and not p.startswith(wd + os.sep):
        raise ValueError("path %r is outside the work directory %s" % (rel, wd))
    return p
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
try:
    os.makedirs(wd, exist_ok=True)
    for rel in req.get("mkdirs", []):
        os.makedirs(inside(rel), exist_ok=True)
    for rel, age in req.get("stale", []):
        d = inside(rel)
        for name in os.listdir(d):
            q = os.path.join(d, name)
            if os.path.isfile(q) and time.time() - os.path.getmtime(q) > age:
                os.remove(q)
    present = {}
    for item in req.get("check", []):
        p = inside(item["rel"])
        present[item["rel"]] = bool(os.path.isfile(p) and os.path.getsize(p) == item["size"] and sha(p) == item["sha256"])
        d = os.path.dirname(p)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            q = os.path.join(d, name)
            if name.endswith(".part") and time.time() - os.path.getmtime(q) > req.get("stale_part_s", 600):
                os.remove(q)
    out["present"] = present
    done = {}
    for item in req.get("finalize", []):
        tmp = inside(item["tmp"])
        final = inside(item["rel"])
        got = sha(tmp) if os.path.isfile(tmp) else None
        if got != item["sha256"]:
            if got is not None:
                os.remove(tmp)
            done[item["rel"]] = "sha256 mismatch: expected %s, got %s" % (item["sha256"], got)
        else:
            os.rename(tmp, final)
            done[item["rel"]] = "ok"
    out["finalized"] = done
    for rel in req.get("remove", []):
        p = inside(rel)
        if os.path.isfile(p):
            os.remove(p)
    st = os.statvfs(wd)
    out["free_bytes"] = st.f_bavail * st.f_frsize
except (OSError, ValueError) as exc:
    out["error"] = "%s: %s" % (exc.__class__.__name__, exc)
    out["enospc"] = getattr(exc, "errno", None) == 28
    print(json.dumps(out))
    sys.exit(1)
print(json.dumps(out))
'''


def _q_path(path: str) -> str:
    """shlex.quote, but let a leading `~/` expand to the remote $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


class SSHRunner(Runner):
    """Runs the edgekit harness on a device reached over SSH; host keys verified against known_hosts."""

    name = "ssh"

    def __init__(
        self,
        host: str,
        profile: DeviceProfile,
        *,
        accept_new_host_key: bool = False,
        known_hosts: Optional[os.PathLike | str] = None,
        identity_file: Optional[os.PathLike | str] = None,
        ssh_config: Optional[os.PathLike | str] = None,
        connect_timeout: Optional[float] = None,
        command_timeout: float = 900.0,
        workdir: Optional[str] = None,
        python: Optional[str] = None,
        on_progress: Optional[Callable[[Dict[str, Any]], None]] = None,
        on_upload: Optional[Callable[[int, int], None]] = None,
        allow_agent: bool = True,
        keepalive_s: int = 15,
        use_setup_venv: bool = True,
    ):
        self.host_spec = host
        self.profile = profile
        self.resolved: ResolvedHost = resolve_host(
            host, ssh_config=ssh_config, default_user=profile.connection.user, default_port=profile.connection.port
        )
        self.ssh_config = ssh_config
        kh = known_hosts or self.resolved.known_hosts
        self.known_hosts = KnownHosts(kh, accept_new=accept_new_host_key or self.resolved.accept_new)
        self.identity_file = str(Path(identity_file).expanduser()) if identity_file else None
        if self.identity_file and not Path(self.identity_file).is_file():
            raise ConnectionFailed(f"identity file {self.identity_file} not found", hint="check the --identity-file path")
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else (self.resolved.connect_timeout or 10.0))
        self.command_timeout = float(command_timeout)
        self.workdir_request = workdir or profile.connection.workdir
        self.python = python or profile.connection.python or "python3"
        # `edgekit setup` leaves <workdir>/venv (marked complete); use its Python unless one was named explicitly
        self.use_setup_venv = use_setup_venv and not python
        self.setup_info: Optional[Dict[str, Any]] = None
        self.on_progress = on_progress
        self.on_upload = on_upload
        self.allow_agent = allow_agent
        self.keepalive_s = int(self.resolved.keepalive_s or keepalive_s)
        # counters for reports and the cached-re-run figure
        self.bytes_uploaded = 0
        self.uploads_skipped = 0
        self.last_upload_s = 0.0  # SFTP transfer time of the last upload (0 when everything was cached)
        self.last_verify_s = 0.0  # the device-side sha256 check + rename that followed it
        self.commands_run = 0
        self.workdir: Optional[str] = None  # absolute, known after connect()
        self.remote_python: Optional[List[int]] = None
        self.harness_remote: Optional[str] = None
        self._clients: List[Any] = []
        self._client = None
        self._sftp = None
        self._shas = ShaCache()

    # ------------------------------------------------------------------ connection

    @property
    def target(self) -> str:
        return f"ssh:{self.resolved.display}"

    @property
    def display(self) -> str:
        return self.resolved.display

    def connect(self) -> None:
        """Open the SSH session (through ProxyJump hops), check Python, place the harness in the work dir."""
        if self._client is not None:
            return
        paramiko = require("paramiko", "ssh", "the SSH runner")
        try:
            sock = None
            hops = [resolve_host(h, ssh_config=self.ssh_config) for h in self.resolved.proxy_jump]
            for i, hop in enumerate(hops):
                client = self._open(hop, sock)
                nxt = hops[i + 1] if i + 1 < len(hops) else self.resolved
                try:
                    sock = client.get_transport().open_channel(
                        "direct-tcpip", (nxt.hostname, nxt.port), ("127.0.0.1", 0), timeout=self.connect_timeout
                    )
                except (paramiko.SSHException, OSError, EOFError) as exc:  # ChannelException is an SSHException
                    raise ConnectionFailed(
                        f"jump host {hop.display} could not open a tunnel to {nxt.display}: {exc}",
                        host=self.display,
                        hint="check that the jump host can reach the device and allows TCP forwarding (AllowTcpForwarding)",
                    ) from exc
            self._client = self._open(self.resolved, sock)
            self._bootstrap()
        except BaseException:
            self.close()
            raise

    def _open(self, r: ResolvedHost, sock):
        """Connect and authenticate one hop, with its own host-key verification; never with a password."""
        import paramiko

        client = paramiko.SSHClient()
        self._clients.append(client)
        known = self.known_hosts._load().lookup(r.known_hosts_name)
        if known:
            for ktype, key in known.items():
                client.get_host_keys().add(r.known_hosts_name, ktype, key)
        kh = self.known_hosts

        class _Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client_, hostname, key):
                kh.verify(hostname, key, r.display)

        client.set_missing_host_key_policy(_Policy())
        keyfiles = [self.identity_file] if self.identity_file else [p for p in r.identity_files if Path(p).is_file()]
        use_agent = self.allow_agent and not r.identities_only
        look = not keyfiles and not (self.identity_file or r.identity_files)
        tried = list(keyfiles)
        if use_agent and os.environ.get("SSH_AUTH_SOCK"):
            tried.append("ssh-agent")
        if look:
            tried.append("default keys in ~/.ssh")
        try:
            client.connect(
                r.hostname,
                port=r.port,
                username=r.user,
                key_filename=keyfiles or None,
                allow_agent=use_agent,
                look_for_keys=look,
                password=None,
                passphrase=None,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                sock=sock,
            )
        except paramiko.BadHostKeyException as exc:
            raise kh.changed_error(r.known_hosts_name, exc.key, exc.expected_key, r.display) from exc
        except paramiko.PasswordRequiredException as exc:
            raise ConnectionFailed(
                f"the private key for {r.display} is encrypted and edgekit does not prompt for passphrases",
                host=r.display,
                hint="load the key into ssh-agent (ssh-add KEY) and re-run",
            ) from exc
        except paramiko.AuthenticationException as exc:
            msg, hint = describe_auth_failure(r, tried)
            raise ConnectionFailed(msg, host=r.display, hint=hint) from exc
        except HostKeyError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise connection_error(r, "connect to", exc) from exc
        client.get_transport().set_keepalive(self.keepalive_s)
        return client

    def _bootstrap(self) -> None:
        """One remote command: Python version, work dir, harness presence; upload the harness if needed."""
        from edgekit.core.registry import harness_path

        hp = Path(harness_path())
        if not hp.is_file():
            raise EdgekitError(f"the on-device harness {hp} is missing from this edgekit installation", hint="reinstall edgekit")
        item = self._item(hp, "harness")
        # run specs orphaned by a lost connection are removed once they are a day old
        request = {"workdir": self.workdir_request, "check": [item.check()], "mkdirs": ["runs"], "stale": [["runs", 86400]]}
        reply = self._tool(request, "connect")
        self.workdir = reply["workdir"]
        if self.use_setup_venv and reply.get("venv_python"):
            self.python = reply["venv_python"]
            self.setup_info = dict(reply.get("setup") or {}, venv_python=self.python)
        self.harness_remote = posixpath.join(self.workdir, item.rel)
        self._upload_missing([item], reply, "harness upload")

    def _item(self, local: Path, kind: str) -> FileItem:
        return self._shas.item(local, kind)

    # ------------------------------------------------------------------ remote commands

    def _transport(self, phase: str):
        t = self._client.get_transport() if self._client is not None else None
        if t is None or not t.is_active():
            raise self._lost(phase)
        return t

    def _lost(self, phase: str, exc: Optional[BaseException] = None) -> ConnectionFailed:
        detail = f" ({exc.__class__.__name__}: {exc})" if exc else ""
        return ConnectionFailed(
            f"connection to {self.display} lost during {phase}{detail}",
            host=self.display,
            hint="check the network and the device (did it reboot or sleep?), then re-run; "
            "finished uploads are reused, partial ones never are",
        )

    def _exec(self, command: str, phase: str, stdin: Optional[bytes] = None, timeout: float = 120.0) -> Tuple[int, str, str]:
        """Run a short remote command; return (exit code, stdout, stderr)."""
        import paramiko

        t = self._transport(phase)
        self.commands_run += 1
        try:
            chan = t.open_session(timeout=self.connect_timeout)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    chan.close()
                    raise RunnerError(
                        f"remote command did not finish within {timeout:.0f} s during {phase}",
                        host=self.display, command=command, stderr_tail=err.decode(errors="replace"),
                        hint="the device may be overloaded; check it with `ssh HOST uptime`",
                    )
                select.select([chan], [], [], 0.2)
            rc = chan.recv_exit_status() if chan.exit_status_ready() else -1
            chan.close()
        except (socket.error, EOFError, paramiko.SSHException) as exc:
            raise self._lost(phase, exc) from exc
        if rc == -1 and not t.is_active():
            raise self._lost(phase)
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def _py(self) -> str:
        return _q_path(self.python)

    def _tool(self, request: Dict[str, Any], phase: str) -> Dict[str, Any]:
        """Run REMOTE_TOOL with one JSON request; map missing/old Python and disk errors to RunnerError."""
        cmd = f"{self._py()} -c {shlex.quote(REMOTE_TOOL)}"
        shown = f"{self._py()} -c <edgekit remote tool>"
        rc, out, err = self._exec(cmd, phase, stdin=json.dumps(request).encode())
        if rc == 127 or (rc != 0 and "not found" in err and not out.strip()):
            raise RunnerError(
                f"Python interpreter '{self.python}' not found on the device",
                host=self.display, command=shown, exit_code=rc, stderr_tail=err,
                hint="install Python 3.6+ on the device, or point connection.python in the device profile (python= in the Python API) at it",
            )
        try:
            reply = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        except ValueError:
            reply = None
        if reply is None:
            raise RunnerError(
                f"device helper failed during {phase}", host=self.display, command=shown, exit_code=rc,
                stderr_tail=err or out, hint="see the remote stderr above",
            )
        pyver = tuple(reply.get("python", [0, 0])[:2])
        self.remote_python = reply.get("python")
        if pyver < MIN_PYTHON:
            raise RunnerError(
                f"Python {'.'.join(map(str, reply.get('python', [])))} at '{self.python}' on the device is too old: "
                f"the edgekit harness needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
                host=self.display, command=shown, exit_code=rc,
                hint="install a newer python3 on the device and point connection.python in the device profile (python= in the Python API) at it",
            )
        if "error" in reply:
            if reply.get("enospc"):
                raise self._disk_full(phase, shown, rc, reply["error"])
            raise RunnerError(
                f"device helper failed during {phase}: {reply['error']}", host=self.display, command=shown,
                exit_code=rc, stderr_tail=err, hint="check the remote work directory's permissions (--remote-workdir)",
            )
        return reply

    def _disk_full(self, phase: str, command: Optional[str], rc: Optional[int], detail: str) -> RunnerError:
        return disk_full(self.display, phase, self.workdir, command, rc, detail)

    # ------------------------------------------------------------------ upload

    def _sftp_client(self):
        if self._sftp is None:
            import paramiko

            try:
                self._sftp = self._client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if not self._client.get_transport().is_active():
                    raise self._lost("SFTP start", exc) from exc
                raise RunnerError(
                    f"cannot start SFTP on {self.display}: {exc}", host=self.display,
                    hint="enable the sftp subsystem in the device's sshd_config (Subsystem sftp ...)",
                ) from exc
        return self._sftp

    def _upload_missing(self, items: List[FileItem], reply: Dict[str, Any], phase: str) -> None:
        """Upload what the device lacks to temp names, verify sha256 there, then rename atomically."""
        present = reply.get("present", {})
        missing = [it for it in items if not present.get(it.rel)]
        self.uploads_skipped += len(items) - len(missing)
        self.last_upload_s = self.last_verify_s = 0.0
        if not missing:
            return
        total = sum(it.size for it in missing)
        free = reply.get("free_bytes")
        if free is not None and total > free:
            raise self._disk_full(phase, None, None, f"need {total} bytes, {free} free in {self.workdir}")
        import paramiko

        sftp = self._sftp_client()
        done = 0
        t0 = time.perf_counter()
        for it in missing:
            remote_tmp = posixpath.join(self.workdir, it.tmp)

            def cb(sent: int, _size: int, base=done) -> None:
                if self.on_upload is not None:
                    self.on_upload(base + sent, total)

            try:
                sftp.put(str(it.local), remote_tmp, callback=cb, confirm=True)
            except (socket.error, EOFError) as exc:
                raise self._lost(f"{phase} of {it.local.name}", exc) from exc
            except IOError as exc:
                if not self._client.get_transport().is_active():
                    raise self._lost(f"{phase} of {it.local.name}", exc) from exc
                if "space" in str(exc).lower():
                    raise self._disk_full(phase, f"sftp put {remote_tmp}", None, str(exc)) from exc
                raise RunnerError(
                    f"upload of {it.local} to {remote_tmp} failed: {exc}", host=self.display,
                    hint="check free space (an SFTP 'Failure' is often a full disk) and permissions of the remote work directory",
                ) from exc
            except paramiko.SSHException as exc:
                raise self._lost(f"{phase} of {it.local.name}", exc) from exc
            done += it.size
            self.bytes_uploaded += it.size
        self.last_upload_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        fin = self._tool(
            {"workdir": self.workdir, "finalize": [{"tmp": it.tmp, "rel": it.rel, "sha256": it.sha256} for it in missing]},
            f"{phase} verification",
        )
        self.last_verify_s = time.perf_counter() - t1
        bad = {k: v for k, v in fin.get("finalized", {}).items() if v != "ok"}
        if bad:
            raise RunnerError(
                "uploaded file(s) failed sha256 verification on the device: "
                + "; ".join(f"{k}: {v}" for k, v in bad.items()),
                host=self.display, hint="the transfer was corrupted; re-run (the bad copy was deleted)",
            )

    def push_files(self, files: List[Path], kind: str = "models", key: Optional[str] = None) -> List[str]:
        """Place local files in one remote directory (named by `key` or content); return their device paths."""
        if self._client is None:
            self.connect()
        items = self._shas.items(files, kind, key, self.display)
        reply = self._tool({"workdir": self.workdir, "check": [it.check() for it in items]}, "upload check")
        self._upload_missing(items, reply, "upload")
        return [posixpath.join(self.workdir, it.rel) for it in items]

    def push(self, artifact: Artifact) -> str:
        """Upload every file of the artifact (e.g. OpenVINO .xml + .bin) into one dir; skip what is already there."""
        return self.push_files(pushable_files(artifact, self.display))[0]

    # ------------------------------------------------------------------ harness

    def _harness_cmd(self, args: str, spec_remote: Optional[str] = None) -> str:
        return harness_command(self.workdir, self._py(), self.harness_remote, args, spec_remote)

    def _kill_remote(self, pid: Optional[int], spec_remote: Optional[str]) -> Optional[str]:
        """TERM then KILL the remote harness and remove its spec; return a note if that was impossible."""
        parts = []
        if pid:
            parts.append(f"kill -TERM {pid} 2>/dev/null; sleep 1; kill -KILL {pid} 2>/dev/null")
        elif spec_remote:
            # stopped before the shell reported the PID: find the harness by its unique spec path; the
            # bracket keeps this very command line from matching its own pattern
            pat = shlex.quote("[" + spec_remote[0] + "]" + spec_remote[1:])
            parts.append(f"pkill -TERM -f {pat} 2>/dev/null; sleep 1; pkill -KILL -f {pat} 2>/dev/null")
        if spec_remote:
            runs_dir, name = posixpath.split(spec_remote)
            parts.append(f"cd {shlex.quote(runs_dir)} && rm -f {shlex.quote(name)}")
        if not parts:
            return None
        try:
            self._exec("; ".join(parts) + "; true", "stopping the remote harness", timeout=15)
        except (RunnerError, KeyboardInterrupt) as exc:
            return f"could not stop remote process {pid or ''}: {exc}"
        return None

    def _stream(self, command: str, phase: str, spec_remote: Optional[str]) -> Tuple[int, str, str, Optional[Dict[str, Any]]]:
        """Run the harness command, stream progress lines, enforce the timeout, stop it on Ctrl-C."""
        import paramiko

        t = self._transport(phase)
        self.commands_run += 1
        parser = HarnessStderr(self.on_progress)
        handle = parser.line
        out = bytearray()
        errbuf = b""
        chan = None

        try:
            chan = t.open_session(timeout=self.connect_timeout)
            chan.exec_command(command)
            chan.shutdown_write()
            deadline = time.monotonic() + self.command_timeout
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    errbuf += chan.recv_stderr(65536)
                    *lines, errbuf = errbuf.split(b"\n")
                    for ln in lines:
                        handle(ln.decode(errors="replace").rstrip("\r"))
                if (chan.exit_status_ready() or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not t.is_active():
                    raise self._lost(phase)
                if time.monotonic() > deadline:
                    note = self._kill_remote(parser.pid, spec_remote)
                    chan.close()
                    raise RunnerError(
                        f"the remote benchmark did not finish within {self.command_timeout:g} s and was stopped",
                        host=self.display, command=command, stderr_tail=parser.text + (f"\n{note}" if note else ""),
                        hint="raise the command timeout, or lower min_seconds/max_seconds in the run spec",
                    )
                select.select([chan], [], [], 0.2)
            if errbuf:
                handle(errbuf.decode(errors="replace"))
            rc = chan.recv_exit_status() if chan.exit_status_ready() else -1
        except KeyboardInterrupt:
            if chan is not None:
                chan.close()
            if t.is_active():
                self._kill_remote(parser.pid, spec_remote)
            raise
        except (socket.error, EOFError, paramiko.SSHException) as exc:
            raise self._lost(phase, exc) from exc
        finally:
            if chan is not None:
                chan.close()
        if rc == -1 and not t.is_active():
            raise self._lost(phase)
        return rc, out.decode(errors="replace"), parser.text, parser.error

    def _harness_error(self, rc: int, command: str, stderr: str, info: Optional[Dict[str, Any]], phase: str) -> RunnerError:
        """Turn a failed harness run into a typed error with a hint (a full disk is told apart here)."""
        if rc not in KILLED_CODES and rc != -1 and "No space left on device" in stderr:
            return self._disk_full(phase, command, rc, stderr)
        return harness_error(rc, command, stderr, info, phase=f"remote {phase}", host=self.display, python=self.python)

    def run_harness(self, spec: HarnessSpec) -> BenchmarkResult:
        """Write the spec into the work dir, run the harness with the device's Python, parse its JSON result."""
        if self._client is None:
            self.connect()
        spec_remote = posixpath.join(self.workdir, "runs", f"spec-{uuid.uuid4().hex}.json")
        data = spec.model_dump_json(indent=None).encode()
        try:
            with self._sftp_client().open(spec_remote, "wb") as f:
                f.write(data)
        except (socket.error, EOFError) as exc:
            raise self._lost("spec upload", exc) from exc
        except IOError as exc:
            if not self._client.get_transport().is_active():
                raise self._lost("spec upload", exc) from exc
            raise RunnerError(f"cannot write {spec_remote}: {exc}", host=self.display,
                              hint="check free space and permissions of the remote work directory") from exc
        command = self._harness_cmd(shlex.quote(spec_remote), spec_remote)
        rc, out, stderr, info = self._stream(command, "benchmark", spec_remote)
        if rc != 0:
            raise self._harness_error(rc, command, stderr, info, "benchmark")
        return parse_result(out, command, rc, stderr, runner="ssh", host=self.host_spec, shown_host=self.display)

    def exec(self, argv: List[str], timeout: float = 600.0) -> Tuple[int, str, str]:
        """Run one program on the device (no shell features; every argument quoted). TimeoutError past `timeout`."""
        command = " ".join(shlex.quote(str(a)) for a in argv)
        t0 = time.monotonic()
        try:
            return self._exec(command, f"'{argv[0]}'", timeout=timeout)
        except RunnerError as exc:
            if time.monotonic() - t0 >= timeout and not isinstance(exc, ConnectionFailed):
                raise TimeoutError(f"{argv[0]} did not finish within {timeout:.0f} s on {self.display}") from exc
            raise

    def pull(self, remote_path: str, local_path: Path) -> None:
        """Copy a file from the device (e.g. a TensorRT engine) to `local_path` atomically."""
        import paramiko

        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = local_path.with_name("." + local_path.name + ".part")
        try:
            self._sftp_client().get(remote_path, str(tmp))
            os.replace(tmp, local_path)
        except (paramiko.SSHException, EOFError, socket.error) as exc:
            tmp.unlink(missing_ok=True)
            raise self._lost(f"download of {remote_path}", exc) from exc
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RunnerError(f"cannot download {remote_path}: {exc}", host=self.display, hint="check the path on the device and free space here") from exc

    def probe(self) -> Dict[str, Any]:
        """Run `harness.py --probe` on the device and add the SSH facts (target, work dir, Python)."""
        if self._client is None:
            self.connect()
        command = self._harness_cmd("--probe " + shlex.quote(self.workdir))
        rc, out, stderr, info = self._stream(command, "probe", None)
        if rc != 0:
            raise self._harness_error(rc, command, stderr, info, "probe")
        data = parse_probe(out, display=self.display, command=command, rc=rc, stderr=stderr)
        data["ssh"] = {
            "target": self.target, "workdir": self.workdir, "python": self.python,
            "python_version": ".".join(map(str, self.remote_python or [])),
            "known_hosts": str(self.known_hosts.path), "accepted_host_keys": list(self.known_hosts.accepted),
            "setup": self.setup_info,
        }
        return data

    def close(self) -> None:
        """Close SFTP and every SSH hop (innermost first); safe to call twice."""
        if self._sftp is not None:
            try:
                self._sftp.close()
            except (OSError, EOFError):
                pass  # closing a dead channel: nothing left to release
            self._sftp = None
        for client in reversed(self._clients):
            client.close()
        self._clients = []
        self._client = None


__all__ = ["SSHRunner", "fingerprint"]
