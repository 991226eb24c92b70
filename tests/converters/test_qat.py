"""QAT: the ONNX->torch interpreter reproduces real models, training runs and lowers the distillation loss, the QDQ
export is what was trained, and OpenVINO converts it to an INT8 IR."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from edgekit.converters.onnx_torch import OnnxModule  # noqa: E402
from edgekit.converters.qat import QatConfig, QatStep, has_qdq  # noqa: E402
from edgekit.core.errors import CalibrationError, StepError  # noqa: E402
from edgekit.core.artifact import load_artifact  # noqa: E402
from tests.converters.stepctx import minimal_context  # noqa: E402


class _Small(torch.nn.Module):
    """Conv-BN-ReLU x2, a depthwise conv, global pool, a Linear and a MatMul head with Softmax: the op mix of PP-OCR rec."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = torch.nn.BatchNorm2d(16)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c2 = torch.nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.b2 = torch.nn.BatchNorm2d(24)
        self.fc = torch.nn.Linear(24, 32)
        self.head = torch.nn.Parameter(torch.randn(32, 10, generator=g) * 0.3)
        with torch.no_grad():
            for b in (self.b1, self.b2):
                b.running_mean.copy_(torch.randn(b.num_features, generator=g) * 0.1)
                b.running_var.copy_(torch.rand(b.num_features, generator=g) + 0.5)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.nn.functional.hardswish(self.dw(y))
        y = torch.relu(self.b2(self.c2(y)))
        y = y.mean(dim=(2, 3))
        y = torch.relu(self.fc(y))
        return torch.softmax(y @ self.head, dim=-1)


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = _Small().eval()
    path = tmp_path_factory.mktemp("qat") / "small.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), input_names=["x"], output_names=["probs"], opset_version=13, dynamo=False)
    return path


def _feeds(n, seed):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def _ort(path, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def test_interpreter_matches_onnxruntime_on_ppocr_rec(ppocr_rec_path):
    """The interpreter runs the real PP-OCRv4 rec graph (opset 12, 860 nodes) and agrees with ONNX Runtime."""
    from edgekit.zoo import models as zoo

    feeds = zoo.resolve("zoo:ppocr-rec").eval_feeds(1, shapes={"x": [1, 3, 48, 160]})
    module = OnnxModule(onnx.load(str(ppocr_rec_path)), "rec")
    with torch.no_grad():
        out = module(torch.from_numpy(feeds[0]["x"]))[0].numpy()
    ref = _ort(ppocr_rec_path, feeds)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-4
    assert len(module.params) > 30  # conv/matmul weights and biases are trainable


def test_interpreter_rejects_unknown_ops_by_name(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Det", ["x"], ["y"], name="det0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    with pytest.raises(StepError, match="Det"):
        OnnxModule(helper.make_model(graph), "det.onnx")


def test_qat_end_to_end_trains_exports_qdq_and_openvino_runs_int8(small_onnx, tmp_path):
    """Build, train a few steps, export QDQ, run it in ONNX Runtime, convert for OpenVINO, score against FP32."""
    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 8), 0)
    art = load_artifact(small_onnx)
    out = QatStep().run(art, QatConfig(max_steps=30, train_budget_s=600, train_samples=8, init_samples=8, batch_size=8, lr=1e-3), ctx)
    rec = ctx.report["qat"]
    assert rec["steps"] == 30 and rec["quantized_ops"] == 5  # c1, dw, c2, fc (Gemm), head (MatMul)
    assert rec["distilled"].startswith("logits")
    # the distillation loss on this fixed batch goes down with training
    assert rec["loss_last"] < rec["loss_first"]
    assert out.precision == "int8" and has_qdq(out.path) and not has_qdq(small_onnx)
    q = onnx.load(str(out.path))
    int8_weights = [i for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]
    assert len(int8_weights) == 5  # weights are stored as int8 (+ per-channel scales)
    held_out = _feeds(16, 1)
    ref, got = _ort(small_onnx, held_out), _ort(out.path, held_out)
    assert not np.allclose(ref, got)  # quantization is really applied
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.75
    pytest.importorskip("openvino")
    from edgekit.converters.openvino import OpenVinoConfig, OpenVinoStep
    from edgekit.quality.fidelity import predict

    ov_ctx = minimal_context(tmp_path, "ov")
    ir = OpenVinoStep().run(out, OpenVinoConfig(precision="int8"), ov_ctx)
    assert ir.precision == "int8" and ir.metadata.get("int8_from") == "qdq"
    assert any("QuantizeLinear" in n for n in ov_ctx.notes)
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(str(ir.path)).get_ops()}
    assert "FakeQuantize" in ops
    ov_out = np.concatenate([o[0] for o in predict(ir, held_out, threads=1)])
    assert (ov_out.argmax(-1) == got.argmax(-1)).mean() >= 0.9  # OpenVINO runs what ONNX Runtime runs


def test_qat_export_matches_the_trained_fake_quant_model(small_onnx, tmp_path):
    """The written QDQ model computes what the fake-quantized torch model computed (the export is faithful)."""
    import edgekit.converters.qat as qat

    seen = {}
    real_export = qat.QatStep._export

    def spy(model, student, acts, quantized, out_path):
        seen["student"] = student
        return real_export(model, student, acts, quantized, out_path)

    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 8), 0)
    qat.QatStep._export = staticmethod(spy)
    try:
        out = QatStep().run(load_artifact(small_onnx), QatConfig(max_steps=3, train_samples=8, init_samples=8, batch_size=4), ctx)
    finally:
        qat.QatStep._export = staticmethod(real_export)
    student = seen["student"]
    student.output_override = {}
    feeds = _feeds(4, 2)
    with torch.no_grad():
        fq = np.concatenate([student(torch.from_numpy(f["x"]))[0].numpy() for f in feeds])
    assert np.abs(fq - _ort(out.path, feeds)).max() < 2e-3


def test_qat_needs_calibration_data_and_a_float_model(small_onnx, tmp_path):
    ctx = minimal_context(tmp_path)
    with pytest.raises(CalibrationError, match="--calib"):
        QatStep().run(load_artifact(small_onnx), QatConfig(max_steps=1), ctx)


def test_qat_symmetric_activations_for_tensorrt(small_onnx, tmp_path):
    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 4), 0)
    out = QatStep().run(load_artifact(small_onnx), QatConfig(target="tensorrt", max_steps=1, train_samples=4, init_samples=4), ctx)
    q = onnx.load(str(out.path))
    zps = [i for i in q.graph.initializer if i.name.endswith("_act_zp")]
    assert zps and all(i.data_type == onnx.TensorProto.INT8 for i in zps)
    assert all(int(onnx.numpy_helper.to_array(i)) == 0 for i in zps)
    assert ctx.report["qat"]["activations"].startswith("symmetric")


def _closeness(ref, new):
    """A strict continuous score (1 = identical outputs): any quantization error lowers it."""
    return float(1.0 - np.mean([np.abs(r[0] - n[0]).max() for r, n in zip(ref, new)]))


def _int8_weight_names(path):
    q = onnx.load(str(path))
    return {i.name[: -len("_q")] for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1}


def test_qat_mixed_precision_keeps_the_most_sensitive_ops_in_fp32(small_onnx, tmp_path):
    """With a budget no full-INT8 model meets, the sensitivity search keeps ops in FP32, scores better than all-INT8
    on the held-out calibration samples, and the exported model really has those weights in float."""
    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 32), 0)
    ctx.task_metric = _closeness
    out = QatStep().run(load_artifact(small_onnx), QatConfig(max_steps=2, max_drop=0.0, train_samples=24, val_samples=8, init_samples=8,
                                                            batch_size=4, max_search_evals=6), ctx)
    rec = ctx.report["qat"]
    mixed = rec["mixed_precision"]
    assert rec["val_samples"] == 8 and rec["train_samples"] == 24  # validation samples are not trained on
    assert 2 <= mixed["evaluations"] <= 6 and not mixed["met_budget"]
    assert mixed["kept_float"] and mixed["score"] > mixed["full_int8_score"]
    assert rec["quantized_ops"] == 5 - len(mixed["kept_float"])
    assert len(_int8_weight_names(out.path)) == rec["quantized_ops"]
    q = onnx.load(str(out.path))
    consumers = {n.name: n for n in q.graph.node}
    inits = {i.name: i for i in q.graph.initializer}
    for name in mixed["kept_float"]:  # the node reads its float weight directly (no DequantizeLinear in between)
        w = consumers[name].input[1]
        assert w in inits and inits[w].data_type == onnx.TensorProto.FLOAT


def test_qat_early_stopping_keeps_the_best_validated_checkpoint(small_onnx, tmp_path):
    """Training that wrecks the model (a huge learning rate) does not reach the output: the step-0 checkpoint, best on
    the validation samples, is restored and exported."""
    ctx = minimal_context(tmp_path)
    pool = _feeds(24, 0)
    ctx.calib_data = lambda n: pool[:n]
    ctx.task_metric = _closeness
    out = QatStep().run(load_artifact(small_onnx), QatConfig(max_steps=4, lr=5.0, train_samples=16, val_samples=8, init_samples=8,
                                                            batch_size=4, mixed="off"), ctx)
    rec = ctx.report["qat"]
    hist = rec["validation"]
    assert hist[0]["step"] == 0 and hist[-1]["step"] == 4 and hist[-1]["score"] < hist[0]["score"]
    assert rec["best_step"] == 0 and rec["mixed_precision"] is None
    val = pool[16:24]
    score = _closeness([[r] for r in _ort(small_onnx, val)[:, None]], [[r] for r in _ort(out.path, val)[:, None]])
    assert abs(score - hist[0]["score"]) < 1e-4  # what was exported is the restored checkpoint


def test_qat_backbone_scope_quantizes_only_the_convolutions_before_the_first_matmul(small_onnx, tmp_path):
    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 8), 0)
    out = QatStep().run(load_artifact(small_onnx), QatConfig(scope="backbone", max_steps=1, train_samples=8, init_samples=8, val_samples=0), ctx)
    assert ctx.report["qat"]["quantized_ops"] == 3  # c1, dw, c2; the Gemm (fc) and the MatMul head stay FP32
    assert len(_int8_weight_names(out.path)) == 3
