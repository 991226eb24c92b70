"""The emulated arm64 board (tests/boards/arm64-board) as a pytest fixture, and the sensor stand-ins installed on it.

The board must be up (`tests/boards/arm64-board up`, as .ci/run does). If .ci/run could not build it for an
outside reason it exports EDGEKIT_ARM64_UNAVAILABLE and these tests skip naming it; with EDGEKIT_REQUIRE_ARM64
set (CI, board up) a board that is not reachable fails them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[1] / "fixtures"
STATE = Path(os.environ.get("EDGEKIT_BOARDS_CACHE", str(Path.home() / ".cache/edgekit-boards"))) / "arm64-state"


class Board:
    """Where the board is: its ssh config (alias edgekit-arm64), rootfs on this machine, a per-session work dir."""

    alias = "edgekit-arm64"

    def __init__(self, env: dict):
        self.rootfs = Path(env["ROOTFS"])
        self.port = int(env["PORT"])
        self.ssh_config = Path(env["SSH_CONFIG"])
        self.fixtures_bin = Path(env["FIXTURES_BIN"])
        # one work dir per test session: nothing from an earlier run (or another user of the board) is reused
        self.workdir = f"~/edgekit-test-{uuid.uuid4().hex[:8]}"

    def ssh_args(self, workdir=None):
        return ["--host", self.alias, "--ssh-config", str(self.ssh_config), "--remote-workdir", workdir or self.workdir]

    def ssh_kwargs(self, workdir=None):
        return {"ssh_config": str(self.ssh_config), "workdir": workdir or self.workdir, "connect_timeout": 30.0}

    def on_board(self, path: str) -> Path:
        """A board path as seen from this machine (the rootfs is a directory here)."""
        return self.rootfs / path.lstrip("/")

    @contextlib.contextmanager
    def sensors(self, kind: str):
        """Install stand-ins for a board's sensor tools that replay real captures from tests/fixtures; remove after."""
        share = self.on_board("/opt/edgekit-fixtures/share")
        share.mkdir(parents=True, exist_ok=True)
        made = []
        if kind == "pi5":
            shutil.copy(FIX / "rpi5_vcgencmd_pmic_read_adc_load.txt", share / "pmic_read_adc.txt")
            made.append(self._tool("vcgencmd", VCGENCMD))
        elif kind == "jetson-orin":
            shutil.copy(FIX / "tegrastats_orin_nano_jp6_lines.txt", share / "tegrastats.txt")
            made.append(self._tool("tegrastats", TEGRASTATS))
        else:
            raise ValueError(kind)
        try:
            yield
        finally:
            for p in made:
                p.unlink(missing_ok=True)

    def _tool(self, name: str, body: str) -> Path:
        self.fixtures_bin.mkdir(parents=True, exist_ok=True)
        p = self.fixtures_bin / name
        p.write_text(body)
        p.chmod(0o755)
        return p


# Stand-ins run by the board's own aarch64 sh / python3 (so they are ARM code too).
VCGENCMD = '''#!/bin/sh
# test stand-in for the Pi 5 `vcgencmd`: replays a real `pmic_read_adc` capture (tests/fixtures). A shell script:
# the board's aarch64 dash starts in milliseconds under qemu, a Python stand-in took ~1 s per read under load.
case "$*" in
    get_throttled) echo "throttled=0x0" ;;  # the documented reply of an unthrottled Pi
    pmic_read_adc) cat /opt/edgekit-fixtures/share/pmic_read_adc.txt ;;
    *) echo "vcgencmd stand-in: unsupported: $*" >&2; exit 1 ;;
esac
'''

TEGRASTATS = '''#!/usr/bin/python3
# test stand-in for Jetson `tegrastats --interval N`: replays a real capture (tests/fixtures), one line per interval
import sys, time
args = sys.argv[1:]
interval = int(args[args.index("--interval") + 1]) / 1000.0 if "--interval" in args else 1.0
lines = [l.rstrip("\\n") for l in open("/opt/edgekit-fixtures/share/tegrastats.txt") if l.strip()]
i = 0
while True:
    sys.stdout.write(lines[i % len(lines)] + "\\n")
    sys.stdout.flush()
    i += 1
    time.sleep(interval)
'''


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def board():
    env_file = STATE / "board.env"
    env = {}
    if env_file.is_file():
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    if env and _reachable(int(env["PORT"])):
        b = Board(env)
        yield b
        # the rootfs is the cached board: do not let each test session's venv and uploads pile up in it
        shutil.rmtree(b.on_board("/home/edgekit/" + b.workdir[2:]), ignore_errors=True)
        return
    if os.environ.get("EDGEKIT_ARM64_UNAVAILABLE"):
        pytest.skip(f"arm64 board unavailable: {os.environ['EDGEKIT_ARM64_UNAVAILABLE']}")
    if os.environ.get("EDGEKIT_REQUIRE_ARM64"):
        pytest.fail(f"EDGEKIT_REQUIRE_ARM64 is set but the arm64 board is not up ({env_file} missing or sshd not listening)")
    pytest.skip("the arm64 board is not up: run `tests/boards/arm64-board up` (as root) first")


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
