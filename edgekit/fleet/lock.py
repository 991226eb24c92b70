"""Board locks: an OS-level fcntl lock per physical board, so two sweeps (or two threads, or a sweep and a deploy)
never benchmark on one board at once. The lock file lives in the user data dir and is keyed by the board's identity.

Every device benchmark takes it (`edgekit.workflows.deploy.benchmark` through `hold_runner_board`); a thread that
already holds a board's lock (a sweep cell) takes it again without waiting (re-entrant per thread)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from edgekit.core.errors import EdgekitError

POLL_S = 0.2
TIMEOUT_ENV = "EDGEKIT_LOCK_TIMEOUT_S"
_held: dict = {}  # (identity, thread id) -> depth: re-entry by the thread that holds the lock
_held_guard = threading.Lock()


class BoardBusy(EdgekitError):
    """Another process held the board's lock for longer than the sweep was willing to wait."""


def locks_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("EDGEKIT_DATA_DIR") or user_data_dir("edgekit")) / "locks"


def lock_path(identity: str) -> Path:
    return locks_dir() / f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.lock"


class BoardLock:
    """`with BoardLock(identity, timeout_s):` — exclusive, released when the process dies (kernel-held)."""

    def __init__(self, identity: str, timeout_s: float = 3600.0, on_wait: Optional[Callable[[str], None]] = None, holder: str = "",
                 hint: str = "wait for the other sweep or benchmark to finish, or raise retries.lock_timeout_s"):
        self.identity = identity
        self.hint = hint
        self._reentered = False
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
        key = (self.identity, threading.get_ident())
        with _held_guard:
            if _held.get(key):
                _held[key] += 1
                self._reentered = True
                return
        self._acquire()
        with _held_guard:
            _held[key] = 1

    def _acquire(self) -> None:
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
                        hint=self.hint,
                    ) from None
                if self.on_wait and not told:
                    self.on_wait(f"waiting for {self.identity}: locked by {self._owner()}")
                    told = True
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "holder": self.holder, "since": time.time()}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        key = (self.identity, threading.get_ident())
        with _held_guard:
            if key in _held:
                _held[key] -= 1
                if _held[key] <= 0:
                    del _held[key]
        if self._reentered:
            self._reentered = False
            return
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "BoardLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def runner_identity(runner: object) -> Optional[str]:
    """The board lock key of a connected runner, as a fleet file's board has it (`ssh:<host as given>`,
    `adb:<serial>`); None for this machine (the local runner)."""
    name = getattr(runner, "name", "")
    if name == "ssh":
        return f"ssh:{getattr(runner, 'host_spec', None) or runner.target}"  # type: ignore[attr-defined]
    if name == "adb":
        serial = getattr(runner, "serial", None) or getattr(runner, "serial_request", None)
        return f"adb:{serial}" if serial else None
    return None


@contextmanager
def hold_runner_board(runner: object, holder: str, on_wait: Optional[Callable[[str], None]] = None):
    """Hold the board lock of `runner`'s device while the body benchmarks on it (nothing for the local runner).
    Waits up to $EDGEKIT_LOCK_TIMEOUT_S (default 3600 s) for another edgekit process, saying so once."""
    identity = runner_identity(runner)
    if identity is None:
        yield None
        return
    raw = os.environ.get(TIMEOUT_ENV, "3600")
    try:
        timeout = float(raw)
    except ValueError:
        from edgekit.core.errors import UsageError

        raise UsageError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds", hint=f"set {TIMEOUT_ENV} to e.g. 600, or unset it") from None
    lock = BoardLock(identity, timeout_s=timeout, on_wait=on_wait, holder=holder,
                     hint=f"wait for the other edgekit run on this board to finish, or set {TIMEOUT_ENV} to wait longer")
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
