"""fp16 on a real model (PP-OCRv4 rec): valid FP16 weights, float32 IO, text agreement with FP32, sizes reported."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekit.zoo import models as zoo
from edgekit.core.errors import StepError
from edgekit.core.profiles import load_profile
from edgekit.core.steps import StepContext
from edgekit.converters.fp16 import Fp16Config, Fp16Step


def _ctx(tmp_path, z, profile="x86-cpu"):
    return StepContext(
        work_dir=tmp_path / "work", profile=load_profile(profile), eval_data=lambda n: z.eval_feeds(n),
        task_metric=z.task_metric, task_metric_name=z.task_metric_name,
    )


def test_fp16_ppocr_rec(tmp_path):
    rec = zoo.resolve("zoo:ppocr-rec")
    ctx = _ctx(tmp_path, rec)
    out = Fp16Step().run(rec.artifact(), Fp16Config(eval_samples=6, latency_runs=1), ctx)
    model = onnx.load(str(out.path))
    onnx.checker.check_model(model)
    assert out.precision == "fp16"
    # weights are float16, inputs/outputs stay float32 so callers feed the same data
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    big = [t for t in tensors if np.prod(t.dims) > 1000]  # PP-OCR keeps its weights in Constant nodes
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    rep = ctx.report
    (v,) = rep["variants"]
    assert v["metric"] == "text agreement" and v["score"] >= 0.99  # FP16 keeps the decoded text
    assert v["size_bytes"] < 0.6 * rep["fp32"]["size_bytes"] and v["zipped_bytes"] < rep["fp32"]["zipped_bytes"]
    assert v["parameters"] == rep["fp32"]["parameters"]
    assert any("x86 CPUs have no fast FP16" in n for n in ctx.notes)


def test_fp16_refuses_non_onnx(tmp_path):
    rec = zoo.resolve("zoo:ppocr-rec")
    art = rec.artifact().model_copy(update={"format": "tflite"})
    with pytest.raises(StepError, match="expects an ONNX model"):
        Fp16Step().run(art, Fp16Config(), _ctx(tmp_path, rec))


def test_raw_ort_float16_output_is_unsorted_and_the_step_fixes_it(ppocr_rec_path):
    """Recorded tool failure: onnxruntime's converter with keep_io_types appends input Casts after their users."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgekit.converters.fp16 import _is_sorted, _toposort

    raw = convert_float_to_float16(onnx.load(str(ppocr_rec_path)), keep_io_types=True)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(raw)
    assert not _is_sorted(raw.graph)
    n_before = len(raw.graph.node)
    _toposort(raw.graph)
    assert _is_sorted(raw.graph) and len(raw.graph.node) == n_before
    onnx.checker.check_model(raw)
