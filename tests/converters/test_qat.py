"""QAT: the ONNX->torch interpreter reproduces real models, training runs and lowers the distillation loss, the QDQ
export is what was trained, and OpenVINO converts it to an INT8 IR."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from edgekit.converters.onnx_torch import OnnxModule  # noqa: E402
from edgekit.converters.qat import QatConfig, QatStep, default_val_samples, has_qdq  # noqa: E402
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
    _assert_export_matches_fake_quant(student, out.path)



def test_qat_act_range_mse_is_recorded_never_worse_than_minmax_and_exports_faithfully(small_onnx, tmp_path):
    """act_range mse: every activation quantizer's searched range has a quantization MSE <= min/max's on its samples
    (report.json records the mean ratio), and the QDQ export still computes what the fake-quant model computed."""
    import edgekit.converters.qat as qat

    seen = {}
    real_export = qat.QatStep._export

    def spy(model, student, acts, quantized, out_path):
        seen["student"], seen["acts"] = student, acts
        return real_export(model, student, acts, quantized, out_path)

    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 8), 0)
    qat.QatStep._export = staticmethod(spy)
    try:
        out = QatStep().run(load_artifact(small_onnx), QatConfig(max_steps=1, train_samples=8, init_samples=8, batch_size=4,
                                                                 act_range="mse", val_samples=0), ctx)
    finally:
        qat.QatStep._export = staticmethod(real_export)
    rec = ctx.report["qat"]
    assert rec["act_range"] == "mse"
    searched = [a.range_search for a in seen["acts"].values()]
    assert searched and all(r is not None and r["mse"] <= r["mse_minmax"] for r in searched)
    assert rec["act_range_mse_ratio"] is not None and rec["act_range_mse_ratio"] <= 1.0
    _assert_export_matches_fake_quant(seen["student"], out.path)


def _assert_export_matches_fake_quant(student, path) -> None:
    """The exported QDQ model (run by ONNX Runtime) computes what the trained student's fake-quant forward computed."""
    student.output_override = {}
    feeds = _feeds(4, 2)
    with torch.no_grad():
        fq = np.concatenate([student(torch.from_numpy(f["x"]))[0].numpy() for f in feeds])
    assert np.abs(fq - _ort(path, feeds)).max() < 2e-3

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
                                                            batch_size=4, max_search_evals=6, search="greedy"), ctx)
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


def test_interpreter_trains_only_weights_and_biases_of_weighted_ops(ppocr_rec_path):
    """On PP-OCRv4 rec: BatchNorm statistics, LayerNorm gamma/beta, the float constants of Mul/Add/Div (hardswish 3/6,
    attention scales, position terms) and shape scalars are buffers; only Conv/MatMul weights and biases are Parameters
    the optimiser can move."""
    from edgekit.converters.onnx_torch import onnx_constants

    model = onnx.load(str(ppocr_rec_path))
    consts = onnx_constants(model)
    module = OnnxModule(model, "rec")
    weighted = {n.input[k] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") for k in (1, 2)
                if len(n.input) > k and n.input[k] in consts}
    other = {i for n in model.graph.node if n.op_type not in ("Conv", "Gemm", "MatMul") for i in n.input if i in consts and consts[i].dtype == np.float32}
    assert set(module.param_names) == weighted
    norm = {n.input[k] for n in model.graph.node if n.op_type in ("BatchNormalization", "LayerNormalization") for k in (1, 2) if len(n.input) > k}
    assert other & norm and not other & set(module.param_names)
    assert len(other - norm) > 10  # elementwise float constants exist, and none of them trains


def test_run_from_an_inner_tensor_computes_the_tail_and_rejects_a_tensor_that_does_not_cut(small_onnx):
    from edgekit.converters.qat import nodes_above, tail_split

    module = OnnxModule(onnx.load(str(small_onnx)), "small").eval()
    split = tail_split(module, "auto")
    gemm = next(n for n in module.nodes if n.op_type == "Gemm")
    assert gemm.name in nodes_above(module, split)
    assert not any(n.op_type == "Conv" and n.name in nodes_above(module, split) for n in module.nodes)
    x = torch.from_numpy(_feeds(1, 3)[0]["x"])
    with torch.no_grad():
        full = module(x)[0]
        feat = module.run_from({"x": x}, [split])[0]
        tail = module.run_from({split: feat})[0]
    assert torch.allclose(full, tail)
    with pytest.raises(StepError, match="not produced"):
        tail_split(module, "no-such-tensor")
    from onnx import TensorProto, helper

    # y = relu(x) + x: the skip connection means y depends on more than relu's output
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Add", ["r", "x"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    skip = OnnxModule(helper.make_model(graph), "skip")
    with pytest.raises(StepError, match="depend on more than tensor 'r'"):
        tail_split(skip, "r")
    with pytest.raises(StepError, match="cannot be computed"):
        skip.run_from({"r": torch.ones(1, 4)})


def test_hard_label_term_prefers_the_teachers_class_where_kl_cannot_tell(small_onnx):
    """At a low-margin position, a student that flips the teacher's top-1 and one that widens its margin have the same
    KL; the hard-label term separates them (the flip is what changes a decoded line)."""
    from edgekit.converters.finetune import distill_loss

    teacher = torch.tensor([[[0.05, 0.0, -3.0]]])
    flip = torch.tensor([[[0.0, 0.05, -3.0]]])
    wide = torch.tensor([[[0.15, 0.0, -3.0]]])
    kl_flip = float(distill_loss(torch, [flip], [teacher], [True]))
    kl_wide = float(distill_loss(torch, [wide], [teacher], [True]))
    assert abs(kl_flip - kl_wide) < 0.05 * kl_flip
    assert float(distill_loss(torch, [wide], [teacher], [True], 1.0)) < float(distill_loss(torch, [flip], [teacher], [True], 1.0)) - 0.05


def test_qat_tail_training_leaves_the_layers_below_the_cut_as_quantized(small_onnx, tmp_path):
    """tail auto: only the layers above the cut move (on cached features); the convolutions below keep the weights
    they had, and the distillation loss on the fixed batch falls."""
    def int8_weights(path):
        q = onnx.load(str(path))
        return {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer if i.name.endswith("_q")}

    runs = {}
    for tail in ("auto", "off"):
        ctx = minimal_context(tmp_path, tail)
        ctx.calib_data = lambda n: _feeds(min(n, 8), 0)
        out = QatStep().run(load_artifact(small_onnx), QatConfig(tail=tail, max_steps=20, train_samples=8, init_samples=8, batch_size=8,
                                                                lr=1e-3, val_samples=0), ctx)
        runs[tail] = (ctx.report["qat"], int8_weights(out.path))
    rec, w = runs["auto"]
    assert rec["trained"].startswith("layers above") and rec["tail"]["ops"] == 2 and rec["tail"]["samples"] == 8
    assert rec["loss_last"] < rec["loss_first"]
    ctx0 = minimal_context(tmp_path, "zero")
    ctx0.calib_data = lambda n: _feeds(min(n, 8), 0)
    w0 = int8_weights(QatStep().run(load_artifact(small_onnx), QatConfig(max_steps=1, lr=1e-12, lr_quant=1e-12, train_samples=8,
                                                                         init_samples=8, val_samples=0), ctx0).path)
    convs = [k for k in w if w[k].ndim == 4]
    heads = [k for k in w if w[k].ndim == 2]
    assert len(convs) == 3 and all(np.array_equal(w[k], w0[k]) for k in convs)
    assert any(not np.array_equal(w[k], w0[k]) for k in heads)
    assert runs["off"][0]["trained"] == "every quantized op"
    assert any(not np.array_equal(runs["off"][1][k], w0[k]) for k in convs)


class _Branchy(torch.nn.Module):
    """One activation feeding two convolutions (as PP-OCR det's FPN does): both consumers share ONE activation quantizer."""

    def __init__(self):
        super().__init__()
        self.c0 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.a = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = torch.relu(self.c0(x))
        return self.a(y) + self.b(y)


def test_qat_trains_a_model_whose_activation_quantizer_is_shared_by_two_consumers(tmp_path):
    """Clamping a shared quantizer's scale in place broke backward() ("modified by an inplace operation") at the first
    training step of PP-OCR det; training must run and lower the loss."""
    torch.manual_seed(0)
    path = tmp_path / "branchy.onnx"
    torch.onnx.export(_Branchy().eval(), (torch.randn(1, 3, 16, 16),), str(path), input_names=["x"], output_names=["y"], opset_version=13, dynamo=False)
    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 8), 0)
    QatStep().run(load_artifact(path), QatConfig(max_steps=12, train_budget_s=600, train_samples=8, init_samples=8, batch_size=8, lr=1e-3,
                                                 val_samples=0, tail="off"), ctx)
    rec = ctx.report["qat"]
    assert rec["steps"] == 12 and rec["quantized_ops"] == 3 and rec["activation_quantizers"] == 2
    assert rec["loss_last"] < rec["loss_first"]


# --- OpenVINO runs the qat step's QDQ export as ONNX Runtime does (issue 16, det) ------------------------------------

DET_SE_IN, DET_SE_OUT = "conv2d_470.tmp_0", "p2o.Add.241"  # PP-OCRv4 det neck: 1x1 conv -> squeeze-excitation -> Mul/Add


def _det_se_block(det_path, tmp_path):
    """The smallest real graph that showed the divergence: PP-OCRv4 det's p2o.Conv.43 (1x1, no bias) whose output feeds a
    GlobalAveragePool -> Conv -> Relu -> Conv -> HardSigmoid -> Mul -> Add (the RSE block), cut out of the FP32 model,
    with its real input activations (det's own prefix on zoo calibration pages, 160x160)."""
    import onnxruntime as ort

    from edgekit.zoo import models as zoo

    pre, block = tmp_path / "prefix.onnx", tmp_path / "se_block.onnx"
    onnx.utils.extract_model(str(det_path), str(pre), ["x"], [DET_SE_IN])
    onnx.utils.extract_model(str(det_path), str(block), [DET_SE_IN], [DET_SE_OUT])
    sess = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"])
    pages = zoo.resolve("zoo:ppocr-det").calib_feeds(6, shapes={"x": [1, 3, 160, 160]})
    feeds = [{DET_SE_IN: sess.run(None, {"x": p["x"]})[0]} for p in pages]
    return block, feeds


def _ov_vs_ort(path, feeds):
    import onnxruntime as ort
    import openvino as ov

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    a = np.concatenate([sess.run(None, f)[0].ravel() for f in feeds])
    b = np.concatenate([np.asarray(compiled(f)[0]).ravel() for f in feeds])
    return float(np.linalg.norm(b - a) / np.linalg.norm(a))


def test_qat_export_for_openvino_runs_the_same_in_openvino_and_onnxruntime_on_det_se_block(ppocr_det_path, tmp_path):
    """OpenVINO's CPU plugin mis-executed the QDQ det model where an INT8 conv's output feeds a squeeze-excitation
    block (pooled values near zero; IoU 0.90 vs 0.96 in ONNX Runtime on the whole model). The openvino-target export
    keeps that conv FP32, and OpenVINO and ONNX Runtime then agree; an onnxruntime-target export quantizes it."""
    pytest.importorskip("openvino")
    block, feeds = _det_se_block(ppocr_det_path, tmp_path)
    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: feeds[:n]
    cfg = dict(max_steps=1, lr=1e-12, lr_quant=1e-12, train_samples=6, init_samples=6, batch_size=2, val_samples=0, tail="off")
    out = QatStep().run(load_artifact(block), QatConfig(target="openvino", **cfg), ctx)
    assert ctx.report["qat"]["openvino_kept_float"] == ["p2o.Conv.43"]
    assert "conv2d_141.w_0" not in _int8_weight_names(out.path)  # p2o.Conv.43's weight stays float
    assert _ov_vs_ort(out.path, feeds) < 0.02  # 0.34 when p2o.Conv.43 is INT8 (main before this fix)

    ctx2 = minimal_context(tmp_path, "work2")
    ctx2.calib_data = lambda n: feeds[:n]
    out2 = QatStep().run(load_artifact(block), QatConfig(target="onnxruntime", **cfg), ctx2)
    assert "conv2d_141.w_0" in _int8_weight_names(out2.path) and ctx2.report["qat"]["openvino_kept_float"] == []


@pytest.mark.parametrize("target,runtime", [("openvino", "openvino"), ("onnxruntime", "onnxruntime")])
def test_qat_validation_scores_with_the_plans_runtime(small_onnx, tmp_path, monkeypatch, target, runtime):
    """The mixed-precision search and early stopping judge the QDQ export on the runtime that will run it: OpenVINO's
    IR for an openvino target (it runs a QDQ graph its own way), ONNX Runtime otherwise; the report says which."""
    if runtime == "openvino":
        pytest.importorskip("openvino")
    import edgekit.converters.qat as qat

    calls = []
    real = qat._openvino_outputs
    monkeypatch.setattr(qat, "_openvino_outputs", lambda path, feeds, threads, hint=None: calls.append(len(feeds)) or real(path, feeds, threads, hint))
    ctx = minimal_context(tmp_path)
    pool = _feeds(24, 0)
    ctx.calib_data = lambda n: pool[:n]
    ctx.task_metric = _closeness
    out = QatStep().run(load_artifact(small_onnx), QatConfig(target=target, max_steps=1, train_samples=16, val_samples=8, init_samples=8,
                                                            batch_size=4, mixed="off", tail="off"), ctx)
    rec = ctx.report["qat"]
    assert rec["validated_with"] == runtime, rec
    n_val = rec["val_samples"]
    compared = 2 if (rec["gptq"]["smoothed"] or {}).get("validation_with") else 0  # activation smoothing: with and without
    assert (len(calls) == len(rec["validation"]) + compared and set(calls) == {n_val}) if runtime == "openvino" else calls == []
    if runtime == "openvino":  # the final validation is OpenVINO's score of the exported model
        import openvino as ov

        compiled = ov.Core().compile_model(ov.convert_model(str(out.path)), "CPU", {"INFERENCE_NUM_THREADS": 1})
        val = pool[-n_val:]
        ref = [[r] for r in _ort(small_onnx, val)[:, None]]
        got = [[np.asarray(compiled(f)[0])[0]] for f in val]
        assert abs(_closeness(ref, got) - rec["validation"][-1]["score"]) < 1e-3
def test_topk_teacher_kl_equals_the_dense_kl_when_k_covers_every_class():
    from edgekit.converters.finetune import distill_loss, topk_logprobs

    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 10, generator=g)
    t = torch.randn(2, 5, 10, generator=g) * 3
    idx, logp = topk_logprobs(t.numpy(), 10)
    assert idx.shape == (2, 5, 10) and (np.diff(logp, axis=-1) <= 0).all()  # sorted, most likely first
    for hard in (0.0, 1.0):
        for margin in (0.0, 2.0):
            dense = distill_loss(torch, [s], [t], [True], hard, margin)
            cached = distill_loss(torch, [s], [(torch.from_numpy(idx), torch.from_numpy(logp))], [True], hard, margin)
            assert torch.allclose(dense, cached, atol=1e-5), (hard, margin)
    # k = 3 of 10 classes: the student matching the teacher exactly still has ~0 loss, a wrong student does not
    idx3, logp3 = topk_logprobs(t.numpy(), 3)
    same = distill_loss(torch, [t], [(torch.from_numpy(idx3), torch.from_numpy(logp3))], [True])
    other = distill_loss(torch, [s], [(torch.from_numpy(idx3), torch.from_numpy(logp3))], [True])
    assert float(same) < 1e-4 < float(other)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_qat_fast_trainer_with_cached_teacher_and_frozen_ranges_lowers_the_loss_and_exports_faithfully(small_onnx, tmp_path, optimizer):
    """The fast trainer (planned forward, teacher's top-k cached once on ONNX Runtime, activation ranges frozen after
    init) lowers the distillation loss on a fixed batch, leaves the activation scales as initialised, and the QDQ export
    computes what the fake-quantized torch model computes."""
    import edgekit.converters.qat as qat

    seen = {}
    real_export = qat.QatStep._export

    def spy(model, student, acts, quantized, out_path):
        seen.update(student=student, scales={k: float(a.scale) for k, a in acts.items()})
        return real_export(model, student, acts, quantized, out_path)

    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 8), 0)
    cfg = QatConfig(max_steps=25, train_budget_s=600, train_samples=8, init_samples=8, batch_size=8, teacher_topk=4, tail="off",
                    learn_act_ranges=False, optimizer=optimizer, lr=1e-3 if optimizer == "adam" else 3e-2)
    qat.QatStep._export = staticmethod(spy)
    try:
        out = QatStep().run(load_artifact(small_onnx), cfg, ctx)
    finally:
        qat.QatStep._export = staticmethod(real_export)
    rec = ctx.report["qat"]
    assert rec["steps"] == 25 and rec["loss_last"] < 0.95 * rec["loss_first"]
    assert rec["teacher_cache"]["topk"] == 4 and rec["optimizer"] == optimizer and rec["learn_act_ranges"] is False
    student = seen["student"]
    assert student.fast and student._plans
    q = onnx.load(str(out.path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    for name, scale in seen["scales"].items():
        assert float(inits[name.replace("/", "_") + "_act_scale"]) == pytest.approx(scale)
    _assert_export_matches_fake_quant(student, out.path)


def test_qat_tail_auto_trains_the_whole_network_when_no_quantized_op_is_above_the_cut(small_onnx, tmp_path):
    """With the head (fc Gemm, MatMul) kept FP32, the layers above the auto cut hold no fake quantizer: training only
    them cannot recover the INT8 convolutions, so every quantized op trains (with the cached teacher)."""
    probe = OnnxModule(onnx.load(str(small_onnx)), "small")
    above = [n.name for n in probe.nodes if n.op_type in ("Gemm", "MatMul")]
    ctx = minimal_context(tmp_path)
    ctx.calib_data = lambda n: _feeds(min(n, 8), 0)
    msgs = []
    ctx.progress = msgs.append
    QatStep().run(load_artifact(small_onnx), QatConfig(max_steps=3, train_samples=8, init_samples=8, batch_size=8, float_nodes=above), ctx)
    rec = ctx.report["qat"]
    assert rec["quantized_ops"] == 3 and rec["trained"] == "every quantized op" and rec["tail"] is None
    assert rec["teacher_cache"]["topk"] == 16
    assert any("no quantized op is above" in m for m in msgs)


def _agreement(ref, new):
    """A discrete task metric like lines identical: the share of samples whose classes ranked by probability are in
    FP32's order (the small model's classes are close, so INT8 reorders some)."""
    return float(np.mean([list(np.argsort(r[0].ravel())) == list(np.argsort(n[0].ravel())) for r, n in zip(ref, new)]))


def test_qat_build_up_search_ranks_every_op_quantizes_the_chosen_set_and_skips_training_when_it_meets_the_budget(small_onnx, tmp_path):
    """Softmax output -> the build-up search (auto): every weighted op is ranked by the damage it does alone, the chosen
    set is what the exported QDQ quantizes (the rest read float weights), the validation score of the export is the
    search's, and when the mixed model meets the budget on validation no training step runs."""
    pytest.importorskip("openvino")
    ctx = minimal_context(tmp_path)
    pool = _feeds(40, 3)
    ctx.calib_data = lambda n: pool[:n]
    ctx.task_metric = _agreement
    cfg = QatConfig(max_steps=1, max_drop=0.0, search_margin=0.0, train_samples=16, val_samples=24, init_samples=8, batch_size=4,
                    float_precision="f32", tail="off", weight_round="nearest")  # rounded weights: INT8 reorders some classes
    out = QatStep().run(load_artifact(small_onnx), cfg, ctx)
    rec = ctx.report["qat"]
    mixed = rec["mixed_precision"]
    assert mixed["search"] == "build-up" and rec["val_samples"] == 24 and mixed["accepted_at"] == 1.0, mixed
    assert set(mixed["damage_alone"]) == set(mixed["quantized"]) | set(mixed["kept_float"]) and len(mixed["damage_alone"]) == 5
    assert list(mixed["damage_alone"].values()) == sorted(mixed["damage_alone"].values())
    phases = [v["phase"] for v in mixed["variants"]]
    assert phases[0] == "baseline" and phases.count("damage") == 5 and mixed["evaluations"] <= 5 + 16
    assert _int8_weight_names(out.path) == {q for q in _weights_of(out.path, mixed["quantized"])}
    q = onnx.load(str(out.path))
    consumers = {n.name: n for n in q.graph.node}
    inits = {i.name: i for i in q.graph.initializer}
    for name in mixed["kept_float"]:
        assert inits[consumers[name].input[1]].data_type == onnx.TensorProto.FLOAT
    # the f32 hint the float parts were validated with travels with the artifact to the session options
    from edgekit.core.runtimes import runtime_options_for

    assert mixed["hint"] == "f32" and out.metadata["inference_precision_hint"] == "f32"
    from edgekit.converters.openvino import OpenVinoConfig, OpenVinoStep

    ir = OpenVinoStep().run(out, OpenVinoConfig(precision="int8"), minimal_context(tmp_path, "ov"))
    assert ir.metadata["inference_precision_hint"] == "f32" and ir.metadata["int8_from"] == "qdq"
    assert runtime_options_for("openvino", "int8", ir.metadata) == {"inference_precision_hint": "f32"}
    assert runtime_options_for("openvino", "int8", {}) == {}  # other INT8 artifacts: OpenVINO's default
    if mixed["met_budget"]:
        assert mixed["score"] == 1.0 and rec["steps"] == 0 and rec["trained"].startswith("nothing")
        assert rec["validation"] is None
    else:
        assert rec["steps"] == 1


def _weights_of(path, nodes):
    q = onnx.load(str(path))
    by = {n.name: n for n in q.graph.node}
    return {by[n].input[1][: -len("_dq")] for n in nodes}


@pytest.mark.parametrize("bf16_breaks", [True, False])
def test_qat_float_precision_auto_runs_float_parts_f32_only_when_the_default_precision_alone_misses(small_onnx, tmp_path, monkeypatch, bf16_breaks):
    """float_precision auto: the FP32 source is scored under OpenVINO's default inference precision first. Here that run
    is replaced by the exact FP32 outputs, or by outputs whose class order is reversed (what bf16 does to near-ties, in
    the extreme), so the decision does not depend on this CPU having bf16: f32 is chosen and recorded only in the second case."""
    pytest.importorskip("openvino")
    import edgekit.converters.qat as qat

    real = qat._openvino_outputs
    source_calls = []

    def fake(path, feeds, threads, hint=None):
        if str(path) == str(small_onnx):
            source_calls.append(hint)
            ref = [[r[None]] for r in _ort(small_onnx, feeds)]
            return [[o[0][..., ::-1].copy()] for o in ref] if bf16_breaks else ref
        return real(path, feeds, threads, hint)

    monkeypatch.setattr(qat, "_openvino_outputs", fake)
    ctx = minimal_context(tmp_path)
    pool = _feeds(40, 3)
    ctx.calib_data = lambda n: pool[:n]
    ctx.task_metric = _agreement
    out = QatStep().run(load_artifact(small_onnx), QatConfig(max_steps=1, max_drop=0.0, search_margin=0.0, train_samples=16, val_samples=24,
                                                            init_samples=8, batch_size=4, tail="off", max_search_evals=2), ctx)
    mixed = ctx.report["qat"]["mixed_precision"]
    assert source_calls == [None]  # one check, under the default precision
    assert mixed["float_precision"] == "auto" and mixed["fp32_default_hint_score"] == (0.0 if bf16_breaks else 1.0)
    assert mixed["hint"] == ("f32" if bf16_breaks else None)
    assert out.metadata.get("inference_precision_hint") == ("f32" if bf16_breaks else None)


def test_default_validation_size_lets_the_build_up_lose_at_least_three_lines_where_256_would_allow_fewer():
    import math

    def allowed(n, max_drop, margin=0.5):  # samples the build-up may lose: score >= 1 - max_drop * (1 - margin)
        return math.floor(n * max_drop * (1 - margin) + 1e-9)

    def default(class_outputs, max_drop, margin):
        return default_val_samples(class_outputs, QatConfig(max_drop=max_drop, search_margin=margin).search_drop)

    assert default(False, 0.01, 0.5) == 64  # continuous scores (det IoU, cosine) keep the small set
    assert default(True, None, 0.5) == 256  # no budget: validation is only early stopping
    for max_drop in (0.005, 0.01, 0.02, 0.03, 0.05, 0.1):
        n = default(True, max_drop, 0.5)
        assert n in (256, 768)
        # the larger set only where 256 allows fewer than 3 lost lines; at 1 % (the rec done-when) it allows 3, not 1
        assert (n == 768) == (allowed(256, max_drop) < 3), (max_drop, n)
    assert allowed(default(True, 0.01, 0.5), 0.01) == 3 and allowed(256, 0.01) == 1
    assert default(True, 0.01, 0.0) == 768 and default(True, 0.02, 0.0) == 256  # no reserve: 5 of 256 at 2 %
