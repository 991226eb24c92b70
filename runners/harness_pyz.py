"""Build the on-device harness (runners/harness/) into one zipapp, deterministically.

The same sources always give the same bytes (fixed timestamps and permissions, sorted entries, stored
uncompressed so no zlib version can change them, no compiled files), so its sha256 names it: runners push it
once per content and the device cache keeps working. Host side only; the zipapp itself never imports edgekit.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Dict, Optional

PACKAGE_DIR = Path(__file__).resolve().parent / "harness"
SHEBANG = b"#!/usr/bin/env python3\n"
# the zipapp's entry point: the package is `harness` inside the archive (relative imports make that work)
ENTRY = b"import sys\n\nfrom harness.__main__ import main\n\nsys.exit(main())\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry

_built: Dict[str, Path] = {}


def archive_files(extra: Optional[Dict[str, bytes]] = None) -> Dict[str, bytes]:
    """Archive name -> bytes: every .py of the harness package (no __pycache__), `extra`, and __main__.py."""
    files = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        if "__pycache__" not in path.parts:
            files["harness/" + path.relative_to(PACKAGE_DIR).as_posix()] = path.read_bytes()
    files.update(extra or {})
    files["__main__.py"] = ENTRY
    return files


def build_bytes(extra: Optional[Dict[str, bytes]] = None) -> bytes:
    """The zipapp's bytes: shebang + a zip of archive_files() in sorted order with fixed metadata."""
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in sorted(archive_files(extra).items()):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.create_system = 3  # unix, whatever the building OS
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED
            z.writestr(info, data)
    return buf.getvalue()


def cache_root() -> Path:
    from platformdirs import user_cache_dir

    # absolute: runners start the harness from another working directory (a relative EDGEKIT_CACHE_DIR broke it)
    return Path(os.path.abspath(os.environ.get("EDGEKIT_CACHE_DIR") or user_cache_dir("edgekit"))) / "harness"


def harness_pyz(dest_dir: Optional[Path] = None, extra: Optional[Dict[str, bytes]] = None) -> Path:
    """Path of the built zipapp `<dir>/<sha256[:16]>/harness.pyz`, written atomically once per content."""
    data = build_bytes(extra)
    sha = hashlib.sha256(data).hexdigest()
    root = Path(os.path.abspath(dest_dir)) if dest_dir is not None else cache_root()
    key = f"{root}:{sha}"
    if key in _built and _built[key].is_file():
        return _built[key]
    from edgekit.core.fsutil import atomic_write_bytes

    path = root / sha[:16] / "harness.pyz"
    if not (path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha):
        atomic_write_bytes(path, data)
        path.chmod(0o755)
    _built[key] = path
    return path
