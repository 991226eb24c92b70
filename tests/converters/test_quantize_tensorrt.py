"""quantize-ort with target=tensorrt: a QDQ model that follows TensorRT's explicit-quantization rules
(symmetric INT8, zero point 0, positive scales, one scale per activation, per-channel weights in [-127, 127])."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from edgekit.converters import quantize_ort as Q
from edgekit.converters.quantize_ort import QuantizeOrtConfig, QuantizeOrtStep
from edgekit.core.artifact import load_artifact
from edgekit.core.profiles import load_profile
from edgekit.core.steps import StepContext


def conv_net(path):
    """Conv(8) -> Relu -> Conv(16) -> GlobalAveragePool -> Flatten -> Gemm(10), random weights with biases."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32)
    w3 = rng.normal(0, 0.2, (10, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (rng.normal(0, 0.1, 8).astype(np.float32), "b1"), (w2, "w2"),
                                                         (rng.normal(0, 0.1, 16).astype(np.float32), "b2"), (w3, "w3"), (np.zeros(10, np.float32), "b3")]]
    g = h.make_graph(
        [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"), h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"), h.make_node("GlobalAveragePool", ["c2"], ["p"], name="gap"),
         h.make_node("Flatten", ["p"], ["f"], name="flat"), h.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc")],
        "convnet", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])], [h.make_tensor_value_info("y", T.FLOAT, [1, 10])], initializer=inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _ctx(tmp_path, name):
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(8)]
    return StepContext(work_dir=tmp_path / name, profile=load_profile("x86-cpu"), calib_data=lambda n: feeds[:n], eval_data=lambda n: feeds[:n])


def _qdq(path):
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return m, inits, [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


@pytest.fixture
def net(tmp_path):
    return conv_net(tmp_path / "net.onnx")


def test_cpu_default_qdq_breaks_tensorrt_rules(net, tmp_path):
    # the failing case: what quantize-ort emits for an x86 CPU (asymmetric uint8 activations) TensorRT would refuse
    out = QuantizeOrtStep().run(load_artifact(net), QuantizeOrtConfig(mode="static", calib_samples=8, eval_samples=2, latency_runs=1), _ctx(tmp_path, "cpu"))
    bad = Q.tensorrt_qdq_violations(out.path)
    assert any("zero point" in b for b in bad), bad


def test_tensorrt_target_follows_explicit_quantization_rules(net, tmp_path):
    ctx = _ctx(tmp_path, "trt")
    out = QuantizeOrtStep().run(load_artifact(net), QuantizeOrtConfig(target="tensorrt", calib_samples=8, eval_samples=2, latency_runs=1), ctx)
    assert Q.tensorrt_qdq_violations(out.path) == []
    m, inits, nodes = _qdq(out.path)
    assert nodes
    weights = {"w1": 8, "w2": 16, "w3": 10}
    seen_weights = set()
    for n in nodes:
        scale = inits[n.input[1]]
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not np.any(zp), (n.name, zp)  # symmetric: zero point 0, int8
        assert np.all(scale > 0) and np.all(np.isfinite(scale))
        src = n.input[0]
        base = src.split("_quantized")[0]
        if n.op_type == "DequantizeLinear" and src in inits and base in weights:
            q = inits[src]
            assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127  # TensorRT's weight range
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            assert scale.size == weights[base] and axis == 0, (base, scale.shape, axis)  # per output channel
            seen_weights.add(base)
        elif src not in inits:
            assert scale.size == 1, (n.name, scale.shape)  # activations: one scale per tensor
    assert seen_weights == set(weights)
    # bias stays float: no int32 DequantizeLinear for b1/b2/b3
    assert not any(inits[n.input[0]].dtype == np.int32 for n in nodes if n.input[0] in inits)
    assert any("TensorRT" in n for n in ctx.notes)


def test_violations_are_found_in_a_hand_made_asymmetric_model(tmp_path):
    g = h.make_graph(
        [h.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]), h.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])], "qdq",
        [h.make_tensor_value_info("x", T.FLOAT, [4])], [h.make_tensor_value_info("y", T.FLOAT, [4])],
        initializer=[numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "zp")],
    )
    p = tmp_path / "asym.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), str(p))
    bad = Q.tensorrt_qdq_violations(p)
    assert len([b for b in bad if "uint8" in b]) == 2 and len([b for b in bad if "is not 0" in b]) == 2


def test_plan_for_tensorrt_int8_asks_for_tensorrt_qdq(tmp_path, ppocr_det_path):
    from edgekit.core.artifact import load_artifact as la
    from edgekit.core.plan import PlanOptions, make_plan

    plan = make_plan(la(ppocr_det_path), "det", load_profile("jetson-orin-nano"), PlanOptions(runtime="tensorrt", precision="int8", has_calib=True, host="x"))
    q = [s for s in plan.steps if s.step == "quantize-ort"]
    assert q and q[0].config.get("target") == "tensorrt"
