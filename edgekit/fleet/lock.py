"""Board locks: an OS-level fcntl lock per physical board, so two sweeps (or two threads) never benchmark
on one board at once. The lock file lives in the user data dir and is keyed by the board's identity."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

from edgekit.core.errors import EdgekitError

POLL_S = 0.2


class BoardBusy(EdgekitError):
    """Another process held the board's lock for longer than the sweep was willing to wait."""


def locks_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("EDGEKIT_DATA_DIR") or user_data_dir("edgekit")) / "locks"


def lock_path(identity: str) -> Path:
    return locks_dir() / f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.lock"


class BoardLock:
    """`with BoardLock(identity, timeout_s):` — exclusive, released when the process dies (kernel-held)."""

    def __init__(self, identity: str, timeout_s: float = 3600.0, on_wait: Optional[Callable[[str], None]] = None, holder: str = ""):
        self.identity = identity
        self.timeout_s = timeout_s
        self.on_wait = on_wait
        self.holder = holder
        self.path = lock_path(identity)
        self._fd: Optional[int] = None

    def _owner(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info.get('pid')} ({info.get('holder') or 'edgekit'})"
        except (OSError, ValueError):
            return "another process"

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    owner = self._owner()
                    os.close(fd)
                    raise BoardBusy(
                        f"board {self.identity} is locked by {owner} (lock file {self.path}); waited {self.timeout_s:g} s",
                        hint="wait for the other sweep or benchmark to finish, or raise retries.lock_timeout_s",
                    ) from None
                if self.on_wait and not told:
                    self.on_wait(f"waiting for {self.identity}: locked by {self._owner()}")
                    told = True
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "holder": self.holder, "since": time.time()}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "BoardLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
