"""Atomic file writes and hashing: a crash never leaves a half-written artifact or report."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

from edgekit.core.errors import OutputError

PathLike = Union[str, Path]


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        # mkstemp makes 0600 files; the renamed result must have the mode a plain open() would give (umask)
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def apply_umask_dir(path: Path) -> None:
    """mkdtemp makes 0700 directories; give a directory that becomes user-visible output the umask's mode."""
    os.chmod(path, 0o777 & ~current_umask())


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_beside(path)
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}",
            hint="choose a writable location (check permissions and free space)",
        ) from exc
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", hint="check free space and permissions") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: PathLike, dst: PathLike) -> Path:
    """Copy `src` to `dst` via a temp file and rename; `dst` is either absent or complete."""
    dst = Path(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_beside(dst)
    except OSError as exc:
        raise OutputError(f"cannot write {dst}: {exc.strerror or exc}", hint="choose a writable location") from exc
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot copy {src} to {dst}: {exc.strerror or exc}", hint="check free space and permissions") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def ensure_writable_dir(path: PathLike, what: str = "output directory") -> Path:
    """Create `path` if needed and prove it is writable before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = _tmp_beside(path / "probe")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"{what} {path} is not writable: {exc.strerror or exc}",
            hint=f"pass a different directory, or fix the permissions of {path}",
        ) from exc
    return path
