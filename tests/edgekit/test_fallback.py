"""deploy with no --runtime falls back to the next runtime of the profile when the first cannot convert the
model or fails the fidelity check; an explicit --runtime never falls back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from edgekit.workflows.deploy import deploy
from edgekit.core.errors import StepError
from edgekit.core.plan import PlanOptions, make_plan
from edgekit.core.profiles import load_profile

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.name for p in LIGHT.glob("light_*.onnx"))


def _dynamic_rank_if(path: Path) -> Path:
    """ONNX `If` whose branches return different ranks: ONNX Runtime runs it, OpenVINO's CPU plug-in refuses it."""
    then_g = h.make_graph([h.make_node("Mul", ["x", "two"], ["y_then"])], "then", [], [h.make_tensor_value_info("y_then", T.FLOAT, None)],
                         initializer=[h.make_tensor("two", T.FLOAT, [], [2.0])])
    else_g = h.make_graph([h.make_node("ReduceSum", ["x"], ["y_else"], keepdims=0)], "else", [], [h.make_tensor_value_info("y_else", T.FLOAT, None)])
    g = h.make_graph(
        [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0), h.make_node("Greater", ["s", "zero"], ["c"]),
         h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
        "dynamic_rank_if", [h.make_tensor_value_info("x", T.FLOAT, [1, 4])], [h.make_tensor_value_info("y", T.FLOAT, None)],
        initializer=[h.make_tensor("zero", T.FLOAT, [], [0.0])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_light_models_exist():
    assert len(LIGHT_MODELS) >= 5, f"the onnx wheel's light models moved: {LIGHT}"


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_deploys_with_defaults(name, tmp_path):
    prof = load_profile("x86-cpu")
    rep = deploy(LIGHT / name, prof, run_benchmark=False, fidelity_samples=2, cache_dir=tmp_path / "cache")
    assert rep.runtime in prof.runtimes
    assert Path(rep.artifact["path"]).exists()
    if rep.runtime != prof.runtimes[0]:  # a runtime other than the first one: the report says why
        assert any(n.startswith("fallback:") and prof.runtimes[0] in n for n in rep.plan_notes), rep.plan_notes


def test_old_zoo_graph_falls_back_after_failed_fidelity(tmp_path):
    # IR v3, initializers listed as graph inputs: OpenVINO's output differs from ONNX Runtime's (cosine ~0.09)
    rep = deploy(LIGHT / "light_squeezenet.onnx", "x86-cpu", run_benchmark=False, fidelity_samples=2, cache_dir=tmp_path / "cache")
    assert rep.runtime == "onnxruntime"
    fallback = [n for n in rep.plan_notes if n.startswith("fallback:")]
    assert fallback and "openvino" in fallback[0] and "fidelity" in fallback[0]


def test_fallback_is_in_written_report(tmp_path):
    model = _dynamic_rank_if(tmp_path / "if.onnx")
    out = tmp_path / "out"
    rep = deploy(model, "x86-cpu", run_benchmark=False, fidelity_samples=2, cache_dir=tmp_path / "cache", out=out)
    assert rep.runtime == "onnxruntime"
    assert any(n.startswith("fallback: openvino") and "dynamic rank" in n for n in rep.plan_notes), rep.plan_notes
    text = (out / "report.md").read_text()
    assert "fallback: openvino" in text and "onnxruntime" in text


def test_explicit_runtime_never_falls_back(tmp_path):
    model = _dynamic_rank_if(tmp_path / "if.onnx")
    with pytest.raises(StepError) as ei:
        deploy(model, "x86-cpu", runtime="openvino", run_benchmark=False, fidelity_samples=2, cache_dir=tmp_path / "cache")
    assert "openvino" in ei.value.message and "cannot be run" in ei.value.message


def test_cli_shows_fallback(tmp_path, cli):
    model = _dynamic_rank_if(tmp_path / "if.onnx")
    r = cli("deploy", str(model), "--profile", "x86-cpu", "--no-bench", "--fidelity-samples", "2", "--cache-dir", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "falling back to onnxruntime" in r.stderr + r.stdout


def test_plan_skips_excluded_runtime_with_reason(tmp_path):
    from edgekit.core.artifact import load_artifact

    art = load_artifact(LIGHT / "light_squeezenet.onnx")
    prof = load_profile("x86-cpu")
    plan = make_plan(art, "m", prof, PlanOptions(exclude_runtimes={"openvino": "cosine 0.09 < 0.999"}))
    assert plan.runtime == "onnxruntime"
    assert any("cosine 0.09" in n for n in plan.notes)
    all_out = {r: "x" for r in prof.runtimes}
    from edgekit.core.errors import PlanError

    with pytest.raises(PlanError):
        make_plan(art, "m", prof, PlanOptions(exclude_runtimes=all_out))
