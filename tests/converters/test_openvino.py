"""OpenVINO step on the real PP-OCRv4 models: IR conversion vs ONNX Runtime, FP16, NNCF INT8 held to a budget."""

import logging

import numpy as np
import pytest

from edgekit.core.artifact import load_artifact
from edgekit.core.errors import CalibrationError, StepError
from edgekit.core.steps import StepContext
from edgekit.converters.openvino import OpenVinoConfig, OpenVinoStep

DET_SHAPE = {"x": [1, 3, 128, 128]}
INT8_SHAPE = {"x": [1, 3, 256, 256]}  # at 128x128 the text mask is too small for INT8 to be meaningful


@pytest.fixture(scope="module", autouse=True)
def _quiet_nncf():
    import nncf

    nncf.set_log_level(logging.ERROR)


@pytest.fixture(scope="module")
def rec():
    from edgekit.zoo import models as zoo

    return zoo.resolve("zoo:ppocr-rec")


@pytest.fixture(scope="module")
def det():
    from edgekit.zoo import models as zoo

    return zoo.resolve("zoo:ppocr-det")


def _ort(path, feeds):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [s.run(None, f) for f in feeds]


def _ov(xml, feeds):
    import openvino as ov

    # f32 math: on CPUs with AVX512-BF16/AMX OpenVINO runs even an FP32 IR in bf16 by default
    c = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"})
    return [[c(f)[o] for o in c.outputs] for f in feeds]


def _fp16_rounded(path):
    """The ONNX model with every float weight rounded to float16 and back (what FP16 weight compression does)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    tensors = list(m.graph.initializer) + [a.t for n in m.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for t in tensors:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16).astype(np.float32), t.name))
    return m.SerializeToString()


def _assert_within_fp16_weight_error(onnx_path, feeds, ref, got, atol):
    """rec outputs softmax probabilities. With logits perturbed by at most d, p_i moves by at most 2 p_i (1 - p_i) d
    (dp_i = p_i (dz_i - sum_j p_j dz_j)): tiny where the model is sure, up to d/2 at a near-tie between two classes.
    FP16 weights perturb the logits; the size d of that perturbation is measured here, not guessed, from ONNX Runtime
    running the same model with its weights rounded to fp16 (max |d log p| over p > 1e-4; the |d log p| <= 2 d bound
    makes this a generous d). Where the CPU's kernels (AVX2, VNNI, BF16/AMX) change the rounding, near-tied frames move
    most: one such CPU saw 5 of 265,000 elements differ by 0.239 while the rest stayed within 0.02."""
    import onnxruntime as ort

    s16 = ort.InferenceSession(_fp16_rounded(onnx_path), providers=["CPUExecutionProvider"])
    d = 0.0
    for f, r in zip(feeds, ref):
        p16, p32 = s16.run(None, f)[0], r[0]
        m = (p16 > 1e-4) & (p32 > 1e-4)
        d = max(d, float(np.abs(np.log(p16[m]) - np.log(p32[m])).max()))
    assert 0 < d < 1.0, f"fp16 weights perturb log-probabilities by {d}: the model or the rounding changed"
    for r, g in zip(ref, got):
        p = r[0]
        bound = atol + 2 * p * (1 - p) * d
        worst = np.abs(g[0] - p) - bound
        assert worst.max() <= 0, f"{int((worst > 0).sum())} elements exceed the fp16-weight bound (worst by {worst.max():.3g}, d={d:.3g})"


@pytest.mark.parametrize("precision,atol", [("fp32", 2e-4), ("fp16", 2e-2)])
def test_rec_ir_matches_onnxruntime(tmp_path, rec, precision, atol):
    art = rec.artifact()
    ctx = StepContext(work_dir=tmp_path, profile=None)
    out = OpenVinoStep().run(art, OpenVinoConfig(precision=precision), ctx)
    assert out.format == "openvino" and out.path.suffix == ".xml" and out.path.with_suffix(".bin").exists()
    assert out.precision == precision
    assert out.lineage[-1].step == "openvino" and out.lineage[-1].source_sha256 == art.sha256
    feeds = rec.eval_feeds(3)
    ref, got = _ort(art.path, feeds), _ov(out.path, feeds)
    if precision == "fp32":
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g[0], r[0], atol=atol)
    else:
        _assert_within_fp16_weight_error(art.path, feeds, ref, got, atol)
    assert rec.task_metric(ref, got) == 1.0
    if precision == "fp16":  # weights really compressed: the .bin is about half of the FP32 one
        fp32 = OpenVinoStep().run(art, OpenVinoConfig(precision="fp32"), StepContext(work_dir=tmp_path / "f", profile=None))
        assert out.path.with_suffix(".bin").stat().st_size < 0.6 * fp32.path.with_suffix(".bin").stat().st_size


def test_fp32_ir_is_computed_in_f32_by_fidelity_and_benchmark(tmp_path, rec):
    """edgekit's own paths (fidelity check, harness benchmark) compile an fp32 IR with the f32 hint: OpenVINO's CPU
    default is bf16 on CPUs with AVX512-BF16/AMX, which changes rec's text on some lines."""
    from edgekit.quality import fidelity
    from edgekit.workflows.deploy import deploy

    rep = deploy("zoo:ppocr-rec", "x86-cpu", runtime="openvino", precision="fp32", cache_dir=tmp_path / "c",
                 bench={"min_runs": 3, "min_seconds": 0.1, "warmup_runs": 1, "warmup_seconds": 0.0, "idle_seconds": 0.0})
    compiled = rep.benchmark.runtime.options["compiled"]["INFERENCE_PRECISION_HINT"]
    assert "32" in compiled, compiled  # "f32" / "<Type: 'float32'>" depending on the OpenVINO version
    art = load_artifact(rep.artifact["path"], format="openvino", precision="fp32")
    feeds = rec.eval_feeds(3)
    ref = _ort(rec.artifact().path, feeds)
    for r, g in zip(ref, fidelity.predict(art, feeds)):
        np.testing.assert_allclose(g[0], r[0], atol=2e-4)


def test_det_fp32_small_shape_matches_onnxruntime(tmp_path, det):
    art = det.artifact()
    out = OpenVinoStep().run(art, OpenVinoConfig(precision="fp32"), StepContext(work_dir=tmp_path, profile=None))
    feeds = det.eval_feeds(2, shapes=DET_SHAPE)
    ref, got = _ort(art.path, feeds), _ov(out.path, feeds)
    np.testing.assert_allclose(got[0][0], ref[0][0], atol=1e-3)
    assert det.task_metric(ref, got) > 0.99


def test_int8_without_calibration_is_calibration_error(tmp_path, det):
    with pytest.raises(CalibrationError, match="--calib"):
        OpenVinoStep().run(det.artifact(), OpenVinoConfig(precision="int8"), StepContext(work_dir=tmp_path, profile=None))


def _det_ctx(tmp_path, det):
    return StepContext(
        work_dir=tmp_path,
        profile=None,
        calib_data=lambda n: det.calib_feeds(n, shapes=INT8_SHAPE),
        eval_data=lambda n: det.eval_feeds(n, shapes=INT8_SHAPE),
        task_metric=det.task_metric,
        task_metric_name=det.task_metric_name,
    )


@pytest.mark.slow
def test_int8_within_a_loose_budget_keeps_the_best_full_int8_preset(tmp_path, det):
    ctx = _det_ctx(tmp_path, det)
    out = OpenVinoStep().run(det.artifact(), OpenVinoConfig(precision="int8", preset="auto", calib_samples=4, eval_samples=2, max_drop=0.25), ctx)
    assert out.precision == "int8"
    assert out.metadata["int8_drop"] <= 0.25
    variants = ctx.report["variants"]
    # preset auto: mixed and performance both quantize the whole model (same ops, same speed); the better score wins
    assert [v["preset"] for v in variants] == ["mixed", "performance"]
    assert all(v["ignored"] == [] for v in variants)
    assert variants[0]["quantized_ops"] == variants[1]["quantized_ops"] > 0
    best = min(variants, key=lambda v: v["drop"])  # ties keep the first (mixed)
    assert out.metadata["int8_drop"] == best["drop"] and out.metadata["int8_preset"] == best["preset"]
    assert ctx.report["int8_search"]["preset"] == best["preset"] and ctx.report["int8_search"]["rounds"] == 0
    assert (tmp_path / "model_fp32.xml").exists()  # the FP32 reference IR is kept beside the INT8 one
    # the model is really quantized: OpenVINO IR carries FakeQuantize ops
    import openvino as ov

    types = {op.get_type_name() for op in ov.Core().read_model(str(out.path)).get_ordered_ops()}
    assert "FakeQuantize" in types


@pytest.mark.slow
def test_int8_tight_budget_searches_ignored_scope_then_refuses(tmp_path, det):
    """A zero-drop budget that plain INT8 misses: the sensitive-node search runs, records variants, then refuses."""
    ctx = _det_ctx(tmp_path, det)
    with pytest.raises(StepError) as ei:
        OpenVinoStep().run(det.artifact(), OpenVinoConfig(precision="int8", preset="performance", calib_samples=4, eval_samples=2, max_drop=0.0, max_search_rounds=2, search_start=2), ctx)
    msg = str(ei.value)
    assert "no INT8 variant met the accuracy budget" in msg and "best drop" in msg
    variants = ctx.report["variants"]
    assert len(variants) == 3
    assert variants[0]["ignored"] == [] and variants[0]["drop"] > 0.0 and {v["preset"] for v in variants} == {"performance"}
    assert len(variants[1]["ignored"]) == 2 and len(variants[2]["ignored"]) == 4
    assert set(variants[1]["ignored"]) <= set(variants[2]["ignored"])  # the ranking is stable across rounds
    assert all(v["size_bytes"] > 0 and v["score"] is not None for v in variants)
    assert variants[2]["size_bytes"] >= variants[0]["size_bytes"]  # float nodes take more space
    assert (tmp_path / "model_fp32.xml").exists()  # produced before the failure and kept
    assert not (tmp_path / "model.xml").exists()  # nothing that violates the budget is written as the result


@pytest.mark.slow
def test_budget_miss_can_fall_back_to_fp16_visibly(tmp_path, det):
    ctx = _det_ctx(tmp_path, det)
    out = OpenVinoStep().run(det.artifact(), OpenVinoConfig(precision="int8", preset="mixed", calib_samples=4, eval_samples=2, max_drop=0.0, max_search_rounds=0, on_budget_miss="fp16"), ctx)
    assert out.precision == "fp16" and out.metadata["int8_budget_missed"] is True
    assert any("returned FP16" in n for n in ctx.notes)
    assert any("returned FP16" in n for n in out.lineage[-1].notes)


@pytest.mark.slow
def test_accuracy_control_reverts_ops_to_float_and_reports_them(tmp_path, det):
    """search=accuracy_control: NNCF's restorer, driven by the task metric, keeps quantizer groups in float."""
    ctx = _det_ctx(tmp_path, det)
    cfg = OpenVinoConfig(precision="int8", preset="performance", calib_samples=4, eval_samples=2, max_drop=0.0,
                         search="accuracy_control", ac_max_iterations=2, on_budget_miss="fp32")
    out = OpenVinoStep().run(det.artifact(), cfg, ctx)
    full, ac = ctx.report["variants"]
    assert "accuracy_control" in ac["note"] and ac["preset"] == "performance"
    assert full["ignored"] == [] and full["drop"] > 0.0
    # the ops it kept in float are named, were quantized in the full model and no longer are
    assert 0 < len(ac["ignored"]) and ac["quantized_ops"] == full["quantized_ops"] - len(ac["ignored"])
    assert ctx.report["int8_search"]["search"] == "accuracy_control"
    if ac["drop"] <= 0.0:
        assert out.precision == "int8" and out.metadata["ignored_scope"] == ac["ignored"]
    else:  # budget 0 not reached in 2 iterations: the float fallback is returned, visibly
        assert out.precision == "fp32" and out.metadata["int8_budget_missed"] is True


def test_bad_search_config_is_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="search"):
        OpenVinoConfig(precision="int8", search="random")
    with pytest.raises(ValidationError, match="overflow_fix"):
        OpenVinoConfig(precision="int8", overflow_fix="sometimes")


def test_unconvertible_op_names_node_op_and_tool_message(tmp_path):
    """`Det` is a standard ONNX op (opset 11) that OpenVINO 2026.4 has no conversion rule for."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu0"),
        helper.make_node("Det", ["r"], ["d"], name="determinant0"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])], [helper.make_tensor_value_info("d", TensorProto.FLOAT, [])])
    p = tmp_path / "det.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))
    with pytest.raises(StepError) as ei:
        OpenVinoStep().run(load_artifact(p), OpenVinoConfig(), StepContext(work_dir=tmp_path / "w", profile=None))
    err = ei.value
    assert err.step == "openvino" and err.op == "Det" and err.node == "determinant0"
    assert "No conversion rule found for operations: Det" in err.tool_message
    assert not list((tmp_path / "w").glob("*.xml"))


def test_model_type_auto_detects_attention(rec, det):
    """NNCF's transformer mode is chosen when the graph multiplies two activations (SVTR neck of rec), not for det."""
    import openvino as ov

    from edgekit.converters.openvino_graph import attention_matmuls as _attention_matmuls

    core = ov.Core()
    att = _attention_matmuls(core.read_model(str(rec.artifact().path)))
    assert len(att) == 4 and all(n.startswith("p2o.MatMul") for n in att)
    assert _attention_matmuls(core.read_model(str(det.artifact().path))) == []


def test_int8_budget_is_judged_on_the_task_score():
    cfg = OpenVinoConfig(precision="int8", max_drop=0.005)
    assert cfg.fidelity.min_task_score == pytest.approx(0.995) and cfg.fidelity.min_cosine == 0.9
    assert OpenVinoConfig(precision="fp32").fidelity.min_cosine == 0.999


def _two_matmuls(tmp_path):
    """x -> MatMul -> Relu -> MatMul -> y (the last quantizable node is the model output), with calib/eval feeds."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "W1")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "W2")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
                           helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")], "two_mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])], [w1, w2])
    path = tmp_path / "two_mm.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    feeds = [{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(24)]
    return path, StepContext(work_dir=tmp_path / "w", profile=None, calib_data=lambda n: feeds[:n], eval_data=lambda n: feeds[16:16 + n])


def test_sensitivity_search_when_a_quantized_node_is_the_model_output(tmp_path):
    """OpenVINO does not duplicate an added output that is already a model output; the search must read its
    per-node outputs by port (it raised IndexError on MiniLM, whose last MatMul feeds the output)."""
    path, ctx = _two_matmuls(tmp_path)
    cfg = OpenVinoConfig(precision="int8", max_drop=0.0, calib_samples=16, eval_samples=8, max_search_rounds=1)
    with pytest.raises(StepError, match="no INT8 variant met the accuracy budget"):
        OpenVinoStep().run(load_artifact(path), cfg, ctx)
    assert len(ctx.report["variants"]) >= 2  # the full-INT8 variant and at least one with nodes kept in float


def test_a_search_that_keeps_every_op_in_float_never_returns_int8(tmp_path):
    """With max_drop 0 the search keeps doubling the float nodes; once none is quantized the model is FP32. On a CPU
    where that "model" met the budget, the step returned it as an INT8 artifact with quantized_ops 0."""
    path, ctx = _two_matmuls(tmp_path)
    cfg = OpenVinoConfig(precision="int8", max_drop=0.0, calib_samples=16, eval_samples=8, max_search_rounds=10)
    try:
        out = OpenVinoStep().run(load_artifact(path), cfg, ctx)
    except StepError as err:
        assert "no INT8 variant met the accuracy budget" in str(err)
    else:
        assert out.precision == "int8"
        chosen = [v for v in ctx.report["variants"] if v.get("drop") is not None and v["drop"] <= 0.0]
        assert chosen and all(v["quantized_ops"] > 0 for v in chosen)
    assert all(v["quantized_ops"] > 0 or "not eligible" in v["note"] for v in ctx.report["variants"])
