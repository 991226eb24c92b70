"""GPTQ weight rounding (converters/gptq.py) and its use by the QAT step: lower layer output error than round-to-nearest
on the same INT8 grid, and an export that carries exactly GPTQ's integers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")

from edgekit.converters.gptq import gptq_matrix  # noqa: E402
from edgekit.converters.qat import QatConfig, QatStep  # noqa: E402
from edgekit.core.artifact import load_artifact  # noqa: E402
from tests.converters.stepctx import minimal_context  # noqa: E402
from tests.converters.test_qat import _assert_export_matches_fake_quant, _feeds, small_onnx  # noqa: E402,F401


def _layer(seed=0, rows=32, cols=48, n=2000):
    """A weight matrix and correlated inputs (low-rank structure + noise, one input always 0), as real activations are."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.2
    X = torch.randn(cols, 6, generator=g, dtype=torch.float64) @ torch.randn(6, n, generator=g, dtype=torch.float64)
    X += 0.1 * torch.randn(cols, n, generator=g, dtype=torch.float64)
    X[5] = 0.0
    return W, X, X @ X.T / n


def _out_err(W, Wq, H) -> float:
    return float(torch.einsum("oi,ij,oj->", Wq - W, H, Wq - W))


def test_gptq_beats_round_to_nearest_on_the_layer_output_on_the_same_grid():
    W, X, H = _layer()
    K, scale = gptq_matrix(torch, W, H)
    assert torch.equal(K, torch.round(K)) and K.abs().max() <= 127  # integers of the INT8 grid
    assert torch.allclose(scale, W.abs().amax(1) / 127.0)  # the per-channel scale round-to-nearest uses
    rtn = torch.clamp(torch.round(W / scale[:, None]), -127, 127) * scale[:, None]
    gptq = K * scale[:, None]
    assert _out_err(W, gptq, H) < 0.5 * _out_err(W, rtn, H)
    assert torch.all(K[:, 5] == 0)  # an input that is always 0 gets weight 0, and no NaN from the singular H
    assert not torch.isnan(gptq).any()


def _int8_weights(path):
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n[: -len("_q")]: (v, inits[n[: -len("_q")] + "_scale"]) for n, v in inits.items() if n.endswith("_q") and v.dtype == np.int8}


def _run(small_onnx, tmp_path, name, calib=None, **cfg):  # noqa: F811
    """The QAT step without training or validation on `calib` (default: 16 feeds of the small model); returns the
    artifact, the report's qat record and what the export was given (student, quantized ops)."""
    import edgekit.converters.qat as qat

    seen = {}
    real_export = qat.QatStep._export

    def spy(model, student, acts, quantized, out_path):
        seen["student"], seen["quantized"] = student, quantized
        return real_export(model, student, acts, quantized, out_path)

    ctx = minimal_context(tmp_path, name)
    pool = calib if calib is not None else _feeds(16, 0)
    ctx.calib_data = lambda n: pool[:n]
    qat.QatStep._export = staticmethod(spy)
    try:
        out = QatStep().run(load_artifact(small_onnx), QatConfig(**{"train": "off", "train_samples": 16, "init_samples": 8, "val_samples": 0, **cfg}), ctx)
    finally:
        qat.QatStep._export = staticmethod(real_export)
    return out, ctx.report["qat"], seen


def test_qat_exports_gptq_integers_for_covered_ops_and_round_to_nearest_for_depthwise(small_onnx, tmp_path):  # noqa: F811
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(small_onnx)).graph.initializer}
    out, rec, seen = _run(small_onnx, tmp_path, "g", weight_round="gptq")
    by_weight = {q["weight"]: q for q in seen["quantized"]}
    covered = {w for w, q in by_weight.items() if "w_scale" in q}
    assert rec["weight_round"] == "gptq" and rec["gptq"]["ops"] == len(covered) >= 3  # two group-1 convs, the Linear, the head MatMul
    assert rec["gptq"]["output_error_ratio_median"] > 1.0  # lower layer output error than round-to-nearest on the same inputs
    exported = _int8_weights(out.path)
    differs = 0
    for w, (k, scale) in exported.items():
        q = by_weight[w]
        axis = q["axis"]
        shape = [1] * k.ndim
        shape[axis] = -1
        rtn = np.clip(np.round(fp32[w] / (np.abs(fp32[w]).max(axis=tuple(d for d in range(k.ndim) if d != axis)) / 127.0).reshape(shape)), -127, 127)
        if w in covered:
            assert np.allclose(scale, q["w_scale"])  # GPTQ's own scale (max|w| / 127 of the FP32 weight)
            # the FP32 weight (times its activation smoothing, if the layer got one) + GPTQ's offset, on GPTQ's grid
            assert np.array_equal(k, np.clip(np.round((fp32[w] * q.get("w_smooth", 1.0) + q["w_offset"]) / scale.reshape(shape)), -127, 127))
            differs += int(np.sum(k != rtn))
        else:  # the depthwise conv: not covered, plain round-to-nearest
            assert np.array_equal(k, rtn)
    assert differs > 0  # GPTQ chose other integers than rounding each weight
    assert len(covered) < len(exported)  # the depthwise conv is exported too, by rounding
    _assert_export_matches_fake_quant(seen["student"], out.path)


def test_qat_weight_round_nearest_exports_plain_rounding(small_onnx, tmp_path):  # noqa: F811
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(small_onnx)).graph.initializer}
    out, rec, seen = _run(small_onnx, tmp_path, "n", weight_round="nearest")
    assert rec["weight_round"] == "nearest" and rec["gptq"] is None
    assert not any("w_scale" in q for q in seen["quantized"])
    for w, (k, scale) in _int8_weights(out.path).items():
        axis = next(q["axis"] for q in seen["quantized"] if q["weight"] == w)
        shape = [1] * k.ndim
        shape[axis] = -1
        assert np.array_equal(k, np.clip(np.round(fp32[w] / scale.reshape(shape)), -127, 127))


def _weighted_ops(student):
    """The QAT step's record of each Conv/Gemm/MatMul with a constant weight (node, weight, output-channel axis)."""
    from edgekit.converters.onnx_torch import weight_axis

    out = []
    for node, attrs in zip(student.nodes, student.node_attrs):
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in student.param_names:
            w = student.value_of(node.input[1])
            out.append({"node": node.name, "weight": node.input[1], "axis": weight_axis(node, attrs, w.dim()), "op": node.op_type})
    return out


def test_op_macs_of_each_quantized_op_from_its_input_shape(small_onnx):  # noqa: F811
    from edgekit.converters.onnx_torch import OnnxModule
    from edgekit.converters.qat import op_macs

    student = OnnxModule(onnx.load(str(small_onnx)), "small").eval()
    quantized = _weighted_ops(student)
    macs = op_macs(student, quantized, _feeds(1, 0)[0])
    got = sorted(macs.values())
    # c1 3->16 3x3 pad 1 on 16x16; dw 16 groups 3x3; c2 16->24 3x3 stride 2 -> 8x8; fc 24->32; head 32->10
    want = sorted([16 * 16 * 16 * 27, 16 * 16 * 16 * 9, 24 * 8 * 8 * 16 * 9, 24 * 32, 32 * 10])
    assert got == [float(v) for v in want]


def test_a_layer_where_gptq_does_worse_than_rounding_keeps_rounding(small_onnx, tmp_path, monkeypatch):  # noqa: F811
    """GPTQ's answer is only taken where its layer output error is below round-to-nearest's (an ill-conditioned H made
    it worse on a probe); here GPTQ is made to return rounding plus one step everywhere."""
    import edgekit.converters.gptq as g

    real = g.gptq_matrix

    def off_by_one(torch_, W, H, damp=0.01):
        K, scale = real(torch_, W, H, damp)
        return torch.clamp(torch.round(W.double() / scale[:, None]) + 1, -127, 127), scale

    monkeypatch.setattr(g, "gptq_matrix", off_by_one)
    out, rec, seen = _run(small_onnx, tmp_path, "w", weight_round="gptq", smooth="off")
    assert rec["gptq"]["ops"] == 0 and not any("w_scale" in q for q in seen["quantized"])


def test_a_layer_whose_statistics_gptq_cannot_factor_keeps_rounding(small_onnx, tmp_path, monkeypatch):  # noqa: F811
    """A Cholesky failure (H not positive definite) in one layer is no traceback: that layer keeps plain rounding."""
    import edgekit.converters.gptq as g

    real, calls = g.gptq_matrix, []

    def first_fails(torch_, W, H, damp=0.01):
        calls.append(1)
        if len(calls) == 1:
            raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed")
        return real(torch_, W, H, damp)

    monkeypatch.setattr(g, "gptq_matrix", first_fails)
    out, rec, seen = _run(small_onnx, tmp_path, "c", weight_round="gptq", smooth="off")
    assert rec["gptq"]["ops"] == len(calls) - 1 >= 2
    _assert_export_matches_fake_quant(seen["student"], out.path)


def test_gptq_on_a_random_subset_of_positions_still_beats_rounding(small_onnx):  # noqa: F811
    """High-resolution convs enter H through at most max_columns positions per batch; with only 64 here, every covered
    layer still gets a lower output error (on its own subsampled H) and the same ops are covered."""
    from edgekit.converters.gptq import gptq_offsets
    from edgekit.converters.onnx_torch import OnnxModule

    student = OnnxModule(onnx.load(str(small_onnx)), "small").eval()
    quantized = _weighted_ops(student)
    full = gptq_offsets(torch, student, quantized, _feeds(16, 0), ["x"])
    sub = gptq_offsets(torch, student, quantized, _feeds(16, 0), ["x"], max_columns=64)
    assert set(sub) == set(full) and len(sub) >= 3
    assert all(r.e_gptq < r.e_rtn for r in sub.values())
