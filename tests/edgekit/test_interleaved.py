"""compress times before/after interleaved with the harness's loop and claims a speed-up only when intervals separate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from edgekit.quality.interleaved import time_interleaved, verdict


def test_rounds_alternate_between_variants():
    log = []
    res = time_interleaved({"a": lambda: log.append("a"), "b": lambda: log.append("b")}, rounds=4, warmup_runs=2, min_runs=3, min_seconds=0.0)
    # warm-up a,a then b,b; then rounds a..b, b..a, a..b, b..a (3 runs each)
    runs = "".join(log)
    assert runs == "aabb" + "aaabbb" + "bbbaaa" + "aaabbb" + "bbbaaa"
    for name in ("a", "b"):
        r = res[name]
        assert r["rounds"] == 4 and len(r["round_medians_ms"]) == 4 and r["runs"] == 12
        lo, hi = r["interval_ms"]
        assert lo <= r["median_ms"] <= hi and lo == min(r["round_medians_ms"]) and hi == max(r["round_medians_ms"])


def _lat(rounds):
    return {"median_ms": float(np.median(rounds)), "interval_ms": [min(rounds), max(rounds)]}


def test_verdict_needs_separated_intervals():
    # the case: one fast and one slow reading do not make a speed-up when the rounds overlap
    assert verdict(_lat([166, 80, 90, 150, 120]), _lat([77, 140, 95, 160, 100])) == ("same", None)
    kind, ratio = verdict(_lat([100, 101, 99, 102, 100]), _lat([50, 51, 49, 52, 50]))
    assert kind == "faster" and ratio == pytest.approx(2.0)
    assert verdict(_lat([50, 51, 49]), _lat([100, 101, 99]))[0] == "slower"


def test_weight_share_report_claims_speedup_only_when_intervals_separate(tmp_path):
    from edgekit.core.artifact import load_artifact
    from edgekit.core.compression import render_markdown
    from edgekit.core.profiles import load_profile
    from edgekit.core.registry import get_step
    from edgekit.core.steps import StepContext

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (32, 16, 3, 3)).astype(np.float32), "w")
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "c", [h.make_tensor_value_info("x", T.FLOAT, [1, 16, 32, 32])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 32, 32, 32])], [w])
    p = tmp_path / "c.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(p))
    feeds = [{"x": rng.random((1, 16, 32, 32), dtype=np.float32)} for _ in range(2)]
    step = get_step("weight-share")
    ctx = StepContext(work_dir=tmp_path / "w", profile=load_profile("x86-cpu"), eval_data=lambda n: feeds[:n])
    step().run(load_artifact(p), step.Config(clusters=16, min_elements=256, measure=True, eval_samples=2), ctx)
    rec = ctx.report["weight-share"]
    lb, la = rec["before"]["latency"], rec["after"]["latency"]
    assert lb["timing"] == la["timing"] == "interleaved" and lb["rounds"] == la["rounds"] >= 5
    kind, ratio = verdict(lb, la)
    assert rec["latency_speedup"] == (ratio if kind != "same" else None)
    md = render_markdown(rec)
    assert "interleaved rounds" in md
    assert ("speed-up:" in md) == (kind != "same")
    assert ("no speed-up claimed" in md) == (kind == "same")
    # the same timed region as deploy's harness: onnxruntime io_binding with pre-allocated outputs, said in the report
    assert "run_with_iobinding" in lb["timed_region"] and "run_with_iobinding" in la["timed_region"]
    assert f"timed region: {la['timed_region']}" in md
