"""Temp dirs named after their owner's PID, and a sweep that removes those a killed run left behind."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import List, Optional

DAY_S = 24 * 3600.0
# <prefix><pid>@<host>-<random>: the host keeps a shared (NFS) cache from judging PIDs of another machine
_OWNER = re.compile(r"(\d+)@([^-/]+)-[^/]*$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"


def make(prefix: str, dir: Optional[Path] = None, tag: str = "") -> Path:
    """mkdtemp whose name records this process as its owner."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}@{_host()}-{tag}", dir=None if dir is None else str(dir)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def is_stale(path: Path, prefix: str, now: Optional[float] = None) -> bool:
    """Owned by a dead process on this host; or of unknown owner (another host, an older edgekit) and over a day old."""
    name = path.name
    if not name.startswith(prefix):
        return False
    m = _OWNER.match(name[len(prefix):])
    if m and m.group(2) == _host():
        return not _alive(int(m.group(1)))
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except OSError:
        return False
    return age > DAY_S


def sweep(parent: Path, prefix: str) -> List[Path]:
    """Remove stale `prefix*` dirs directly under `parent`; returns what was removed."""
    removed = []
    try:
        candidates = [p for p in Path(parent).iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return removed
    for p in candidates:
        if is_stale(p, prefix):
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                removed.append(p)
    return removed
