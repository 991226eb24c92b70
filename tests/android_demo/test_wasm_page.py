"""The app's litert-wasm benchmark page, taken out of a built APK, runs in headless Chromium and its outputs match
desktop LiteRT (ai-edge-litert) on the same inputs."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from android_util import MODEL, require_or_skip  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _serve(root: Path):
    """Serve the APK's files on loopback; the page POSTs its result to .../result."""
    got = {}
    done = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got["result"] = json.loads(body)
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *args):
            pass

    Handler.extensions_map = dict(http.server.SimpleHTTPRequestHandler.extensions_map, **{".wasm": "application/wasm", ".js": "text/javascript"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got, done


def _run_page(apk: Path, tmp_path: Path, config: dict, timeout: float = 240.0) -> dict:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    require_or_skip(chromium is not None, "chromium is not installed (apt-get install chromium)")
    root = tmp_path / "apk"
    with zipfile.ZipFile(apk) as z:
        z.extractall(root)
    server, got, done = _serve(root)
    url = f"http://127.0.0.1:{server.server_address[1]}/assets/web/bench.html?outputs=1&config=" + urllib.parse.quote(json.dumps(config))
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        finished = done.wait(timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.shutdown()
    assert finished, f"the page posted no result within {timeout:.0f} s; chromium stderr: {proc.stderr.read().decode(errors='replace')[-1500:]}"
    return got["result"]


@pytest.fixture(scope="module")
def page_result(demo_apk, tmp_path_factory):
    cfg = {"warmup_runs": 2, "warmup_seconds": 0, "min_runs": 5, "min_seconds": 0, "max_seconds": 60}
    return _run_page(demo_apk, tmp_path_factory.mktemp("chromium"), cfg)


def test_page_outputs_match_desktop_litert(page_result, face_inputs):
    assert "error" not in page_result, page_result.get("error")
    from ai_edge_litert.interpreter import Interpreter

    feed = dict(np.load(face_inputs))
    it = Interpreter(model_path=str(MODEL))
    it.allocate_tensors()
    (inp,) = it.get_input_details()
    it.set_tensor(inp["index"], feed["input"])
    it.invoke()
    desktop = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
    outs = {o["name"]: o for o in page_result["outputs"]}
    assert set(outs) == set(desktop)
    for name, ref in desktop.items():
        got = np.asarray(outs[name]["data"], dtype=np.float32).reshape(outs[name]["shape"])
        assert got.shape == ref.shape
        # the project's fidelity measures: cosine and max abs error relative to the output's range
        cos = float(np.dot(got.ravel(), ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
        assert cos > 0.9999, (name, cos)
        assert float(np.max(np.abs(got - ref))) <= 1e-3 * max(1.0, float(np.max(np.abs(ref)))), name


def test_page_follows_the_benchmark_rules(page_result):
    assert page_result["engine"] == "litert-wasm"
    assert page_result["engine_version"].startswith("@litertjs/core ")
    assert page_result["warmup_runs"] >= 2
    assert len(page_result["samples_ms"]) >= 5 and all(s > 0 for s in page_result["samples_ms"])
    assert page_result["inputs"] == [{"name": "input", "shape": [1, 128, 128, 3], "dtype": "float32", "source": "file"}]
    assert page_result["capped"] is False


def test_the_app_turns_a_real_page_run_into_a_benchmark_result(page_result, demo_apk, tmp_path):
    """The app's Java (RunRecord, Stats, ResultJson) on the page's real output gives a valid BenchmarkResult whose
    statistics are the harness's on the same samples."""
    from edgekit.core.registry import harness_module
    from edgekit.core.results import BenchmarkResult

    require_or_skip(shutil.which("javac") is not None, "no JDK (apt-get install default-jdk-headless)")
    src = sorted(p for p in (Path(__file__).resolve().parents[2] / "android_demo" / "src").rglob("*.java")
                 if "import android." not in p.read_text())
    comp = subprocess.run(["javac", "-encoding", "UTF-8", "-nowarn", "-d", str(tmp_path / "cls")] + [str(p) for p in src],
                          capture_output=True, text=True, timeout=300)
    assert comp.returncode == 0, comp.stderr[-2000:]
    with zipfile.ZipFile(demo_apk) as z:
        (tmp_path / "input_spec.json").write_bytes(z.read("assets/input_spec.json"))
    (tmp_path / "page.json").write_text(json.dumps(page_result))
    run = subprocess.run(["java", "-cp", str(tmp_path / "cls"), "dev.edgekit.demo.ResultJson", str(tmp_path / "input_spec.json"),
                          str(tmp_path / "page.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    res = BenchmarkResult.model_validate_json(run.stdout)
    assert res.runtime.name == "litert-wasm" and res.runtime.version.startswith("@litertjs/core")
    assert res.timing.samples_ms == page_result["samples_ms"]
    want = harness_module("bench").latency_stats(page_result["samples_ms"])
    for k, v in want.items():
        assert getattr(res.timing.stats, k) == pytest.approx(v, rel=1e-9)
    assert any("not the speed of native LiteRT" in w for w in res.warnings)
