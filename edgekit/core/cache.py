"""Cache entries that are verified file by file on every hit and replaced (never kept) by a fresh build.

Step entries (entry.json: one artifact and its record) and shared entries (files.json: several files one tool run
wrote, e.g. every precision of one onnx2tf conversion) live side by side under <cache>/<2 hex>/<key>."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Optional, Tuple

from edgekit.core import tempdirs
from edgekit.core.artifact import Artifact
from edgekit.core.errors import OutputError
from edgekit.core.fsutil import atomic_write_text, sha256_file
from edgekit.core.results import StepRecord

ENTRY = "entry.json"
BUILDING = ".tmp-"  # a step's work dir, renamed into place as the entry when it succeeds
STALE = ".stale-"  # an entry being replaced


def new_build_dir(entry: Path) -> Path:
    """The temp dir a step builds `entry` in (same file system, so publishing it is a rename)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    return tempdirs.make(BUILDING, entry.parent, entry.name[:12] + "-")


def sweep(cache_dir: Path) -> int:
    """Remove build/stale dirs that killed runs left in the cache (owner PID dead, or unknown and over a day old)."""
    n = 0
    try:
        shards = [p for p in Path(cache_dir).iterdir() if len(p.name) == 2 and p.is_dir()]
    except OSError:
        return 0
    for shard in shards:
        n += len(tempdirs.sweep(shard, BUILDING)) + len(tempdirs.sweep(shard, STALE))
    return n


class Damaged(Exception):
    """A cache entry exists but cannot be trusted; `reason` says which file and why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _relocate(art: Artifact, old: Path, new: Path) -> Artifact:
    def move(p: Path) -> Path:
        try:
            return new / Path(p).relative_to(old)
        except ValueError:
            return p

    return art.model_copy(update={"path": move(art.path), "extra_files": [move(p) for p in art.extra_files]})


def _seal(body) -> str:
    """Checksum of entry.json's body: a flipped byte in the metadata is caught like one in a model file."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def file_hashes(art: Artifact, root: Path) -> Dict[str, str]:
    """sha256 of every file of `art` (main and extras), keyed by its path relative to `root`."""
    return {str(Path(f).relative_to(root)): sha256_file(f) for f in art.files}


def load(entry: Path) -> Optional[Tuple[Artifact, StepRecord]]:
    """The entry's artifact and record, after checking every file against its recorded sha256.

    None when there is no entry; Damaged when there is one that must not be served.
    """
    meta = entry / ENTRY
    if not entry.exists():
        return None
    if not meta.exists():
        raise Damaged(f"{ENTRY} is missing")
    try:
        sealed = json.loads(meta.read_text())
        data = sealed["body"]
        if _seal(data) != sealed["sha256"]:
            raise Damaged(f"{ENTRY} does not match its own checksum")
        art = _relocate(Artifact.model_validate(data["artifact"]), Path(data["dir"]), entry)
        record = StepRecord.model_validate(data["record"])
        recorded: Dict[str, str] = data["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Damaged(f"{ENTRY} is unreadable ({type(exc).__name__})") from None
    for f in art.files:
        try:
            rel = str(Path(f).relative_to(entry))
        except ValueError:
            raise Damaged(f"{f} lies outside the entry") from None
        if rel not in recorded:
            raise Damaged(f"{rel} has no recorded sha256")
        try:
            actual = sha256_file(f)
        except OSError as exc:
            raise Damaged(f"{rel} is unreadable ({exc.strerror or exc})") from None
        if actual != recorded[rel]:
            raise Damaged(f"{rel} does not match its recorded sha256")
    if sha256_file(art.path) != art.sha256:
        raise Damaged(f"{art.path.name} does not match the artifact's sha256")
    return art, record


def store(tmp: Path, entry: Path, art: Artifact, record: StepRecord, cache_dir: Path) -> Artifact:
    """Publish a fresh build as `entry`, replacing whatever is there: a rebuild always wins over an old entry."""
    body = {"dir": str(tmp), "artifact": art.to_manifest(), "record": record.model_dump(mode="json"), "files": None}
    try:
        body["files"] = file_hashes(art, tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _store_error(cache_dir, exc) from exc
    _publish(tmp, entry, ENTRY, body, cache_dir)
    return _relocate(art, tmp, entry)


def _store_error(cache_dir: Path, exc: OSError) -> OutputError:
    return OutputError(
        f"cannot store a step result in the cache {cache_dir}: {exc.strerror or exc}",
        hint="free some space or pass --cache-dir to a writable place with room",
    )


def _publish(tmp: Path, entry: Path, meta_name: str, body: dict, cache_dir: Path) -> None:
    """Seal `body` into tmp/meta_name, then rename tmp into place as `entry` (replacing an old entry atomically)."""
    try:
        atomic_write_text(tmp / meta_name, json.dumps({"sha256": _seal(body), "body": body}, indent=1))
        stale: Optional[Path] = None
        for _ in range(3):
            try:
                os.replace(tmp, entry)  # succeeds when entry is absent or an empty dir
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # move the old entry aside (atomic), then publish ours; readers never see a half-replaced entry
                stale = tempdirs.make(STALE, entry.parent, entry.name[:12])
                try:
                    os.replace(entry, stale / "old")
                except FileNotFoundError:
                    pass  # another process moved it first
        else:
            raise OSError(errno.ENOTEMPTY, "the entry kept being recreated by another process")
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _store_error(cache_dir, exc) from exc


# ---- entries of several files that later steps share (one onnx2tf run serves fp32, fp16 and INT8 TFLite steps)

FILES = "files.json"


def store_files(tmp: Path, entry: Path, meta: Dict[str, object], cache_dir: Path) -> Dict[str, str]:
    """Publish every file in `tmp` (a dir from new_build_dir) as `entry`, each with its sha256; returns {name: sha256}."""
    try:
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != FILES}
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _store_error(cache_dir, exc) from exc
    _publish(tmp, entry, FILES, {"files": files, "meta": meta}, cache_dir)
    return files


def load_files(entry: Path) -> Optional[Tuple[Dict[str, str], Dict[str, object]]]:
    """({name: sha256}, meta) of a shared entry whose index is intact; None when there is none, Damaged when it
    cannot be trusted. Its files are checked one by one when they are copied out (copy_verified)."""
    meta = entry / FILES
    if not entry.exists():
        return None
    if not meta.exists():
        raise Damaged(f"{FILES} is missing")
    try:
        sealed = json.loads(meta.read_text())
        body = sealed["body"]
        if _seal(body) != sealed["sha256"]:
            raise Damaged(f"{FILES} does not match its own checksum")
        files = {str(k): str(v) for k, v in body["files"].items()}
        return files, dict(body["meta"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Damaged(f"{FILES} is unreadable ({type(exc).__name__})") from None


def copy_verified(entry: Path, files: Dict[str, str], name: str, dest: Path) -> Path:
    """Copy entry/name to `dest` and check the COPY against the recorded sha256 (a concurrent replacement or a
    flipped byte cannot slip in between a check and a copy); Damaged, and no `dest`, when it differs."""
    from edgekit.core.fsutil import atomic_copy

    if name not in files:
        raise Damaged(f"{name} has no recorded sha256")
    if not (entry / name).is_file():
        raise Damaged(f"{name} is missing")
    try:
        atomic_copy(entry / name, dest)
    except OutputError as exc:
        if (entry / name).is_file():
            raise  # writing `dest` failed (space, permissions): not the entry's fault
        raise Damaged(f"{name} vanished while it was copied (replaced by another process?)") from None
    if sha256_file(dest) != files[name]:
        Path(dest).unlink(missing_ok=True)
        raise Damaged(f"{name} does not match its recorded sha256")
    return Path(dest)


def discard(entry: Path) -> None:
    """Remove a damaged entry (best effort: a concurrent writer may already have replaced it)."""
    if not entry.exists():
        return
    aside = tempdirs.make(STALE, entry.parent, entry.name[:12])
    try:
        os.replace(entry, aside / "old")
    except OSError:
        pass
    shutil.rmtree(aside, ignore_errors=True)
