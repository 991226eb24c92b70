"""No module of edgekit (incl. edgekit.converters and edgekit.runners) imports its importer, directly or through a chain.

The walk is static (ast): every `import` / `from ... import` anywhere in a module counts, including the lazy ones
inside functions, because a lazy import still makes data flow back upstream."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[2]
# installed package name -> source folder (pyproject's package-dir mapping)
PACKAGE_DIRS = {"edgekit": ROOT / "edgekit", "edgekit.converters": ROOT / "converters", "edgekit.runners": ROOT / "runners"}


def module_files() -> Dict[str, Path]:
    """Every module under the mapped folders, by its installed dotted name."""
    mods: Dict[str, Path] = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = path
    return mods


def _resolve(name: str, mods: Dict[str, Path]) -> str | None:
    """The longest known module that `name` (a module or module.attribute) refers to."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(mods: Dict[str, Path]) -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                dep = _resolve(t, mods)
                # importing a submodule runs its package's __init__ too, but an __init__ that only holds a docstring
                # adds no edge worth following; the package itself is an edge only when named directly
                if dep and dep != mod and not (mod.startswith(dep + ".") and mods[dep].name == "__init__.py"):
                    graph[mod].add(dep)
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_walk_sees_the_whole_tree():
    mods = module_files()
    graph = import_graph(mods)
    # a walk that found nothing would pass trivially: make sure it sees the core, converters and runners and their edges
    assert {"edgekit.cli.main", "edgekit.converters.export", "edgekit.runners.ssh"} <= set(mods)
    assert "edgekit.runners.sshconf" in graph["edgekit.runners.ssh"]


def test_detector_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = find_cycles(import_graph(module_files()))
    assert not cycles, "import cycles (each list imports itself through a chain): " + "; ".join(" <-> ".join(c) for c in cycles)
