"""Planner: runtime/precision choice by profile preference and feasibility; deterministic; explained."""

from __future__ import annotations

import pytest

from edgekit.core.artifact import load_artifact
from edgekit.core.errors import PlanError
from edgekit.core.plan import PlanOptions, make_plan
from edgekit.core.profiles import load_profile


def _all_available(name):
    return True, "ok"


def _plan(art, profile, **opts):
    return make_plan(art, "m", load_profile(profile), PlanOptions(**opts), step_available=_all_available, runtime_available=lambda r: True)


@pytest.fixture(scope="module")
def det(ppocr_det_path):
    return load_artifact(ppocr_det_path)


def test_x86_prefers_first_profile_runtime_and_simplifies_except_for_openvino(det):
    prof = load_profile("x86-cpu")
    p = _plan(det, "x86-cpu")
    assert p.runtime == prof.runtimes[0] == "openvino"
    # OpenVINO converts the original ONNX: IRs converted after onnxsim ran slower (PP-OCRv4 det 33.6 vs 26.6 ms)
    assert [s.step for s in p.steps] == ["openvino"]
    assert any("simplify: skipped for OpenVINO" in n for n in p.notes)
    assert p.target.startswith("local")
    assert all(s.reason for s in p.steps)
    ort = _plan(det, "x86-cpu", runtime="onnxruntime")
    assert [s.step for s in ort.steps][0] == "simplify"


def test_same_inputs_same_plan(det):
    a = _plan(det, "x86-cpu", precision="int8", max_drop=0.01)
    b = _plan(det, "x86-cpu", precision="int8", max_drop=0.01)
    assert a.model_dump() == b.model_dump()


def test_unavailable_preferred_runtime_is_skipped_visibly(det):
    prof = load_profile("x86-cpu")
    first = prof.runtimes[0]
    p = make_plan(det, "m", prof, PlanOptions(), step_available=_all_available, runtime_available=lambda r: r != first)
    assert p.runtime != first
    assert any(first in n and "not installed" in n for n in p.notes)


def test_ort_int8_plans_quantization_with_budget(det):
    p = _plan(det, "x86-cpu", runtime="onnxruntime", precision="int8", max_drop=0.005)
    q = [s for s in p.steps if s.step == "quantize-ort"]
    assert q and q[0].config["max_drop"] == 0.005
    assert "without VNNI" in q[0].reason  # x86-cpu profile has AVX2 but no VNNI


def test_orin_plan_builds_tensorrt_engine_on_device(det):
    p = _plan(det, "jetson-orin-nano")
    assert p.runtime == "tensorrt"
    trt = [s for s in p.steps if s.step == "tensorrt"]
    assert trt and "ON THE DEVICE" in trt[0].reason
    assert "--host" in p.target  # no host given: the plan says where it would run


def test_orin_int8_goes_through_qdq(det):
    p = _plan(det, "jetson-orin-nano", precision="int8")
    assert [s.step for s in p.steps][-2:] == ["quantize-ort", "tensorrt"]
    assert p.steps[-2].config["mode"] == "static"


def test_jetson_nano_int8_on_tensorrt_is_refused_with_reason(det):
    with pytest.raises(PlanError) as ei:
        _plan(det, "jetson-nano", runtime="tensorrt", precision="int8")
    msg = str(ei.value)
    assert "int8" in msg and "fp16" in msg


def test_runtime_not_in_profile_is_explained(det):
    with pytest.raises(PlanError, match="does not list runtime 'openvino'"):
        _plan(det, "raspberry-pi-4", runtime="openvino")


def test_engine_file_cannot_run_on_x86(tmp_path):
    eng = tmp_path / "model.engine"
    eng.write_bytes(b"\x00" * 64)
    art = load_artifact(eng)
    with pytest.raises(PlanError, match="tensorrt"):
        _plan(art, "x86-cpu")


def test_tflite_int8_without_calib_says_dynamic(det):
    p = _plan(det, "raspberry-pi-5", runtime="tflite", precision="int8", has_calib=False)
    assert p.steps[-1].config["precision"] == "int8-dynamic"
    assert any("dynamic-range" in n for n in p.notes)


def test_no_simplify_option(det):
    p = _plan(det, "x86-cpu", runtime="onnxruntime", simplify=False)
    assert [s.step for s in p.steps] == []
