"""TFLite step: onnx2tf in its isolated env, NHWC layout mapping, calibration, real failure messages.

Default run: error paths and env management (fast), plus one tiny real conversion when the onnx2tf env exists.
Opt-in (EDGEKIT_TEST_ONNX2TF=1): PP-OCR conversions and a real onnx2tf failure, minutes each on 2 cores.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.core.artifact import load_artifact
from edgekit.core.errors import CalibrationError, StepError
from edgekit.core.steps import StepContext
from edgekit.converters import onnx2tf_env
from edgekit.converters.tflite import TfliteConfig, TfliteStep, parse_onnx2tf_error

FIX = Path(__file__).resolve().parents[1] / "fixtures"
OPT_IN = os.environ.get("EDGEKIT_TEST_ONNX2TF") == "1"
onnx2tf_opt_in = pytest.mark.skipif(not OPT_IN, reason="opt-in: EDGEKIT_TEST_ONNX2TF=1 (minutes per PP-OCR conversion)")


def _env_ready() -> bool:
    return onnx2tf_env.status(measure_size=False).ready


def _tiny_onnx(tmp_path: Path) -> Path:
    """NCHW conv model with a 4-D and a 2-D output, so both the input and output layouts must be mapped."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["feat"], name="relu0"),
        helper.make_node("GlobalAveragePool", ["feat"], ["gap"], name="gap0"),
        helper.make_node("Flatten", ["gap"], ["pooled"], name="flat0"),
    ]
    g = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 10])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 4, 8, 10]), helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, 4])],
        [w, b],
    )
    p = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(p))
    return p


def _feeds(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 10)).astype(np.float32)} for _ in range(n)]


def test_int8_without_calibration_data_names_the_option(tmp_path):
    art = load_artifact(_tiny_onnx(tmp_path))
    ctx = StepContext(work_dir=tmp_path / "w", profile=None)
    with pytest.raises(CalibrationError, match="--calib"):
        TfliteStep().run(art, TfliteConfig(precision="int8"), ctx)


def test_real_onnx2tf_failure_log_is_summarised():
    log = (FIX / "onnx2tf_1.29.24_tfidfvectorizer_pyfunc_failure_generated_here.txt").read_text()
    node, op, message = parse_onnx2tf_error(log, FIX / "does-not-matter.onnx")
    assert node is None  # this failure happens in the TFLite converter, after the per-node ONNX stage
    assert op.startswith("PyFunc")
    assert "neither a custom op nor a flex op" in message
    assert max(len(line) for line in message.splitlines()) <= 304  # MLIR location dumps are cut


def test_real_onnx2tf_unimplemented_op_is_named(tmp_path):
    """onnx2tf 1.29.16 (the pinned version) on a TfIdfVectorizer node: op from its log, node from the ONNX graph."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("TfIdfVectorizer", ["x"], ["o"], name="tfidf0", mode="TF", min_gram_length=1, max_gram_length=1, max_skip_count=0, ngram_counts=[0], ngram_indexes=[0], pool_int64s=[1])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])], [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    p = tmp_path / "tfidf.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))
    log = (FIX / "onnx2tf_1.29.16_tfidfvectorizer_not_implemented_generated_here.txt").read_text()
    n, op, message = parse_onnx2tf_error(log, p)
    assert (n, op) == ("tfidf0", "TfIdfVectorizer")
    assert "TfIdfVectorizer OP is not yet implemented" in message


def test_real_onnx2tf_node_failure_names_node_and_op():
    """onnx2tf 1.29.24 on PP-OCRv4 det (the reason edgekit pins 1.29.16): node and op come from its log + the ONNX."""
    from edgekit.zoo import models as zoo

    log = (FIX / "onnx2tf_1.29.24_ppocrv4_det_functional_layer_failure_generated_here.txt").read_text()
    node, op, message = parse_onnx2tf_error(log, zoo.resolve("zoo:ppocr-det").artifact().path)
    assert node == "p2o.Add.4" and op == "Add"
    assert "Output tensors of a Functional model must be the output of a TensorFlow `Layer`" in message


def test_real_onnx2tf_minilm_failure_maps_renamed_node(tmp_path):
    """onnx2tf prints ONNX node names that start with '/' as 'wa/...'; the op is still found in the graph."""
    import onnx
    from onnx import TensorProto, helper

    name = "/bert/encoder/layer.0/attention/self/Mul"
    g = helper.make_graph([helper.make_node("Mul", ["a", "a"], ["b"], name=name)], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g), str(p))
    log = (FIX / "onnx2tf_1.29.16_minilm_functional_layer_failure_generated_here.txt").read_text()
    node, op, message = parse_onnx2tf_error(log, p)
    assert node == "wa" + name and op == "Mul"
    assert "Found: 0.1767766922712326" in message  # the attention scale 1/sqrt(32) that onnx2tf folds to a constant


def test_env_var_pointing_at_an_env_without_onnx2tf(tmp_path, monkeypatch):
    fake = tmp_path / "env"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "python").symlink_to(sys.executable)  # a real Python, but without onnx2tf
    monkeypatch.setenv(onnx2tf_env.ENV_VAR, str(fake))
    st = onnx2tf_env.status()
    assert st.source == "env-var" and st.exists and not st.ready
    assert "onnx2tf is not installed" in st.detail
    with pytest.raises(onnx2tf_env.ToolEnvError, match="onnx2tf is not installed"):
        onnx2tf_env.ensure_env()
    monkeypatch.setenv(onnx2tf_env.ENV_VAR, str(tmp_path / "missing"))
    st = onnx2tf_env.status()
    assert not st.exists and "not created yet" in st.detail
    with pytest.raises(onnx2tf_env.ToolEnvError, match="no Python found"):
        onnx2tf_env.ensure_env()


def test_creation_lock_is_exclusive(tmp_path):
    lock = tmp_path / "x.lock"
    with onnx2tf_env._Lock(lock, wait_s=1):
        with pytest.raises(onnx2tf_env.ToolEnvError, match="another edgekit process"):
            with onnx2tf_env._Lock(lock, wait_s=0.1):
                pass
    with onnx2tf_env._Lock(lock, wait_s=0.1):  # released again
        pass


@pytest.mark.slow
@pytest.mark.skipif(not _env_ready(), reason="the onnx2tf tool env has not been created on this machine")
def test_tiny_model_fp32_layout_mapped_and_verified(tmp_path):
    from edgekit.quality import fidelity
    from edgekit.core.fsutil import sha256_file

    src = _tiny_onnx(tmp_path)
    before = sha256_file(src)
    art = load_artifact(src)
    ctx = StepContext(work_dir=tmp_path / "w", profile=None, calib_data=lambda n: _feeds(n))
    out = TfliteStep().run(art, TfliteConfig(precision="fp32", calib_samples=2), ctx)
    assert sha256_file(src) == before  # onnx2tf got a copy, the source is untouched
    assert out.format == "tflite" and out.path.name == "model.tflite"
    assert out.inputs[0].shape == [1, 8, 10, 3]  # NHWC
    meta = out.metadata
    assert meta["feed_transpose"] == {out.inputs[0].name: [0, 2, 3, 1]}
    src_idx_4d = 0
    assert meta["output_transpose"][str(src_idx_4d)] == [0, 3, 1, 2]  # NHWC output back to NCHW
    assert sorted(meta["output_order"]) == [0, 1]
    run_dirs = list((tmp_path / "w").glob("onnx2tf-*"))
    assert (run_dirs[0] / "calibration_image_sample_data_20x128x128x3_float32.npy").exists()  # no download attempt
    feeds = _feeds(3, seed=5)
    ref = fidelity.predict(art, feeds)
    got = fidelity.predict(out, feeds)
    for r, g in zip(ref, got):
        assert [a.shape for a in r] == [a.shape for a in g]
        for a, b in zip(r, g):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.onnx2tf
@pytest.mark.slow
@pytest.mark.skipif(not (_env_ready() or OPT_IN), reason="needs the onnx2tf tool env (created by .ci/run, or opt in: EDGEKIT_TEST_ONNX2TF=1)")
def test_deploy_report_carries_layout_metadata_to_feed_the_tflite(tmp_path):
    """report.json's artifact keeps the NHWC feed map, so the deployed .tflite can be fed source-layout (NCHW) data."""
    from edgekit.quality import fidelity
    from edgekit.workflows.deploy import deploy

    src = _tiny_onnx(tmp_path)
    rep = deploy(str(src), "x86-cpu", runtime="tflite", precision="fp32", run_benchmark=False, out=tmp_path / "out",
                 cache_dir=tmp_path / "cache")
    meta = rep.artifact["metadata"]
    assert list(meta["feed_transpose"].values()) == [[0, 2, 3, 1]]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())["artifact"]["metadata"]
    assert saved["feed_transpose"] == meta["feed_transpose"]
    deployed = load_artifact(rep.artifact["path"], format="tflite", metadata=saved)
    feeds = _feeds(2, seed=9)
    for r, g in zip(fidelity.predict(load_artifact(src), feeds), fidelity.predict(deployed, feeds)):
        for a, b in zip(r, g):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_int8_budget_is_checked_on_the_task_score():
    assert TfliteConfig(precision="int8", max_drop=0.02).fidelity.min_task_score == pytest.approx(0.98)
    assert TfliteConfig(precision="int8-dynamic").fidelity.min_cosine == 0.9
    fp32 = TfliteConfig(precision="fp32", max_drop=0.02).fidelity
    assert fp32.min_cosine == 0.999 and fp32.min_task_score is None  # lossless precisions keep the strict default


# ------------------------------------------------------------------------------ opt-in: PP-OCR + real failure


@pytest.mark.onnx2tf
@pytest.mark.slow
@onnx2tf_opt_in
@pytest.mark.parametrize("precision,min_score", [("fp16", 0.99), ("int8", 0.0)])
def test_ppocr_rec(tmp_path, precision, min_score):
    from edgekit.quality import fidelity
    from edgekit.zoo import models as zoo

    z = zoo.resolve("zoo:ppocr-rec")
    art = z.artifact()
    ctx = StepContext(work_dir=tmp_path / "w", profile=None, calib_data=lambda n: z.calib_feeds(n))
    out = TfliteStep().run(art, TfliteConfig(precision=precision, calib_samples=8), ctx)
    assert out.inputs[0].shape == [1, 48, 320, 3]
    assert out.precision == ("fp16" if precision == "fp16" else "int8")
    ev = z.eval_feeds(5)
    score = z.task_metric(fidelity.predict(art, ev), fidelity.predict(out, ev))
    assert score >= min_score
    assert out.metadata["layout_check_cosine"] > (0.999 if precision == "fp16" else 0.5)


@pytest.mark.onnx2tf
@pytest.mark.slow
@onnx2tf_opt_in
def test_ppocr_det_dynamic_range_int8(tmp_path):
    from edgekit.quality import fidelity
    from edgekit.zoo import models as zoo

    z = zoo.resolve("zoo:ppocr-det")
    sh = {"x": [1, 3, 256, 256]}
    art = z.artifact()
    ctx = StepContext(work_dir=tmp_path / "w", profile=None, calib_data=lambda n: z.calib_feeds(n, shapes=sh))
    out = TfliteStep().run(art, TfliteConfig(precision="int8-dynamic", calib_samples=2), ctx)
    ev = z.eval_feeds(2, shapes=sh)
    assert z.task_metric(fidelity.predict(art, ev), fidelity.predict(out, ev)) > 0.8


@pytest.mark.onnx2tf
@pytest.mark.slow
@onnx2tf_opt_in
def test_unsupported_op_fails_with_tool_message(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("TfIdfVectorizer", ["x"], ["o"], name="tfidf0", mode="TF", min_gram_length=1, max_gram_length=1, max_skip_count=0, ngram_counts=[0], ngram_indexes=[0], pool_int64s=[1])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])], [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    p = tmp_path / "tfidf.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))
    ctx = StepContext(work_dir=tmp_path / "w", profile=None, calib_data=lambda n: [{"x": np.array([[1, 2, 1, 3]], np.int64)}])
    with pytest.raises(StepError) as ei:
        TfliteStep().run(load_artifact(p), TfliteConfig(precision="fp32"), ctx)
    assert ei.value.step == "tflite" and ei.value.op == "TfIdfVectorizer" and ei.value.node == "tfidf0"
    assert "TfIdfVectorizer OP is not yet implemented" in ei.value.tool_message
    assert list((tmp_path / "w").glob("onnx2tf-*/onnx2tf.log"))  # the log is kept


@pytest.mark.onnx2tf
@pytest.mark.slow
@pytest.mark.skipif(not (_env_ready() or OPT_IN), reason="needs the onnx2tf tool env (created by .ci/run, or opt in: EDGEKIT_TEST_ONNX2TF=1)")
def test_failed_conversion_log_is_kept_where_the_message_says(tmp_path):
    """Through the pipeline the step's work dir is deleted on failure; the log the message points to must survive."""
    import re

    import onnx
    from onnx import TensorProto, helper

    from edgekit.workflows.deploy import deploy

    node = helper.make_node("TfIdfVectorizer", ["x"], ["o"], name="tfidf0", mode="TF", min_gram_length=1, max_gram_length=1, max_skip_count=0, ngram_counts=[0], ngram_indexes=[0], pool_int64s=[1])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])], [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, 1])])
    p = tmp_path / "tfidf.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))
    with pytest.raises(StepError) as ei:
        deploy(str(p), "x86-cpu", runtime="tflite", precision="fp32", simplify=False, run_benchmark=False, cache_dir=tmp_path / "c")
    kept = Path(re.search(r"kept in (\S+)", str(ei.value)).group(1))
    assert (kept / "onnx2tf.log").is_file(), f"{kept} does not hold the log"
    assert kept.parent == (tmp_path / "c" / "failed").resolve()


def test_shape_reaches_onnx2tf_ois_for_dynamic_dims(ppocr_det_path):
    """`--shape` goes into the tflite step's config, so onnx2tf gets `-ois` for the model's dynamic dims even
    without calibration data (before: only data shapes did, and a model without data asked for --shape again)."""
    from edgekit.converters.tflite import _concrete_shapes
    from edgekit.core.plan import PlanOptions, make_plan
    from edgekit.core.profiles import load_profile

    art = load_artifact(ppocr_det_path)
    assert any(not isinstance(d, int) or d <= 0 for d in art.inputs[0].shape)  # PP-OCR det: dynamic H, W
    plan = make_plan(art, "det", load_profile("x86-cpu"), PlanOptions(runtime="tflite", precision="fp32", shapes={"x": [1, 3, 320, 320]}))
    step = next(s for s in plan.steps if s.step == "tflite")
    cfg = TfliteConfig(**step.config)
    assert cfg.input_shapes == {"x": [1, 3, 320, 320]}
    assert _concrete_shapes(art, cfg, []) == {"x": [1, 3, 320, 320]}
    plain = next(s for s in make_plan(art, "det", load_profile("x86-cpu"), PlanOptions(runtime="tflite", precision="fp32")).steps if s.step == "tflite")
    with pytest.raises(CalibrationError, match="pass --shape x="):
        _concrete_shapes(art, TfliteConfig(**plain.config), [])
