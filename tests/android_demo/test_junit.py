"""JUnit 4 tests of the demo app's logic (statistics, JSON result, intent extras, input spec) on the plain JDK.

The app's classes that import no android.* are compiled with the test classes; the statistics are checked against
the harness's own numpy statistics, and the app's result document is validated by edgekit's BenchmarkResult."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from android_util import require_or_skip  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "android_demo"
JUNIT = [Path("/usr/share/java/junit4.jar"), Path("/usr/share/java/hamcrest-core.jar")]


def _pure_java_sources():
    return sorted(p for p in (APP / "src").rglob("*.java") if "import android." not in p.read_text())


@pytest.fixture(scope="module")
def junit_run(tmp_path_factory, demo_apk):
    require_or_skip(all(j.is_file() for j in JUNIT), "junit4 is not installed (apt-get install junit4)")
    require_or_skip(shutil.which("javac") is not None, "no JDK (apt-get install default-jdk-headless)")
    from edgekit.core.registry import harness_module

    bench = harness_module("bench")
    tmp = tmp_path_factory.mktemp("junit")
    rng = np.random.default_rng(3)
    cases = []
    for n in (1, 2, 7, 50, 1001):
        s = [float(x) for x in rng.lognormal(1.5, 0.4, size=n)]
        cases.append({"samples_ms": s, "stats": bench.latency_stats(s)})
    (tmp / "stats.json").write_text(json.dumps(cases))
    with zipfile.ZipFile(demo_apk) as z:
        (tmp / "input_spec.json").write_bytes(z.read("assets/input_spec.json"))
    classes = tmp / "classes"
    tests = sorted((APP / "test").rglob("*Test.java"))
    cp = ":".join(map(str, JUNIT))
    comp = subprocess.run(["javac", "-encoding", "UTF-8", "-nowarn", "-d", str(classes), "-cp", cp]
                          + [str(p) for p in _pure_java_sources() + tests], capture_output=True, text=True, timeout=300)
    assert comp.returncode == 0, comp.stderr[-3000:]
    names = ["dev.edgekit.demo." + p.stem for p in tests]
    run = subprocess.run(["java", f"-Dedgekit.stats.fixture={tmp / 'stats.json'}", f"-Dedgekit.input_spec={tmp / 'input_spec.json'}",
                          f"-Dedgekit.result.out={tmp / 'result.json'}", "-cp", f"{classes}:{cp}", "org.junit.runner.JUnitCore", *names],
                         capture_output=True, text=True, timeout=300)
    return run, tmp, names


def test_the_app_logic_is_pure_java():
    names = {p.stem for p in _pure_java_sources()}
    assert {"Json", "Stats", "BenchConfig", "InputSpec", "RunRecord", "ResultJson", "Engine"} <= names
    assert "MainActivity" not in names and "WasmEngine" not in names


def test_junit_suite_passes(junit_run):
    run, _, names = junit_run
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "OK (" in run.stdout and len(names) == 5


def test_app_result_is_a_valid_benchmark_result(junit_run):
    from edgekit.core.results import BenchmarkResult

    _, tmp, _ = junit_run
    r = BenchmarkResult.model_validate_json((tmp / "result.json").read_text())
    assert r.runtime.name == "litert-wasm"
    assert r.timing.runs == len(r.timing.samples_ms) == 4
    assert r.timing.stats.median_ms == pytest.approx(5.5)
    assert r.energy.available is False and "battery" in r.energy.reason
