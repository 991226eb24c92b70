"""`--out DIR` as one coherent run: locked, staged in a sibling directory, swapped in at the end.

- A second writer to the same DIR gets a clear error (an flock on `.DIR.edgekit-lock` beside it; the kernel
  drops it when the holder dies, so a crash never leaves a stale lock).
- Everything is written into `.DIR.staging-*` beside DIR (same file system), then swapped in with one atomic
  rename (renameat2 RENAME_EXCHANGE where the kernel has it). Nothing of two runs ever mixes.
- The run it replaces is kept as `DIR/.previous` (one generation). A non-empty DIR that edgekit did not write
  (no `.edgekit-out` marker) is refused rather than moved: --out may point at a directory full of the user's files.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

from edgekit.core.errors import OutputError
from edgekit.core.fsutil import apply_umask_dir, atomic_write_text

MARKER = ".edgekit-out"
PREVIOUS = ".previous"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM):  # file system or kernel without exchange
        return False
    raise OSError(err, os.strerror(err), str(a))


class OutDir:
    """Use as: `o = OutDir(path).open()`, write into `o.stage`, then `o.commit()`; `o.abort()` in a finally."""

    def __init__(self, path: Union[str, Path]):
        self.final = Path(os.path.abspath(os.path.expanduser(str(path))))
        self.shown = Path(path)  # as the user wrote it, for paths in reports
        self.stage: Optional[Path] = None
        self._lock_fd: Optional[int] = None

    @property
    def lock_path(self) -> Path:
        return self.final.parent / f".{self.final.name}.edgekit-lock"

    def open(self) -> "OutDir":
        import fcntl

        f = self.final
        cwd = Path.cwd().resolve()
        if f.resolve() == cwd or f.resolve() in cwd.parents:
            raise OutputError(f"--out {self.shown} is the current directory (or holds it); edgekit replaces --out as a whole",
                              hint="pass a subdirectory, e.g. --out out/")
        if f.exists() and not f.is_dir():
            raise OutputError(f"--out {self.shown} exists and is not a directory", hint="pass a directory path (it is created if missing)")
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"--out directory {self.shown} is not writable: {exc.strerror or exc}", hint=f"pass a different directory, or fix the permissions of {f.parent}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(
                f"--out {self.shown} is being written by another edgekit run (pid {holder}, lock {self.lock_path})",
                hint="wait for that run to finish, or pass a different --out",
            ) from None
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            if f.is_dir() and any(f.iterdir()) and not (f / MARKER).exists():
                raise OutputError(
                    f"--out {self.shown} is not empty and was not written by edgekit; refusing to replace its contents",
                    hint="pass a new or empty directory (edgekit replaces its own earlier output and keeps it as .previous)",
                )
            self.stage = Path(tempfile.mkdtemp(prefix=f".{f.name}.staging-", dir=f.parent))
            apply_umask_dir(self.stage)
            atomic_write_text(self.stage / MARKER, "written by edgekit; the run before this one is in .previous/\n")
        except OSError as exc:
            self.abort()
            raise OutputError(f"--out directory {self.shown} is not writable: {exc.strerror or exc}", hint=f"pass a different directory, or fix the permissions of {f.parent}") from exc
        except BaseException:
            self.abort()
            raise
        return self

    def shown_path(self, staged: Union[str, Path]) -> str:
        """Where a file written in the staging dir will be once the run is swapped in (as the user named --out)."""
        return str(self.shown / Path(staged).relative_to(self.stage))

    def commit(self) -> None:
        """Swap the staged run in; the replaced run becomes DIR/.previous; release the lock."""
        if self.stage is None:
            return
        f, stage = self.final, self.stage
        try:
            if not f.exists():
                os.rename(stage, f)
                old = None
            elif _exchange(stage, f):
                old = stage  # the staging path now holds the previous run
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{f.name}.old-", dir=f.parent)) / "run"
                os.rename(f, old)
                os.rename(stage, f)
            if old is not None:
                if (old / MARKER).exists():
                    shutil.rmtree(old / PREVIOUS, ignore_errors=True)  # keep one generation
                    os.rename(old, f / PREVIOUS)
                else:  # an empty directory the user created
                    shutil.rmtree(old, ignore_errors=True)
                if old.parent != f.parent:
                    shutil.rmtree(old.parent, ignore_errors=True)
        except OSError as exc:
            raise OutputError(f"cannot move the finished run into --out {self.shown}: {exc.strerror or exc}", hint=f"the complete run is kept in {stage}") from exc
        self.stage = None
        self._unlock()

    def kept_previous(self) -> str:
        """' (the run it replaced is in DIR/.previous/)' after a commit that kept one, else ''."""
        return f" (the run it replaced is in {self.shown / PREVIOUS}/)" if (self.final / PREVIOUS).is_dir() else ""

    def abort(self) -> None:
        """Drop the staged files (if not committed) and release the lock; --out is left as it was."""
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the fd releases the flock
            self._lock_fd = None
