"""The timed call is the same scope for every runtime (issue 15 §2): inference only, inputs set once, outputs left in
buffers allocated once. Real models through each adapter: the timed call's outputs equal a plain run's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.core.registry import harness_path
from edgekit.core.results import BenchmarkResult
from edgekit.report.text import bench_rows
from edgekit.runners.harness import adapters
from edgekit.runners.harness.adapters import onnxruntime as ort_adapter
from edgekit.runners.harness.adapters import openvino as ov_adapter
from edgekit.runners.harness.adapters import tflite as tflite_adapter

FIX = Path(__file__).resolve().parents[1] / "fixtures"
MODELS = Path(importlib.util.find_spec("rapidocr_onnxruntime").origin).parent / "models"
REC = MODELS / "ch_PP-OCRv4_rec_infer.onnx"
TFLITE = FIX / "face_detection_front.tflite"


def _x(seed=0, shape=(1, 3, 48, 320)):
    return np.random.RandomState(seed).rand(*shape).astype(np.float32)


def test_onnxruntime_timed_call_writes_preallocated_outputs():
    sess = adapters.open_session("onnxruntime", str(REC), 1)
    ref = sess.run({"x": _x(0)})
    step = sess.bind({"x": _x(0)})
    assert sess.options["timed_region"] == ort_adapter.TIMED_IOBINDING
    assert sess.options["io_binding"] == {"inputs": ["x"], "outputs_preallocated": True}
    binding, keep = sess._timed_binding
    buffers = [buf for buf, _value in keep[1:]]
    assert [b.shape for b in buffers] == [(1, 40, 6625)]
    for b in buffers:
        b.fill(np.nan)  # whatever is in the buffers after the call was written by run_with_iobinding
    assert step() is None  # nothing converted or returned per call
    np.testing.assert_allclose(buffers[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(ort_adapter.bound_outputs(sess)[0], ref[0], atol=1e-5)
    # a second bind (other feeds) still gives that feed's outputs
    step2 = sess.bind({"x": _x(1)})
    step2()
    np.testing.assert_allclose(ort_adapter.bound_outputs(sess)[0], sess.run({"x": _x(1)})[0], atol=1e-5)
    assert not np.allclose(ort_adapter.bound_outputs(sess)[0], ref[0])


def test_onnxruntime_run_with_iobinding_is_what_runs(monkeypatch):
    sess = adapters.open_session("onnxruntime", str(REC), 1)
    step = sess.bind({"x": _x(0)})
    calls = {"run": 0}
    real_run = sess.sess.run

    def counting_run(*a, **k):
        calls["run"] += 1
        return real_run(*a, **k)

    monkeypatch.setattr(sess.sess, "run", counting_run)
    for _ in range(3):
        step()
    assert calls["run"] == 0  # the timed call never goes through sess.run (allocation + numpy conversion)


def test_openvino_timed_call_leaves_outputs_in_request(rec_ir):
    sess = adapters.open_session("openvino", str(rec_ir), 1, {"input_shapes": {"x": [1, 3, 48, 320]}})
    ref = sess.run({"x": _x(0)})
    other = sess.run({"x": _x(1)})
    assert not np.allclose(ref[0], other[0])
    step = sess.bind({"x": _x(0)})
    assert sess.options["timed_region"] == ov_adapter.TIMED_ASYNC
    out_tensor = sess.request.get_tensor(sess._out_ports[0])
    out_tensor.data[...] = np.nan
    assert step() is None  # start_async + wait: no OVDict of copied outputs per call
    np.testing.assert_allclose(out_tensor.data, ref[0], atol=1e-5)


def test_tflite_timed_call_is_invoke_after_set_tensor_once():
    sess = adapters.open_session("tflite", str(TFLITE), 1)
    a, b = _x(0, (1, 128, 128, 3)), _x(1, (1, 128, 128, 3))
    ref_a = sess.run({"input": a})
    sess.run({"input": b})  # leaves b's outputs in the interpreter
    step = sess.bind({"input": a})
    assert sess.options["timed_region"] == tflite_adapter.TIMED_INVOKE
    step()
    got = [sess.interp.get_tensor(d["index"]).copy() for d in sess._out]
    for g, r in zip(got, ref_a):
        np.testing.assert_array_equal(g, r)


def test_report_states_the_timed_region(tmp_path):
    dets = MODELS / "ch_PP-OCRv4_det_infer.onnx"
    doc = {"model_path": str(dets), "model_format": "onnx", "runtime": "onnxruntime", "threads": 1,
           "inputs": [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}],
           "warmup_runs": 1, "warmup_seconds": 0.0, "min_runs": 3, "min_seconds": 0.0, "idle_seconds": 0.0}
    sp = tmp_path / "spec.json"
    sp.write_text(json.dumps(doc))
    p = subprocess.run([sys.executable, str(harness_path()), str(sp)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = BenchmarkResult.model_validate(json.loads(p.stdout))
    assert res.timing.timed_region == ort_adapter.TIMED_IOBINDING
    rows = dict(bench_rows(res))
    assert rows["timed region"] == ort_adapter.TIMED_IOBINDING


def test_onnxruntime_sequence_output_falls_back_to_plain_run_and_says_so(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("SequenceConstruct", ["x"], ["seq"])], "seq",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "seq.onnx"
    onnx.save(m, str(path))
    sess = adapters.open_session("onnxruntime", str(path), 1)
    step = sess.bind({"x": np.array([1.0, 2.0], dtype=np.float32)})
    out = step()
    assert isinstance(out[0], list) and np.array_equal(out[0][0], [1.0, 2.0])  # plain sess.run ran
    assert sess.options["timed_region"] == ort_adapter.TIMED_PLAIN
    assert any("not a numeric tensor" in w for w in sess.warnings)
    assert ort_adapter.bound_outputs(sess) is None
