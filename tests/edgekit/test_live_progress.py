"""Live progress (issue 15 §6): the harness's progress events reach the CLI's status line during a real benchmark
and a real deploy; nothing transient is drawn when stderr is not a terminal, nothing at all under --json/--quiet."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import onnx
from rich.console import Console

from edgekit.cli.live import LiveProgress, describe_event
from edgekit.core.registry import get_runner
from edgekit.core.runner_interface import HarnessSpec, InputSpec

DET = Path(importlib.util.find_spec("rapidocr_onnxruntime").origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
SHUFFLENET = Path(onnx.__file__).parent / "backend/test/data/light/light_shufflenet.onnx"


def _spec() -> HarnessSpec:
    return HarnessSpec(model_path=str(DET), model_format="onnx", runtime="onnxruntime", threads=1,
                       inputs=[InputSpec(name="x", shape=[1, 3, 64, 64], dtype="float32")],
                       warmup_runs=1, warmup_seconds=0.0, min_runs=4, min_seconds=0.0, idle_seconds=0.0)


class Recording(LiveProgress):
    """A LiveProgress on a real rich console (terminal or not) that also keeps every status text it showed."""

    def __init__(self, enabled=True, terminal=True):
        self.buf = io.StringIO()
        super().__init__(enabled, console=Console(file=self.buf, force_terminal=terminal, width=160))
        self.shown = []

    def _set(self, text, phase=None):
        self.shown.append(text)
        super()._set(text, phase)


def test_describe_event_covers_the_harness_phases():
    assert describe_event({"phase": "load", "state": "start", "runtime": "openvino"}) == "benchmark: loading the model with openvino"
    assert describe_event({"phase": "timed", "runs": 12, "elapsed_s": 3.25}) == "benchmark: timed runs 12 · 3.2 s"
    assert describe_event({"phase": "timed", "runs": 40, "elapsed_s": 10.0, "state": "done"}) == "benchmark: 40 timed runs in 10.0 s"
    assert describe_event({"phase": "adb", "message": "pushing model.tflite"}) == "adb: pushing model.tflite"
    assert describe_event({"phase": "load", "state": "done", "load_ms": 12.4, "board": "pi5"}) == "benchmark on pi5: model loaded in 12 ms"
    assert describe_event({"phase": "unknown"}) is None


def test_real_benchmark_streams_into_the_status_line():
    live = Recording(terminal=True)
    LocalRunner = get_runner("local")
    with live, LocalRunner(None, on_progress=live.on_progress) as r:
        assert live._status is not None  # a terminal: the transient status line is up
        res = r.run_harness(_spec())
    assert live._status is None  # and gone when the block ends
    assert res.timing.runs == 4
    assert live.shown[0] == "benchmark: loading the model with onnxruntime"
    assert "benchmark: warming up" in live.shown
    assert live.shown[-1] == "benchmark: 4 timed runs in %.1f s" % res.timing.duration_s
    assert "›" not in live.buf.getvalue()  # harness events never become permanent lines


def test_not_a_terminal_draws_no_status_line_and_disabled_prints_nothing():
    plain = Recording(terminal=False)
    with plain:
        assert plain._status is None
        plain("converting")
        plain.harness({"phase": "timed", "runs": 3, "elapsed_s": 1.0})
    assert plain.buf.getvalue().strip() == "› converting"  # the permanent line only; no spinner text
    off = Recording(enabled=False)
    assert off.on_progress is None
    with off:
        off("converting")
    assert off.buf.getvalue() == "" and off.shown == []


def test_deploy_hands_the_harness_events_to_the_progress_sink(tmp_path):
    from edgekit.workflows.deploy import deploy

    live = Recording(terminal=False)
    with live:
        rep = deploy(str(SHUFFLENET), "x86-cpu", runtime="onnxruntime", cache_dir=tmp_path / "c", fidelity_samples=2,
                     bench={"min_runs": 3, "min_seconds": 0.0, "warmup_runs": 1, "warmup_seconds": 0.0}, progress=live)
    assert rep.benchmark is not None
    shown = "\n".join(live.shown)
    assert "benchmark: loading the model with onnxruntime" in shown  # from the harness process, through the runner
    assert f"benchmark: {rep.benchmark.timing.runs} timed runs in" in shown
    assert "› [" in live.buf.getvalue()  # the pipeline's step lines are still printed


def test_status_text_carries_elapsed_time_except_for_timed_runs():
    from edgekit.cli.live import _Elapsed

    live = Recording(terminal=False)
    live("converting with onnx2tf")
    assert str(_Elapsed(live).__rich__()) == "converting with onnx2tf · 0 s"
    live.since -= 65  # a step that has run for 65 s
    assert str(_Elapsed(live).__rich__()) == "converting with onnx2tf · 65 s"
    live.harness({"phase": "timed", "runs": 37, "elapsed_s": 1.02})
    assert str(_Elapsed(live).__rich__()) == "benchmark: timed runs 37 · 1.0 s"  # no second clock
