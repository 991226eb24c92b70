"""Fakes for sensors that cannot exist here, fed with real captures (tests/fixtures): a `tegrastats` on PATH."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

TEGRASTATS_REPLAY = """
import sys, time
# Replays a real capture like `tegrastats --interval N` does: one line per interval, forever.
interval = int(sys.argv[sys.argv.index('--interval') + 1]) / 1000.0
lines = [l.rstrip('\\n') for l in open({fixture!r}) if l.strip()]
i = 0
while True:
    sys.stdout.write(lines[i % len(lines)] + '\\n'); sys.stdout.flush()
    i += 1
    time.sleep(interval)
"""


def fake_tool(bindir: Path, name: str, body: str) -> Path:
    """An executable `name` in `bindir` running `body` with this Python."""
    bindir.mkdir(parents=True, exist_ok=True)
    p = bindir / name
    p.write_text(f"#!{sys.executable}\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


def fake_tegrastats(bindir: Path, capture: Path) -> Path:
    return fake_tool(bindir, "tegrastats", TEGRASTATS_REPLAY.format(fixture=str(capture)))
