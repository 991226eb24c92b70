"""TensorRT: an engine built on the device can only be scored there, so without device outputs it never "meets
budget" and is never chosen (issue 15 §3). No GPU here: the device result is a real harness result from this
machine, fed with trtexec's real captured output (tests/fixtures) the way a Jetson run returns it, but carrying no
evaluation outputs (e.g. the evaluation failed on the device)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgekit.core.errors import FidelityError
from edgekit.core.pipeline import PipelineResult
from edgekit.core.plan import Plan
from edgekit.core.profiles import load_profile
from edgekit.quality.variant_search import Variant, _best, _budget, judge_on_device
from edgekit.runners.local import LocalRunner
from edgekit.workflows.deploy import benchmark, build_data, fidelity_check, resolve_model

FIX = Path(__file__).resolve().parents[1] / "fixtures"


class ReplayJetson:
    """The device's `exec` replays a real trtexec --loadEngine capture; harness runs happen on this machine."""

    name = "ssh"
    target = "ssh:jetson (replayed)"

    def __init__(self, local):
        self.local = local

    def push(self, artifact):
        return str(artifact.path)

    def exec(self, argv, timeout=600.0):
        return 0, (FIX / "trtexec_trt10.16.1_loadEngine_cudagraph_verbose_full.txt").read_text(), ""

    def run_harness(self, spec):
        real = self.local.run_harness(spec.model_copy(update={"runtime": "onnxruntime", "eval_inputs_file": None, "eval_outputs_file": None}))
        return real.model_copy(update={"runner": "ssh", "host": "jetson",
                                       "runtime": real.runtime.model_copy(update={"name": "tensorrt", "version": "10.16.1"})})


@pytest.fixture(scope="module")
def trt_case(tmp_path_factory):
    prof = load_profile("x86-cpu")
    resolved = resolve_model("zoo:ppocr-rec")
    data = build_data(resolved, eval_count=3)
    src = resolved.artifact
    engine = tmp_path_factory.mktemp("trt") / "rec.engine"
    engine.write_bytes(b"serialized engine stand-in")
    art = src.model_copy(update={"format": "tensorrt", "precision": "int8", "path": engine,
                                 "sha256": hashlib.sha256(engine.read_bytes()).hexdigest()})
    with LocalRunner(prof) as local:
        runner = ReplayJetson(local)
        # the TensorRT benchmark path: harness run + trtexec's own timing; the feeds are offered for evaluation
        run_art = art.model_copy(update={"path": src.path, "format": "onnx"})
        result = benchmark(run_art, prof, runner, data.inputs, runtime="tensorrt",
                           bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0}, eval_feeds=data.heldout())
    return prof, resolved, data, art, runner, result


def test_a_tensorrt_variant_without_device_outputs_is_not_measured_and_never_chosen(trt_case):
    prof, resolved, data, art, runner, result = trt_case
    assert result.native["trtexec"]["gpu_compute_median_ms"] > 0 and result.evaluation is None
    v = Variant(runtime="tensorrt", precision="int8", status="not measured", median_ms=0.5)
    judge_on_device(v, result, runner, art, None, _budget(0.01, True), data)
    assert v.status == "not measured" and v.reason.startswith("not measured: ") and "no evaluation outputs" in v.reason
    assert v.score is None and v.device_fidelity is None
    assert _best([v]) is None  # alone it is never the pick
    ort = Variant(runtime="onnxruntime", precision="fp32", status="meets budget", median_ms=20.0, score=1.0)
    assert _best([v, ort]) is ort  # 40x faster on paper, but unmeasured accuracy loses to a measured one


def test_deploy_refuses_a_tensorrt_engine_without_a_device_score(trt_case):
    prof, resolved, data, art, runner, result = trt_case
    final = PipelineResult(artifact=art, records=[])
    with pytest.raises(FidelityError, match=r"tensorrt artifact on tensorrt does not meet the budget on the device: not measured: "
                                            r"the ssh run returned no evaluation outputs"):
        fidelity_check(resolved, final, result, runner, data, data.heldout(), 0.01, "tensorrt", lambda m: None)
    # convert-only (--no-bench): not refused, but the report says it has no measured score
    check = fidelity_check(resolved, final, None, runner, data, data.heldout(), 0.01, "tensorrt", lambda m: None)
    host, device = check["rows"]
    assert check["decided_by"] == "device" and "no measured score" in check["warning"]
    assert not host["measured"] and host["status"] == "not measured: a tensorrt artifact runs only on the device (built there for its GPU)"
    assert not device["measured"] and device["status"].startswith("not measured: no benchmark was run")


def test_reports_show_not_measured_rows(trt_case):
    from edgekit.core.results import DeployReport
    from edgekit.report.html import render
    from edgekit.report.text import fidelity_check_rows, to_markdown, variant_rows

    prof, resolved, data, art, runner, result = trt_case
    check = fidelity_check(resolved, PipelineResult(artifact=art, records=[]), None, runner, data, data.heldout(), 0.01, "tensorrt", lambda m: None)
    check.pop("device_result")
    v = Variant(runtime="tensorrt", precision="int8", status="not measured", reason="not measured: the ssh run on aarch64 returned no evaluation outputs")
    skipped = Variant(runtime="openvino", precision="int8", status="infeasible", reason="no openvino on the device")
    rep = DeployReport(edgekit_version="t", created="t", command="edgekit deploy", model="zoo:ppocr-rec", profile="jetson-orin-nano",
                       runtime="tensorrt", precision="int8", target="ssh:jetson", plan=[], steps=[], artifact={"path": str(art.path), "format": "tensorrt", "precision": "int8", "size_bytes": 1, "sha256": art.sha256},
                       variants=[v.model_dump(mode="json"), skipped.model_dump(mode="json")], fidelity_check=check)
    rows = variant_rows(rep)
    assert rows[0][3] == "not measured: the ssh run on aarch64 returned no evaluation outputs"
    assert rows[1][3] == "not measured: infeasible (see reason)"
    frows = fidelity_check_rows(rep)
    assert frows[0][0] == "host" and frows[0][-1].startswith("not measured: a tensorrt artifact runs only on the device")
    assert frows[1][0] == "device (decided)" and frows[1][2] == "—"
    md = to_markdown(rep)
    assert "## Fidelity on the held-out set: host and device" in md and "no measured score" in md
    assert "not measured: a tensorrt artifact runs only on the device" in render(rep)
