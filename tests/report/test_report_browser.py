"""report.html in a real browser: headless Chromium (Debian package) renders the report of a real deploy.

The deploy is real (light_shufflenet from the onnx wheel, variant search on onnxruntime, benchmark by the harness on
this machine). The one part that cannot exist here, a Jetson power sensor, is a `tegrastats` on PATH replaying
the real Jetson Nano capture tests/fixtures/tegrastats_nano_jp4_lines.txt, so the energy chart is fed by the
harness's own sampler. Fails on any console message; checks every chart is present and drawn; keeps a screenshot
($EDGEKIT_TEST_ARTIFACTS, else the test's tmp dir).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_sensors import fake_tegrastats
from reporthelp import light_model

pytestmark = pytest.mark.slow

FIX = Path(__file__).resolve().parents[1] / "fixtures"
CHARTS = ("latency-histogram", "latency-series", "power-trace", "variants", "step-timeline")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]

PROFILE = """
name: x86-cpu-replayed-sensor
extends: x86-cpu
description: this machine, with a captured Jetson Nano tegrastats replayed as its power sensor
runtimes: [onnxruntime]
energy: {source: tegrastats, interval_ms: 50}
power_modes: [{name: MAXN-replayed, watts: 10}]
power_mode: MAXN-replayed
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("EDGEKIT_REQUIRE_CHROMIUM"):
        pytest.fail("chromium not found but EDGEKIT_REQUIRE_CHROMIUM is set (apt-get install chromium)")
    pytest.skip("chromium not installed (apt-get install -y --no-install-recommends chromium)")


def _browser(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile_dir = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"  # fresh each run
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile_dir}", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    bindir = tmp / "bin"
    fake_tegrastats(bindir, FIX / "tegrastats_nano_jp4_lines.txt")
    (tmp / "profile.yaml").write_text(PROFILE)
    env = dict(os.environ)
    env.pop("EDGEKIT_DEBUG", None)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    out = tmp / "out"
    r = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "deploy", str(light_model("shufflenet")), "--profile", str(tmp / "profile.yaml"),
                        "--precision", "auto", "--out", str(out), "--history", str(tmp / "h.sqlite"), "--warmup-seconds", "0.2",
                        "--min-runs", "20", "--min-seconds", "1.5", "-q"], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    return out / "report.html"


def test_report_renders_in_headless_chromium(real_report, tmp_path):
    exe = chromium()
    html = real_report.read_text()
    assert len(html.encode()) < 100_000  # inline SVG keeps the whole report small
    dom = _browser(exe, tmp_path, "--dump-dom", real_report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console
    for name in CHARTS:
        m = re.search(rf'<svg data-chart="{name}"[^>]*>(.*?)</svg>', dom.stdout, re.S)
        assert m, f"chart {name} missing from the rendered DOM"
        assert re.search(r"<(rect|polyline|circle|line)\b", m.group(1)), f"chart {name} is empty"
    power = re.search(r'<svg data-chart="power-trace".*?</svg>', dom.stdout, re.S).group(0)
    assert 'class="timed-window"' in power and 'class="idle-baseline"' in power and "mJ / inference" in power
    assert 'class="variant chosen"' in dom.stdout and "MAXN-replayed" in dom.stdout
    art_dir = Path(os.environ.get("EDGEKIT_TEST_ARTIFACTS") or tmp_path)
    art_dir.mkdir(parents=True, exist_ok=True)
    shot = art_dir / "report-screenshot.png"
    r = _browser(exe, tmp_path, "--window-size=1000,2400", f"--screenshot={shot}", real_report.as_uri())
    assert r.returncode == 0 and shot.stat().st_size > 20_000, r.stderr[-2000:]
    assert not [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
