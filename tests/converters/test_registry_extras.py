"""Every step's missing-dependency hint names a pip extra that pyproject.toml really declares."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgekit.core.registry import STEPS, get_step

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

EXTRAS = set(tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@pytest.mark.parametrize("name", sorted(STEPS))
def test_step_requires_name_declared_extras(name):
    for module, extra in get_step(name).requires:
        assert extra in EXTRAS, f"step {name}: module {module} points at extra '{extra}', not in {sorted(EXTRAS)}"
