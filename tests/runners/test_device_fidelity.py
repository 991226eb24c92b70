"""On-device fidelity: the harness's evaluation mode runs the held-out feeds through the runtime on the target
(here: a real sshd on loopback, and this machine), the host fetches the outputs and scores them."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from edgekit.core.errors import RunnerError
from edgekit.core.runner_interface import HarnessSpec
from pathlib import Path

from edgekit.quality.fidelity import compare, device_fidelity, predict, read_eval_outputs, write_eval_feeds
from edgekit.quality.variant_search import _budget
from edgekit.runners.local import LocalRunner
from edgekit.runners.ssh import SSHRunner
from edgekit.workflows.deploy import benchmark, build_data, resolve_model

SHORT = {"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0}


@pytest.fixture(scope="module")
def rec():
    resolved = resolve_model("zoo:ppocr-rec")
    data = build_data(resolved, eval_count=5)
    return resolved, data


def test_eval_mode_over_ssh_returns_the_runtimes_outputs_per_sample(ssh_env, x86_profile, rec, tmp_path):
    resolved, data = rec
    feeds = data.heldout()
    assert len(feeds) == 5
    wd = ssh_env.root / f"wd-{uuid.uuid4().hex[:8]}"
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(wd))) as r:
        result = benchmark(resolved.artifact, x86_profile, r, data.inputs, bench=SHORT, eval_feeds=feeds)
        ev = result.evaluation
        assert ev["samples"] == 5 and ev["outputs_file"].startswith(str(wd) + "/eval/")
        ref = predict(resolved.artifact, feeds)
        r.pull(ev["outputs_file"], tmp_path / "copy.npz")
        new = read_eval_outputs(tmp_path / "copy.npz", resolved.artifact, 5)
        fid = device_fidelity(ref, result, r, resolved.artifact, _budget(0.01, True), data.task_metric, data.task_metric_name)
    assert not Path(ev["outputs_file"]).exists() and Path(ev["inputs_file"]).exists()  # fetched once, then removed there
    # the same samples in the same order: a shifted reference scores lower, so outputs are matched per sample
    shifted = compare(ref[1:] + ref[:1], new, _budget(0.01, True), data.task_metric, data.task_metric_name)
    assert fid.where == "device" and fid.device.startswith("x86_64") and "onnxruntime" in fid.device
    assert fid.samples == 5 and fid.task_metric == "text agreement" and fid.task_score == 1.0 and fid.passed
    assert fid.max_abs_error < 1e-4 and fid.interval["lo"] <= fid.task_score <= fid.interval["hi"]
    assert shifted.task_score < 1.0 and not shifted.passed
    assert result.timing.runs == 2  # the timed loop is unchanged by the evaluation that follows it


def test_eval_files_that_do_not_fit_are_clear_spec_errors(x86_profile, rec, tmp_path):
    resolved, data = rec
    art = resolved.artifact
    with LocalRunner(x86_profile) as r:
        path = r.push(art)
        base = dict(model_path=path, model_format="onnx", runtime="onnxruntime", warmup_runs=0, warmup_seconds=0, min_runs=1,
                    min_seconds=0, idle_seconds=0, inputs=[{"name": "x", "shape": [1, 3, 48, 320], "dtype": "float32"}])
        with pytest.raises(RunnerError, match="'eval_inputs_file' and 'eval_outputs_file' go together"):
            r.run_harness(HarnessSpec(**base, eval_inputs_file=str(tmp_path / "e.npz")))
        other = art.model_copy(update={"metadata": {"input_name_map": {"x": "image"}}})  # feeds named for another model
        bad = write_eval_feeds(other, data.heldout()[:2], tmp_path)
        with pytest.raises(RunnerError, match=r"feeds inputs image but the model has x"):
            r.run_harness(HarnessSpec(**base, eval_inputs_file=str(bad), eval_outputs_file=str(tmp_path / "o.npz")))
        assert not (tmp_path / "o.npz").exists()
        with pytest.raises(RunnerError, match=r"cannot read eval_inputs_file .*missing\.npz"):
            r.run_harness(HarnessSpec(**base, eval_inputs_file=str(tmp_path / "missing.npz"), eval_outputs_file=str(tmp_path / "o.npz")))


def test_local_eval_outputs_equal_the_host_check(x86_profile, rec):
    """On this machine the device and host scores are the same computation: identical outputs, identical score."""
    resolved, data = rec
    feeds = data.heldout()[:3]
    with LocalRunner(x86_profile) as r:
        result = benchmark(resolved.artifact, x86_profile, r, data.inputs, bench=SHORT, eval_feeds=feeds)
        ref = predict(resolved.artifact, feeds)
        dev = device_fidelity(ref, result, r, resolved.artifact, _budget(0.01, True), data.task_metric, data.task_metric_name)
    host = compare(ref, predict(resolved.artifact, feeds), _budget(0.01, True), data.task_metric, data.task_metric_name)
    assert dev.task_score == host.task_score and dev.cosine_min == pytest.approx(host.cosine_min, abs=1e-9)
    assert np.isclose(dev.max_abs_error, host.max_abs_error, atol=1e-5)
