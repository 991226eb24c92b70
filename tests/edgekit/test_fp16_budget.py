"""FP16 variants are judged against the user's --max-drop, not the fixed lossless 0.999 (issue 15, section 3)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from edgekit.core.artifact import load_artifact
from edgekit.core.errors import FidelityError
from edgekit.core.pipeline import DataSources, Pipeline
from edgekit.core.plan import PlanOptions, make_plan
from edgekit.core.profiles import load_profile
from edgekit.core.shapes import resolve_inputs


def _net(path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 16, 3, 3)).astype(np.float32), "w2")]
    g = h.make_graph([h.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["a"], ["r"]),
                      h.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])], "net",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 24, 24])], [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 24, 24])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def close_fraction(ref, new) -> float:
    """A strict task metric: the share of output values within 2e-4 (relative to the output's scale) of FP32."""
    scores = []
    for r_outs, n_outs in zip(ref, new):
        for r, n in zip(r_outs, n_outs):
            r = np.asarray(r, np.float64)
            scores.append(float(np.mean(np.abs(r - np.asarray(n, np.float64)) <= 2e-4 * np.abs(r).max())))
    return float(np.mean(scores))


def _run(tmp_path, art, max_drop, runtime="onnxruntime"):
    prof = load_profile("x86-cpu")
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.random((1, 3, 24, 24), dtype=np.float32)} for _ in range(4)]
    data = DataSources(inputs=resolve_inputs(art.inputs), calib=lambda n: feeds[:n], eval=lambda n: feeds[:n],
                       task_metric=close_fraction, task_metric_name="close fraction", fingerprint="test-fp16")
    plan = make_plan(art, "net", prof, PlanOptions(runtime=runtime, precision="fp16", max_drop=max_drop, simplify=False))
    return Pipeline(plan, prof, data, cache_dir=tmp_path / f"cache-{max_drop}", fidelity_samples=4, use_cache=False).run(art)


def test_fp16_judged_against_max_drop(tmp_path):
    runtime = "onnxruntime"
    art = load_artifact(_net(tmp_path / "net.onnx"))
    loose = _run(tmp_path, art, 0.5, runtime)  # measure: how much does FP16 cost on this metric?
    score = loose.records[-1].fidelity.task_score
    assert score is not None and 0.5 < score < 0.999, score  # FP16 is lossy here: the fixed 0.999 would reject it
    drop = 1.0 - score
    ok = _run(tmp_path, art, drop + 0.01, runtime)  # the user's budget covers the drop: accepted
    assert ok.records[-1].fidelity.passed and ok.records[-1].fidelity.task_score == pytest.approx(score)
    with pytest.raises(FidelityError, match="close fraction"):
        _run(tmp_path, art, max(drop / 2, 1e-4), runtime)  # a budget below the measured drop: refused
    with pytest.raises(FidelityError):
        _run(tmp_path, art, None, runtime)  # no --max-drop: FP16 must be lossless (0.999)


def test_openvino_fp16_step_gets_the_budget(tmp_path):
    art = load_artifact(_net(tmp_path / "net.onnx"))
    plan = make_plan(art, "net", load_profile("x86-cpu"), PlanOptions(runtime="openvino", precision="fp16", max_drop=0.03))
    assert plan.steps[-1].config.get("max_drop") == 0.03
    plan = make_plan(art, "net", load_profile("x86-cpu"), PlanOptions(runtime="onnxruntime", precision="fp16", max_drop=0.03, simplify=False))
    assert plan.steps[-1].step == "fp16" and plan.steps[-1].config.get("max_drop") == 0.03
