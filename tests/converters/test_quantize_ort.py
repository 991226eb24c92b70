"""quantize-ort on real models (MiniLM, PP-OCRv4 det/rec) with the real ONNX Runtime quantizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.zoo import models as zoo
from edgekit.core.artifact import load_artifact
from edgekit.core.errors import CalibrationError, FidelityError, StepError
from edgekit.core.profiles import load_profile
from edgekit.core.steps import StepContext
from edgekit.converters import quantize_ort as Q
from edgekit.converters.quantize_ort import QuantizeOrtConfig, QuantizeOrtStep

SMALL_DET = {"x": [1, 3, 256, 256]}


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory) -> Path:
    """MiniLM exported with the legacy exporter (opset 17), as the export step does."""
    import torch

    art = zoo.resolve("zoo:minilm").artifact()
    out = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(
            art.module.eval(), tuple(art.example_inputs), str(out), dynamo=False, opset_version=17,
            input_names=names, output_names=["sentence_embedding"],
            dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in names}, "sentence_embedding": {0: "batch"}},
        )
    return out


def _ctx(tmp_path, profile="x86-cpu", model=None, shapes=None, calib=True, evals=True, metric=True):
    z = zoo.resolve(model) if model else None
    return StepContext(
        work_dir=tmp_path / "work",
        profile=load_profile(profile) if isinstance(profile, str) else profile,
        calib_data=(lambda n: z.calib_feeds(n, shapes=shapes)) if (z and calib) else None,
        eval_data=(lambda n: z.eval_feeds(n, shapes=shapes)) if (z and evals) else None,
        task_metric=z.task_metric if (z and metric) else None,
        task_metric_name=z.task_metric_name if (z and metric) else None,
    )


def _ops(path) -> set:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_dynamic_int8_minilm_is_valid_and_reports_sizes(minilm_onnx, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # ORT's failed symbolic shape inference dumps files into the cwd; the step must not
    ctx = _ctx(tmp_path, model="zoo:minilm", calib=False)
    out = QuantizeOrtStep().run(load_artifact(minilm_onnx), QuantizeOrtConfig(eval_samples=4, latency_runs=1), ctx)
    onnx.checker.check_model(str(out.path))
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _ops(out.path)
    assert out.precision == "int8" and out.path.parent == ctx.work_dir
    rep = ctx.report
    assert rep["settings"]["mode"] == "dynamic"
    # x86 without VNNI: signed weights for MatMulInteger, per-channel; the reason is recorded for the plan/report
    assert rep["settings"]["weight_type"] == "int8" and rep["settings"]["per_channel"] is True
    assert any("no VNNI" in n for n in ctx.notes)
    (v,) = rep["variants"]
    assert v["size_bytes"] < rep["fp32"]["size_bytes"] and v["zipped_bytes"] < rep["fp32"]["zipped_bytes"]
    assert v["latency_ms"] > 0 and rep["fp32"]["latency_ms"] > 0 and rep["fp32"]["parameters"] > 20_000_000
    assert 0.9 < v["score"] <= 1.0 and v["metric"] == "embedding cosine"
    # intermediates (pre-processed model, variants) are cleaned up: only the result stays in the work dir
    assert [p.name for p in ctx.work_dir.iterdir()] == [out.path.name]
    assert list(cwd.iterdir()) == []  # no sym_shape_infer_temp.onnx / <uuid>.data left behind


def test_static_per_channel_on_ppocr_det_works_thanks_to_opset_upgrade(tmp_path):
    det = zoo.resolve("zoo:ppocr-det")
    ctx = _ctx(tmp_path, model="zoo:ppocr-det", shapes=SMALL_DET)
    cfg = QuantizeOrtConfig(mode="static", weight_type="int8", per_channel=True, calib_samples=4, eval_samples=2, latency_runs=1)
    out = QuantizeOrtStep().run(det.artifact(), cfg, ctx)
    model = onnx.load(str(out.path))
    onnx.checker.check_model(model)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13
    dq_axes = [a for n in model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "axis"]
    assert dq_axes, "per-channel weights carry an axis attribute"
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _ops(out.path)
    assert any("opset 12 -> 17" in n for n in ctx.notes)
    assert any("quant_pre_process" in n for n in ctx.notes)  # Constant-node weights folded first
    assert 0.5 < ctx.report["variants"][0]["score"] <= 1.0 and ctx.report["metric"] == "text-mask IoU"


def test_per_channel_qdq_without_opset_upgrade_is_invalid_and_never_kept(tmp_path, ppocr_det_path):
    """The failure mode the opset upgrade avoids: ORT writes DequantizeLinear(axis) into an opset-12 model."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(ppocr_det_path), str(pre), skip_symbolic_shape=True)
    feeds = zoo.resolve("zoo:ppocr-det").calib_feeds(2, shapes=SMALL_DET)
    bad = tmp_path / "bad.onnx"
    quantize_static(str(pre), str(bad), Q._FeedReader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    with pytest.raises(onnx.checker.ValidationError, match="Unrecognized attribute: axis for operator DequantizeLinear"):
        onnx.checker.check_model(str(bad))
    with pytest.raises(StepError, match="not valid ONNX and was not kept") as ei:
        Q.validate_or_raise(bad, "quantize-ort", feeds[0], 2)
    assert "Unrecognized attribute: axis" in str(ei.value)
    assert not bad.exists()


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_calibration_methods_give_valid_models_with_different_ranges(tmp_path, method):
    rec = zoo.resolve("zoo:ppocr-rec")
    ctx = _ctx(tmp_path, model="zoo:ppocr-rec", metric=False)
    cfg = QuantizeOrtConfig(mode="static", calibrate_method=method, calib_samples=3, eval_samples=1, latency_runs=1,
                            op_types_to_quantize=["Conv", "MatMul"])
    out = QuantizeOrtStep().run(rec.artifact(), cfg, ctx)
    onnx.checker.check_model(str(out.path))
    assert ctx.report["settings"]["calibrate_method"] == method
    model = onnx.load(str(out.path))
    inits = {i.name: i for i in model.graph.initializer}
    first_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    scale = float(onnx.numpy_helper.to_array(inits[first_q.input[1]]))
    # record the scale so the methods can be compared
    _SCALES[method] = scale
    if len(_SCALES) == 3:
        assert len({round(s, 9) for s in _SCALES.values()}) > 1, _SCALES


_SCALES: dict = {}


def test_static_without_calibration_names_calib(tmp_path):
    det = zoo.resolve("zoo:ppocr-det")
    ctx = _ctx(tmp_path, model="zoo:ppocr-det", shapes=SMALL_DET, calib=False)
    with pytest.raises(CalibrationError, match="--calib"):
        QuantizeOrtStep().run(det.artifact(), QuantizeOrtConfig(mode="static"), ctx)


def test_max_drop_without_eval_data_is_refused(tmp_path, ppocr_rec_path):
    ctx = _ctx(tmp_path)
    with pytest.raises(CalibrationError, match="--max-drop needs held-out evaluation data"):
        QuantizeOrtStep().run(load_artifact(ppocr_rec_path), QuantizeOrtConfig(mode="dynamic", max_drop=0.01), ctx)


def test_isa_defaults_differ_for_x86_novnni_vnni_and_arm(tmp_path, ppocr_det_path, minilm_onnx):
    x86 = load_profile("x86-cpu")
    vnni = x86.model_copy(update={"cpu": x86.cpu.model_copy(update={"features": [*x86.cpu.features, "avx512_vnni"]})})
    pi5 = load_profile("raspberry-pi-5")
    with_calib = lambda p: StepContext(work_dir=tmp_path, profile=p, calib_data=lambda n: [])  # noqa: E731
    no_calib = lambda p: StepContext(work_dir=tmp_path, profile=p)  # noqa: E731
    cfg = QuantizeOrtConfig()

    s, why = Q.resolve_settings(cfg, with_calib(x86), ppocr_det_path)
    assert (s["mode"], s["weight_type"], s["activation_type"], s["per_channel"], s["reduce_range"]) == ("static", "int8", "uint8", True, True)
    assert any("saturate" in r for r in why)
    s, _ = Q.resolve_settings(cfg, with_calib(vnni), ppocr_det_path)
    assert (s["weight_type"], s["activation_type"], s["per_channel"], s["reduce_range"]) == ("int8", "uint8", True, False)
    s, why = Q.resolve_settings(cfg, with_calib(pi5), ppocr_det_path)
    assert (s["weight_type"], s["activation_type"], s["per_channel"]) == ("int8", "int8", True)
    assert any("dotprod" in r for r in why)
    # conv model without calibration data: dynamic, and on x86 no-VNNI the weight type that is not 5x slower
    s, why = Q.resolve_settings(cfg, no_calib(x86), ppocr_det_path)
    assert (s["mode"], s["weight_type"]) == ("dynamic", "uint8") and any("--calib" in r for r in why)
    s, _ = Q.resolve_settings(cfg, no_calib(pi5), ppocr_det_path)
    assert (s["mode"], s["weight_type"]) == ("dynamic", "int8")
    # transformer: dynamic MatMulInteger with signed per-channel weights
    s, _ = Q.resolve_settings(cfg, no_calib(x86), minilm_onnx)
    assert (s["mode"], s["weight_type"], s["per_channel"], s["op_types"]) == ("dynamic", "int8", True, ["MatMul", "Gemm"])
    # explicit user settings win and are recorded
    s, why = Q.resolve_settings(QuantizeOrtConfig(weight_type="uint8", reduce_range=True), no_calib(x86), minilm_onnx)
    assert s["weight_type"] == "uint8" and s["reduce_range"] is True and any("overrides" in r for r in why)


@pytest.mark.slow
def test_budget_search_on_minilm_keeps_sensitive_nodes_in_float(minilm_onnx, tmp_path):
    ctx = _ctx(tmp_path, model="zoo:minilm", calib=False)
    cfg = QuantizeOrtConfig(max_drop=0.005, eval_samples=8, max_evaluations=10, latency_runs=1)
    out = QuantizeOrtStep().run(load_artifact(minilm_onnx), cfg, ctx)
    rep = ctx.report
    naive = rep["variants"][0]
    assert naive["excluded_nodes"] == [] and naive["meets_budget"] is False  # the naive variant violates 0.5%
    chosen = next(v for v in rep["variants"] if v["name"] == rep["chosen"])
    assert chosen["meets_budget"] and chosen["score"] >= 0.995 and chosen["excluded_nodes"]
    assert all(n.endswith("MatMul") for n in chosen["excluded_nodes"])
    assert len(rep["variants"]) <= 10
    # 36 MatMuls > the probe budget: the sensitivity pass probes the 4 structural roles (not runs of layers), and
    # the FFN output projections (fed by the GELU) are among the probes, each role probed as one group of all layers
    probes = [v["excluded_nodes"] for v in rep["variants"] if v["phase"] == "sensitivity"]
    ffn_out = sorted(n for n in Q.quantizable_nodes(Q.prepare_for_quantization(minilm_onnx, tmp_path)[0], ["MatMul"], mode="dynamic")
                     if "/output/dense/" in n and "attention" not in n)
    assert len(ffn_out) == 6 and sorted(ffn_out) in [sorted(p) for p in probes]
    assert sorted(len(p) for p in probes) == [6, 6, 6, 18]
    assert all({"score", "size_bytes", "zipped_bytes", "latency_ms", "excluded_nodes", "config"} <= set(v) for v in rep["variants"])
    # the written model is the chosen variant: its excluded MatMuls are still float MatMuls
    model = onnx.load(str(out.path))
    float_mm = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    assert set(chosen["excluded_nodes"]) <= float_mm
    assert any("chose" in n and "budget drop 0.005 met" in n for n in ctx.notes)


@pytest.mark.slow
def test_unreachable_budget_fails_loudly_and_writes_nothing(minilm_onnx, tmp_path):
    ctx = _ctx(tmp_path, model="zoo:minilm", calib=False)
    cfg = QuantizeOrtConfig(max_drop=0.0, eval_samples=3, max_evaluations=3, latency_runs=1)
    with pytest.raises(FidelityError, match="no INT8 variant meets --max-drop 0") as ei:
        QuantizeOrtStep().run(load_artifact(minilm_onnx), cfg, ctx)
    assert "nothing was written" in str(ei.value)
    assert ctx.report["chosen"] is None and 1 < len(ctx.report["variants"]) <= 3
    assert all(not v["meets_budget"] for v in ctx.report["variants"])
    assert not list(ctx.work_dir.glob("*.int8.onnx"))
    assert not list((ctx.work_dir / "variants").glob("*.onnx"))


def test_dynamic_rewrites_gemm_so_linear_layers_get_quantized(tmp_path):
    """The dynamo exporter emits Gemm for Linear layers; ORT has no integer Gemm, so the step rewrites it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32)).astype(np.float32)  # Gemm with transB=1: weight is (out, in)
    b = rng.standard_normal(16).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    src = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    feeds = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(3)]
    ctx = StepContext(work_dir=tmp_path / "work", profile=load_profile("x86-cpu"), eval_data=lambda n: feeds[:n])
    out = QuantizeOrtStep().run(load_artifact(src), QuantizeOrtConfig(mode="dynamic", eval_samples=3, latency_runs=1), ctx)
    assert "MatMulInteger" in _ops(out.path) and "Gemm" not in _ops(out.path)
    assert any("rewrote 1 Gemm" in n for n in ctx.notes)
    ref = Q.predict(src, feeds, 1)
    new = Q.predict(out.path, feeds, 1)
    assert Q.cosine_score(ref, new) > 0.99  # same function, now in INT8


def test_role_groups_partition_minilm_matmuls_by_structural_role(minilm_onnx, tmp_path):
    """Repeated transformer blocks: one group per role across layers (Q/K/V, attention output, FFN in, FFN out)."""
    prepared, _ = Q.prepare_for_quantization(minilm_onnx, tmp_path, gemm_to_matmul=True)
    cands = Q.quantizable_nodes(prepared, ["MatMul", "Gemm"], mode="dynamic")
    groups = Q.role_groups(prepared, cands)
    assert sorted(n for g in groups for n in g) == sorted(cands)  # a partition of the candidates
    assert sorted(len(g) for g in groups) == [6, 6, 6, 18]
    ffn_out = next(g for g in groups if all("/output/dense/" in n and "attention" not in n for n in g))
    assert [n.split("/")[3] for n in ffn_out] == [f"layer.{i}" for i in range(6)]  # one per layer, graph order
    qkv = next(g for g in groups if len(g) == 18)
    assert {n.split("/")[-2] for n in qkv} == {"query", "key", "value"}


def test_role_groups_on_ppocr_rec_convs_are_too_many_to_probe_so_search_keeps_contiguous_runs(tmp_path, ppocr_rec_path):
    from edgekit.quality import sensitivity

    prepared, _ = Q.prepare_for_quantization(ppocr_rec_path, tmp_path)
    cands = Q.quantizable_nodes(prepared, ["Conv"], mode="static")
    groups = Q.role_groups(prepared, cands)
    assert sorted(n for g in groups for n in g) == sorted(cands) and len(groups) > 7
    probed = []
    res = sensitivity.keep_sensitive_nodes_in_float(cands, lambda ex: list(ex), lambda ex: probed.append(ex) or 0.5, max_drop=0.01,
                             max_evaluations=14, groups=groups, patience=1)
    sens = [v.excluded_nodes for v in res.variants if v.phase == "sensitivity"]
    order = {n: i for i, n in enumerate(cands)}
    # contiguous runs in graph order (the role groups would need more probes than the budget allows)
    assert len(sens) == 6 and all([order[n] for n in s] == list(range(order[s[0]], order[s[0]] + len(s))) for s in sens)


def test_search_probes_caller_groups_and_refines_inside_the_winning_one():
    """Error concentrated in one role spread over the graph: the role group finds it, refine keeps few nodes."""
    from edgekit.quality import sensitivity

    cands = [f"l{layer}.{role}" for layer in range(6) for role in ("q", "k", "v", "o", "ffn1", "ffn2")]
    # only the FFN output of the first two layers matters; everything else is noise-free
    cost = {"l0.ffn2": 0.004, "l1.ffn2": 0.003}
    score = lambda ex: 0.99 + sum(cost.get(n, 0.0) for n in ex)  # noqa: E731
    roles = [[c for c in cands if c.endswith(r)] for r in ("q", "k", "v", "o", "ffn1", "ffn2")]
    res = sensitivity.keep_sensitive_nodes_in_float(cands, lambda ex: list(ex), score, max_drop=0.004, max_evaluations=16, groups=roles)
    assert res.chosen is not None and sorted(res.chosen.excluded_nodes) == ["l0.ffn2", "l1.ffn2"]
    assert any(v.phase == "sensitivity" and len(v.excluded_nodes) == 6 and v.excluded_nodes[0] == "l0.ffn2"
               for v in res.variants)
    # without groups, contiguous runs (whole layers) reach the budget but run out of evaluations while refining
    plain = sensitivity.keep_sensitive_nodes_in_float(cands, lambda ex: list(ex), score, max_drop=0.004, max_evaluations=16)
    assert plain.chosen is not None and len(plain.chosen.excluded_nodes) > 2
    # groups that do not partition the candidates are ignored (contiguous runs used instead)
    partial = sensitivity.keep_sensitive_nodes_in_float(cands, lambda ex: list(ex), score, max_drop=0.004, max_evaluations=16, groups=roles[:2])
    assert all(len(v.excluded_nodes) != 6 or v.excluded_nodes[0] != "l0.ffn2" for v in partial.variants if v.phase == "sensitivity")
