"""One-off builder for sentences.txt: real English prose sentences extracted from text on this machine.

Run once (`python edgekit/zoo/data/build_sentences.py`); the output is committed, so edgekit never runs this at
install or test time. Sources, in order: Python standard-library docstrings, long descriptions in installed
packages' METADATA, Debian /usr/share/doc README/NEWS files. Code, URLs and markdown noise are filtered out.
"""

from __future__ import annotations

import ast
import glob
import gzip
import hashlib
import re
import sys
import sysconfig
from pathlib import Path

OUT = Path(__file__).with_name("sentences.txt")
MAX_PER_FILE = 8
MIN_WORDS, MAX_WORDS = 6, 40

_SPLIT = re.compile(r"(?<=[a-z0-9\)][.!?])\s+(?=[A-Z])")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_BAD = re.compile(
    r"https?:|www\.|@|`|::|->|=>|==|\$|[{}\[\]<>|#*\\=_~^]|\.\.\.|\b[a-z]+\.[a-z_]+\(|\(\)|\be\.g\b|\bi\.e\b|\betc\b"
    r"|\bcf\b|\bvs\b|\.py\b|\.txt\b|\bsee also\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]*[,;:.!?]?$|^\d{1,4}[,.;:]?$|^\(?[A-Za-z][A-Za-z'\-]*\)?[,;:.!?]?$")


def _paragraphs(text: str):
    """Yield prose paragraphs: drop fenced/indented code, doctest lines, tables and headings."""
    in_fence = False
    block: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            block = []
            continue
        if in_fence:
            continue
        stripped = line.strip()
        if not stripped or raw.startswith(("    ", "\t")) or stripped.startswith((">>>", "...", "$ ", "|", "+-", "#", "=", "-", "*", ".. ", ":")):
            if block:
                yield " ".join(block)
            block = []
            continue
        block.append(stripped)
    if block:
        yield " ".join(block)


def _sentences(text: str):
    """Split prose into candidate sentences that look like plain English."""
    for para in _paragraphs(text):
        para = _MD_LINK.sub(r"\1", para)
        para = re.sub(r"\s+", " ", para)
        for sent in _SPLIT.split(para):
            sent = sent.strip()
            if not sent or not sent[0].isupper() or sent[-1] not in ".!?":
                continue
            if _BAD.search(sent) or not sent.isascii():
                continue
            words = sent.split()
            if not MIN_WORDS <= len(words) <= MAX_WORDS:
                continue
            if sum(1 for w in words if _WORD.match(w)) < 0.95 * len(words):
                continue
            if sum(1 for w in words if w[:1].isupper()) > 0.4 * len(words):  # titles, name lists
                continue
            if sum(c.isalpha() for c in sent) < 0.75 * len(sent):
                continue
            yield sent


def _stdlib_docs():
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if any(p in path.parts for p in ("test", "tests", "site-packages", "idle_test", "lib2to3")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    docs.append(doc)
        yield f"python-stdlib:{path.relative_to(root)}", "\n\n".join(docs)


def _metadata_docs():
    purelib = Path(sysconfig.get_paths()["purelib"])
    for path in sorted(purelib.glob("*.dist-info/METADATA")):
        text = path.read_text(encoding="utf-8", errors="replace")
        _, _, body = text.partition("\n\n")
        yield f"pypi:{path.parent.name}", body


def _debian_docs():
    for pattern in ("/usr/share/doc/*/README*", "/usr/share/doc/*/NEWS*"):
        for name in sorted(glob.glob(pattern)):
            path = Path(name)
            if path.name.endswith("changelog.gz") or path.is_dir():
                continue
            try:
                data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
            except OSError:
                continue
            yield f"debian:{path.relative_to('/usr/share/doc')}", data.decode("utf-8", errors="replace")


def main() -> int:
    seen: set[str] = set()
    rows: list[str] = []
    counts: dict[str, int] = {}
    for family in (_stdlib_docs, _metadata_docs, _debian_docs):
        for source, text in family():
            taken = 0
            for sent in _sentences(text):
                key = re.sub(r"[^a-z]", "", sent.lower())
                if key in seen:
                    continue
                seen.add(key)
                rows.append(sent)
                taken += 1
                if taken >= MAX_PER_FILE:
                    break
            counts[source.split(":")[0]] = counts.get(source.split(":")[0], 0) + taken
    header = [
        "# Real English sentences extracted from prose on a Debian 12 / Python 3.11 machine by build_sentences.py.",
        "# Sources (sentence counts): " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".",
        "# Python stdlib docstrings (PSF license), PyPI package long descriptions (each package's own license),",
        "# Debian /usr/share/doc README/NEWS files. Deduplicated, 6-40 words, no code, URLs or markup.",
        f"# sha256 of the sentence lines: {hashlib.sha256(chr(10).join(rows).encode()).hexdigest()}",
    ]
    OUT.write_text("\n".join(header + rows) + "\n", encoding="utf-8")
    print(f"{len(rows)} sentences -> {OUT} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
