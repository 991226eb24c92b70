"""Shared by the Android tests: the real model they embed, and skip-or-fail for missing tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[1] / "fixtures"
MODEL = FIX / "face_detection_front.tflite"


def require_or_skip(ok: bool, why: str) -> None:
    """In CI (EDGEKIT_REQUIRE_ANDROID=1) a missing tool fails the run; elsewhere the test is skipped with the reason."""
    if ok:
        return
    if os.environ.get("EDGEKIT_REQUIRE_ANDROID"):
        pytest.fail(f"EDGEKIT_REQUIRE_ANDROID is set but {why}: .ci/run must install it")
    pytest.skip(why)
