"""One-off builder for distill_sentences.txt: a larger, varied English corpus for distilling zoo:minilm.

Run once (`python edgekit/zoo/data/build_distill_corpus.py`); the output is committed, so edgekit never runs this at
install or test time. It reuses the prose filters of build_sentences.py and reads text already on the machine:
Python standard-library and installed packages' docstrings, installed packages' METADATA, botocore's AWS API
documentation (service-2.json.gz) and Debian /usr/share/doc text files.

Held-out guarantee: the corpus shares no sentence with sentences.txt (any split), and no source file that supplied
a sentence of the 'eval' or 'calib' split of sentences.txt contributes to it at all (document-level disjointness),
so the distillation report's held-out cosine is measured on text the student never saw, nor its neighbours.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import html
import importlib.util
import json
import re
import sys
import sysconfig
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

HERE = Path(__file__).resolve().parent
OUT = HERE / "distill_sentences.txt"
MAX_BYTES = 1_900_000  # keep the shipped file under 2 MB
PER_FILE = {"python-stdlib": 40, "python-packages": 12, "botocore": 30, "pypi": 12, "debian": 25}
SHARE = {"python-stdlib": 0.22, "python-packages": 0.30, "botocore": 0.14, "pypi": 0.10, "debian": 0.24}

_spec = importlib.util.spec_from_file_location("_edgekit_build_sentences", HERE / "build_sentences.py")
bs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bs)  # type: ignore[union-attr]

_SKIP_PARTS = {"test", "tests", "testing", "idle_test", "lib2to3", "_vendor", "vendored", "__pycache__"}


def key(sent: str) -> str:
    return re.sub(r"[^a-z]", "", sent.lower())


def _docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError, OSError):
        return ""
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                docs.append(doc)
    return "\n\n".join(docs)


def _py_tree(root: Path, family: str, exclude_site: bool) -> Iterator[Tuple[str, str, str]]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS & set(rel.parts) or (exclude_site and "site-packages" in rel.parts):
            continue
        yield family, f"{family}:{rel}", _docstrings(path)


def _botocore() -> Iterator[Tuple[str, str, str]]:
    purelib = Path(sysconfig.get_paths()["purelib"])
    tag = re.compile(r"<[^>]+>")

    def walk(obj, out: List[str]) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == "documentation" and isinstance(v, str):
                    out.append(html.unescape(tag.sub(" ", v.replace("</p>", "\n\n"))))
                else:
                    walk(v, out)
        elif isinstance(obj, list):
            for v in obj:
                walk(v, out)

    for path in sorted((purelib / "botocore" / "data").glob("*/*/service-2.json.gz")):
        docs: List[str] = []
        try:
            walk(json.loads(gzip.open(path).read()), docs)
        except (OSError, ValueError):
            continue
        yield "botocore", f"botocore:{path.parent.parent.name}", "\n\n".join(docs)


def _debian() -> Iterator[Tuple[str, str, str]]:
    for path in sorted(Path("/usr/share/doc").rglob("*")):
        if not path.is_file() or path.is_symlink() or path.name.startswith("changelog"):
            continue
        if path.suffix not in ("", ".gz", ".txt", ".md", ".rst") and not path.name.startswith(("README", "NEWS", "FAQ", "TODO")):
            continue
        try:
            data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError):
            continue
        if b"\0" in data[:4096]:
            continue
        yield "debian", f"debian:{path.relative_to('/usr/share/doc')}", data.decode("utf-8", errors="replace")


def _sources() -> Iterator[Tuple[str, str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    yield from _py_tree(stdlib, "python-stdlib", exclude_site=True)
    for pkg in sorted(p for p in purelib.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", ".egg-info")) and p.name != "edgekit"):
        for family, source, text in _py_tree(pkg, "python-packages", exclude_site=False):
            yield family, f"{family}:{pkg.name}/{source.split(':', 1)[1]}", text
    yield from _botocore()
    for source, text in bs._metadata_docs():
        yield "pypi", source, text
    yield from _debian()


def _candidates(cache: "str | None") -> List[Tuple[str, str, List[str]]]:
    """(family, source, candidate sentences) for every source; `--cache FILE` keeps them between runs (slow to parse)."""
    import pickle

    if cache and Path(cache).exists():
        return pickle.loads(Path(cache).read_bytes())
    rows = [(family, source, list(bs._sentences(text))) for family, source, text in _sources()]
    if cache:
        Path(cache).write_bytes(pickle.dumps(rows))
    return rows


def main() -> int:
    shipped = [ln.strip() for ln in (HERE / "sentences.txt").read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    shipped_keys = {key(s) for s in shipped}
    # eval/calib membership exactly as edgekit.zoo.datasets assigns it (hash buckets 0-3)
    from edgekit.zoo.datasets import stable_hash  # edgekit installed

    held_keys = {key(s) for s in shipped if stable_hash("sentence:" + s) % 10 in (0, 1, 2, 3)}
    seen = set(shipped_keys)
    pools: Dict[str, List[str]] = {f: [] for f in PER_FILE}
    dropped_files = 0
    for family, source, cands in _candidates(sys.argv[2] if sys.argv[1:2] == ["--cache"] else None):
        if any(key(s) in held_keys for s in cands):
            dropped_files += 1  # this file fed the held-out splits: keep none of its text
            continue
        taken = 0
        for sent in cands:
            k = key(sent)
            if k in seen:
                continue
            seen.add(k)
            pools[family].append(sent)
            taken += 1
            if taken >= PER_FILE[family]:
                break
    # deterministic, source-balanced selection under the size cap
    budget = MAX_BYTES - 2000
    chosen: List[str] = []
    counts: Dict[str, int] = {}
    rest: List[Tuple[str, str]] = []
    for family, share in SHARE.items():
        ranked = sorted(pools[family], key=lambda s: hashlib.sha256(s.encode()).hexdigest())
        room, n = int(budget * share), 0
        for i, s in enumerate(ranked):
            if room - len(s) - 1 < 0:
                rest += [(family, x) for x in ranked[i:]]
                break
            room -= len(s) + 1
            chosen.append(s)
            n += 1
        counts[family] = n
    room = budget - sum(len(s) + 1 for s in chosen)  # a family short of its share leaves room for the others
    for family, s in sorted(rest, key=lambda fs: hashlib.sha256(fs[1].encode()).hexdigest()):
        if room - len(s) - 1 < 0:
            break
        room -= len(s) + 1
        chosen.append(s)
        counts[family] += 1
    chosen.sort(key=lambda s: hashlib.sha256(("order:" + s).encode()).hexdigest())
    header = [
        "# Real English sentences for distilling zoo:minilm, extracted by build_distill_corpus.py (Debian 12, Python 3.11).",
        "# Sources (sentence counts): " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".",
        "# Python docstrings (PSF / each package's license), PyPI long descriptions, botocore AWS API docs (Apache-2.0),",
        "# Debian /usr/share/doc text. Same filters as sentences.txt; shares no sentence with it and no source file with",
        f"# its eval/calib splits ({dropped_files} such files skipped). Available before the cap: "
        + ", ".join(f"{k} {len(v)}" for k, v in pools.items()) + ".",
        f"# sha256 of the sentence lines: {hashlib.sha256(chr(10).join(chosen).encode()).hexdigest()}",
    ]
    OUT.write_text("\n".join(header + chosen) + "\n", encoding="utf-8")
    print(f"{len(chosen)} sentences, {OUT.stat().st_size} bytes -> {OUT} ({counts}); pools {[(k, len(v)) for k, v in pools.items()]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
