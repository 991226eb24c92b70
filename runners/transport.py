"""The push/exec/pull contract the SSH and adb runners share: cached uploads, the harness command, typed errors.

A runner is a transport: it places files on the device (sha256-keyed directory, `.part` upload, verified
rename, nothing sent when the file is already there), runs a command there, and copies files back. What runs
on the device is the harness (or the Android demo app); both print the same BenchmarkResult JSON.
"""

from __future__ import annotations

import collections
import hashlib
import posixpath
import shlex
import uuid
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

from edgekit.core.errors import ConnectionFailed, RunnerError
from edgekit.runners.harness_protocol import CommandKilled, stream_line

STDERR_TAIL_LINES = 40
__all__ = ["CommandKilled", "DeviceOffline", "DeviceUnauthorized", "DeviceDiskFull", "DeviceCommandMissing", "FileItem",
           "ShaCache", "HarnessStderr", "disk_full", "harness_command", "parse_probe", "place_items", "pushable_files", "quote_argv"]


class DeviceOffline(ConnectionFailed):
    """The device is known but not answering (adb `offline`, SSH connection dropped)."""


class DeviceUnauthorized(ConnectionFailed):
    """The device refuses this computer (adb `unauthorized`: the USB debugging prompt was not accepted)."""


class DeviceDiskFull(RunnerError):
    """No space left in the device's work directory."""


class DeviceCommandMissing(RunnerError):
    """A program the runner needs does not exist on the device (e.g. `pm`/`am` on a non-Android adbd)."""


class FileItem:
    """One local file to place at `rel` (relative to the device work dir), identified by sha256."""

    def __init__(self, local: Path, rel: str, sha256: str, size: int):
        self.local, self.rel, self.sha256, self.size = local, rel, sha256, size
        self.tmp = part_name(rel)

    def check(self) -> Dict[str, Any]:
        return {"rel": self.rel, "sha256": self.sha256, "size": self.size}


def part_name(rel: str) -> str:
    """A unique hidden `.part` name beside `rel`: uploads land there and are renamed only after the sha256 check."""
    return posixpath.join(posixpath.dirname(rel), f".{posixpath.basename(rel)}.{uuid.uuid4().hex[:12]}.part")


def place_items(items: List[FileItem], kind: str, key: Optional[str] = None) -> List[FileItem]:
    """Put the files of one push into one directory `kind/<key>`: the single file's sha256, or a hash of all of them
    (an OpenVINO .xml + .bin pair stays together, and a changed .bin gives a new directory)."""
    if key is None:
        key = items[0].sha256 if len(items) == 1 else hashlib.sha256(
            "\n".join(f"{it.local.name} {it.sha256}" for it in items).encode()).hexdigest()
    for it in items:
        it.rel = posixpath.join(kind, key, it.local.name)
        it.tmp = part_name(it.rel)
    return items


class ShaCache:
    """sha256 of local files, remembered by (path, size, mtime) so a re-push does not hash a large model again."""

    def __init__(self) -> None:
        self._seen: Dict[Any, str] = {}

    def item(self, local: Path, kind: str) -> FileItem:
        from edgekit.core.fsutil import sha256_file

        st = local.stat()
        ck = (str(local.resolve()), st.st_size, st.st_mtime_ns)
        if ck not in self._seen:
            self._seen[ck] = sha256_file(local)
        sha = self._seen[ck]
        return FileItem(local, posixpath.join(kind, sha, local.name), sha, st.st_size)

    def items(self, files: Sequence[Any], kind: str, key: Optional[str], display: str) -> List[FileItem]:
        """Upload records for one push, every file checked to exist, placed together (place_items)."""
        out = []
        for f in files:
            f = Path(f)
            if not f.is_file():
                raise RunnerError(f"cannot push {f}: file not found", host=display, hint="check the artifact's files")
            out.append(self.item(f, kind))
        return place_items(out, kind, key)


def pushable_files(artifact: Any, display: str) -> List[Path]:
    """The artifact's files, or a clear error for an in-memory PyTorch module (it has no file to send)."""
    if artifact.metadata.get("in_memory") or str(artifact.path).startswith("<memory:"):
        raise RunnerError(
            f"artifact {artifact.path} is an in-memory PyTorch module and cannot be pushed to a device",
            host=display, hint="export it first (the deploy pipeline does this)",
        )
    return list(artifact.files)


def harness_command(workdir: str, python_cmd: str, harness: str, args: str, spec_remote: Optional[str] = None) -> str:
    """Run the harness in the background of a POSIX shell so its PID is known and a KILL shows as 137."""
    cleanup = f"; rm -f {shlex.quote(spec_remote)}" if spec_remote else ""
    return (
        f"cd {shlex.quote(workdir)} || exit 1; "
        f"{python_cmd} {shlex.quote(harness)} {args} </dev/null & pid=$!; "
        'echo "EDGEKIT-PID $pid" >&2; wait "$pid"; rc=$?'
        f"{cleanup}; exit $rc"
    )


class HarnessStderr:
    """Reads a harness's stderr: the EDGEKIT-PID line of harness_command, then harness_protocol.stream_line; keeps a tail."""

    def __init__(self, on_progress: Optional[Callable[[Dict[str, Any]], None]] = None):
        self.on_progress = on_progress
        self.pid: Optional[int] = None
        self.error: Optional[Dict[str, Any]] = None
        self.tail: Deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def line(self, line: str) -> None:
        if line.startswith("EDGEKIT-PID "):
            try:
                self.pid = int(line.split()[1])
            except (IndexError, ValueError):
                self.tail.append(line)
            return
        kind, data = stream_line(line)
        self.tail.append(line)  # progress lines too: the last one says how far the run got
        if kind == "progress" and self.on_progress is not None:
            self.on_progress(data)
        elif kind == "error":
            self.error = data

    @property
    def text(self) -> str:
        return "\n".join(self.tail)


def disk_full(display: str, phase: str, workdir: Optional[str], command: Optional[str], rc: Optional[int], detail: str) -> DeviceDiskFull:
    return DeviceDiskFull(
        f"the device's disk is full (during {phase})",
        host=display, command=command, exit_code=rc, stderr_tail=detail,
        hint=f"free space on the device (df -h {workdir or '~/.cache'}), or choose --remote-workdir on a larger disk",
    )


def parse_probe(out: str, *, display: str, command: str, rc: int, stderr: str) -> Dict[str, Any]:
    """The JSON document `harness --probe` prints last on stdout."""
    import json

    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise RunnerError("the harness probe printed no JSON", host=display, command=command, exit_code=rc,
                          stderr_tail=stderr, hint="reinstall edgekit and re-run") from exc


def quote_argv(argv: Sequence[Any]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)
