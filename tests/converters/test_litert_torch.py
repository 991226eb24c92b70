"""litert-torch step: PyTorch -> .tflite directly, int32 `serving_default_args_N` inputs mapped back, real failures.

Conversions use the real zoo:minilm model and are skipped (with the reason) only when litert-torch is not installed.
The planner tests are pure (the step's availability is injected) and always run.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from edgekit.core.errors import MissingDependencyError, StepError
from edgekit.core.plan import PlanOptions, make_plan
from edgekit.core.profiles import load_profile
from edgekit.converters.litert_torch import LitertTorchConfig, LitertTorchStep

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from stepctx import minimal_context  # noqa: E402

HAVE_LITERT = importlib.util.find_spec("litert_torch") is not None and importlib.util.find_spec("ai_edge_quantizer") is not None
needs_litert = pytest.mark.skipif(not HAVE_LITERT, reason="litert-torch is not installed (pip install 'edgekit[litert]')")


# ---------------------------------------------------------------- planner (pure)


@pytest.fixture(scope="module")
def torch_art():
    torch = pytest.importorskip("torch")
    from edgekit.core.artifact import Artifact

    return Artifact.from_module(torch.nn.Linear(4, 2), (torch.randn(1, 4),), input_names=["x"], output_names=["y"], name="lin")


def _plan(art, available: bool, **opts):
    def step_available(name):
        if name == "litert-torch":
            return (True, "ok") if available else (False, "missing litert_torch (pip install 'edgekit[litert]')")
        return True, "ok"

    return make_plan(art, "m", load_profile("x86-cpu"), PlanOptions(runtime="tflite", **opts), step_available=step_available, runtime_available=lambda r: True)


def test_plan_uses_litert_torch_for_pytorch_to_tflite(torch_art):
    p = _plan(torch_art, True, precision="fp32")
    assert [s.step for s in p.steps] == ["litert-torch"]
    assert p.steps[0].config == {"precision": "fp32"}


def test_plan_int8_is_dynamic_and_says_calibration_is_unused(torch_art):
    p = _plan(torch_art, True, precision="int8", has_calib=True)
    assert [s.step for s in p.steps] == ["litert-torch"]
    assert p.steps[0].config["precision"] == "int8-dynamic"
    assert any("calibration data is not used" in n for n in p.notes)


def test_plan_falls_back_to_onnx2tf_with_a_note_when_litert_is_missing(torch_art):
    p = _plan(torch_art, False, precision="fp16")
    assert [s.step for s in p.steps] == ["export", "simplify", "tflite"]
    assert any("litert-torch is unavailable" in n and "edgekit[litert]" in n for n in p.notes)


def test_plan_passes_shapes_to_the_step(torch_art):
    p = _plan(torch_art, True, precision="fp16", shapes={"x": [1, 4]})
    assert p.steps[0].config == {"precision": "fp16", "input_shapes": {"x": [1, 4]}}


def test_plan_passes_the_accuracy_budget_to_int8(torch_art):
    p = _plan(torch_art, True, precision="int8", max_drop=0.01)
    cfg = LitertTorchConfig.model_validate(p.steps[0].config)
    assert cfg.max_drop == 0.01 and cfg.fidelity.min_task_score == pytest.approx(0.99)


def test_int8_dynamic_is_checked_on_the_task_score_fp32_stays_strict():
    assert LitertTorchConfig(precision="int8-dynamic").fidelity.min_cosine == 0.9
    assert LitertTorchConfig(precision="fp32").fidelity.min_cosine == 0.999
    assert LitertTorchConfig(precision="fp16").fidelity.min_cosine == 0.999


# ---------------------------------------------------------------- step errors


def test_missing_package_names_the_extra(tmp_path, monkeypatch, torch_art):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import litert_torch -> ImportError, as when not installed
    with pytest.raises(MissingDependencyError) as err:
        LitertTorchStep().run(torch_art, LitertTorchConfig(), minimal_context(tmp_path))
    assert "pip install 'edgekit[litert]'" in str(err.value)


def test_full_int8_is_not_a_precision_of_this_step():
    with pytest.raises(Exception) as err:
        LitertTorchConfig.model_validate({"precision": "int8"})
    assert "precision" in str(err.value)


@needs_litert
def test_unsupported_op_is_a_step_error_naming_the_op(tmp_path):
    torch = pytest.importorskip("torch")
    from edgekit.core.artifact import Artifact

    class Svd(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[1]

    art = Artifact.from_module(Svd(), (torch.randn(4, 8),), input_names=["x"], output_names=["s"], name="svd")
    ctx = minimal_context(tmp_path)
    with pytest.raises(StepError) as err:
        LitertTorchStep().run(art, LitertTorchConfig(), ctx)
    e = err.value
    assert e.step == "litert-torch"
    assert e.op and "svd" in e.op
    assert "Lowering not found" in (e.tool_message or "")
    log = ctx.work_dir / "litert_torch.log"
    assert log.exists() and "svd" in log.read_text()


# ---------------------------------------------------------------- real MiniLM conversions


@pytest.fixture(scope="module")
def minilm():
    if not HAVE_LITERT:
        pytest.skip("litert-torch is not installed (pip install 'edgekit[litert]')")
    from edgekit.quality import fidelity
    from edgekit.zoo.models import resolve

    z = resolve("zoo:minilm")
    art = z.artifact()
    feeds = [s.feeds for s in z.samples("eval", 12, 0)]  # held-out sentences, not the example input
    ref = fidelity.predict(art, feeds)
    return z, art, feeds, ref


def _convert(tmp_path, art, precision):
    ctx = minimal_context(tmp_path, precision)
    return LitertTorchStep().run(art, LitertTorchConfig(precision=precision), ctx), ctx


@needs_litert
@pytest.mark.slow
def test_minilm_fp32_inputs_are_mapped_and_match_torch(tmp_path, minilm):
    from edgekit.quality import fidelity

    z, art, feeds, ref = minilm
    out, ctx = _convert(tmp_path, art, "fp32")
    assert out.format == "tflite" and out.precision == "fp32" and out.path.exists()
    tfl = {t.name: t for t in out.inputs}
    name_map = out.metadata["input_name_map"]
    assert set(name_map) == {"input_ids", "attention_mask", "token_type_ids"}
    assert sorted(name_map.values()) == sorted(tfl)  # every source input lands on a real TFLite input
    assert all(tfl[n].dtype == "int32" and out.metadata["feed_dtypes"][n] == "int32" for n in name_map.values())
    assert all(n.startswith("serving_default_args_") for n in tfl)
    assert any("int32" in n for n in ctx.notes)
    assert feeds[0]["input_ids"].dtype == np.int64  # the feeds stay in the source dtype; fidelity/harness cast them
    new = fidelity.predict(out, feeds)
    assert z.task_metric(ref, new) > 0.9999
    assert out.lineage[-1].step == "litert-torch"


@needs_litert
@pytest.mark.slow
def test_minilm_int8_dynamic_is_smaller_and_close(tmp_path, minilm):
    from edgekit.quality import fidelity

    z, art, feeds, ref = minilm
    out, _ = _convert(tmp_path, art, "int8-dynamic")
    fp32 = tmp_path / "int8-dynamic" / "minilm_float32.tflite"  # the float model is kept beside it
    assert out.precision == "int8" and fp32.exists()
    assert out.size_bytes < 0.35 * fp32.stat().st_size  # int8 weights
    cos = z.task_metric(ref, fidelity.predict(out, feeds))
    assert 0.99 < cos < 1.0  # quantized: close, but not bit-identical


@needs_litert
@pytest.mark.slow
def test_minilm_fp16_halves_the_weights(tmp_path, minilm):
    from edgekit.quality import fidelity

    z, art, feeds, ref = minilm
    out, _ = _convert(tmp_path, art, "fp16")
    fp32 = tmp_path / "fp16" / "minilm_float32.tflite"
    assert out.precision == "fp16"
    assert 0.4 * fp32.stat().st_size < out.size_bytes < 0.6 * fp32.stat().st_size
    assert z.task_metric(ref, fidelity.predict(out, feeds)) > 0.999
