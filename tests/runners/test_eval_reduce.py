"""Evaluation outputs reduced on the device to what the task metric reads (runners/harness/reduce.py): PP-OCR rec's
top-2 classes per timestep instead of 6625 floats, det's text mask as bits. The task score must not change."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.errors import RunnerError
from edgekit.core.registry import harness_module
from edgekit.core.runner_interface import HarnessSpec
from edgekit.quality.fidelity import compare, describe, device_fidelity, device_reductions, predict, write_eval_feeds
from edgekit.quality.variant_search import _budget
from edgekit.runners.local import LocalRunner
from edgekit.workflows.deploy import benchmark, build_data, resolve_model

SHORT = {"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0}
red = harness_module("reduce")


def _roundtrip(x, how):
    return red.expand(red.reduce_output(x, how), how)


def test_topk_keeps_the_argmax_exactly_even_for_negative_logits_and_ties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40, 300)).astype(np.float32) - 5.0  # all negative: a zero fill would win the argmax
    x[0, 3, [7, 9, 200]] = 4.0  # a three-way tie for the top: numpy's argmax takes the lowest index
    x[1, 5, :] = -1.0  # every class equal
    y = _roundtrip(x, "topk:2")
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.array_equal(y.argmax(-1), x.argmax(-1))
    top2 = np.sort(x, axis=-1)[..., -2:]
    assert np.array_equal(np.sort(y, axis=-1)[..., -2:], top2)  # the two kept values are the two largest
    # along another axis (an NHWC output whose class axis is 1 on the device)
    z = np.moveaxis(x, -1, 1).copy()
    assert np.array_equal(_roundtrip(z, "topk:2:1").argmax(1), z.argmax(1))


def test_gt_keeps_the_mask_at_its_threshold_and_is_small():
    rng = np.random.default_rng(1)
    m = rng.random(size=(1, 1, 64, 48)).astype(np.float32)
    parts = red.reduce_output(m, "gt:0.3")
    assert sum(a.nbytes for a in parts.values()) < m.nbytes / 20
    back = red.expand(parts, "gt:0.3")
    assert back.shape == m.shape and np.array_equal(back > 0.3, m > 0.3)


@pytest.mark.parametrize("how", ["topk:0", "topk:x", "gt", "gt:a", "median", "topk:2:1:0"])
def test_unknown_reductions_are_spec_errors_naming_the_field(how):
    with pytest.raises(Exception, match=r"eval_reduce.*unknown reduction") as exc:
        red.parse(how)
    assert type(exc.value).__name__ == "SpecError"


def test_reductions_follow_the_artifacts_output_order_and_layout():
    src = resolve_model("zoo:ppocr-rec").artifact
    art = src.model_copy(update={"metadata": {"output_order": [1, 0], "output_transpose": {"1": [0, 2, 3, 1]}}})
    # source output 0 (a sequence) is device output 1; source output 1 is device output 0 with source = np.transpose(
    # device, [0, 2, 3, 1]): source axis a is device axis perm[a], so the source's last axis is the device's axis 1
    assert device_reductions(art, ["topk:2", "topk:3"]) == ["topk:3:1", "topk:2"]
    assert device_reductions(art, ["topk:2", "topk:3:1"]) == ["topk:3:2", "topk:2"]
    assert device_reductions(art, ["full", None]) is None
    assert device_reductions(src, ["gt:0.3"]) == ["gt:0.3"]


def test_rec_on_the_device_fetches_kilobytes_and_scores_exactly_as_the_whole_outputs(x86_profile, tmp_path):
    """The real PP-OCR rec run by the harness (local runner): with its zoo reduction the outputs archive is a few KB
    instead of ~1 MB a line, and the text agreement is the same as from the whole outputs, for a matching reference
    and for a shifted (wrong) one."""
    resolved = resolve_model("zoo:ppocr-rec")
    data = build_data(resolved, eval_count=6)
    assert data.device_reduce == ["topk:2"]
    feeds = data.heldout()
    ref = predict(resolved.artifact, feeds)
    budget = _budget(0.01, True)
    with LocalRunner(x86_profile) as r:
        whole = benchmark(resolved.artifact, x86_profile, r, data.inputs, bench=SHORT, eval_feeds=feeds)
        full = device_fidelity(ref, whole, r, resolved.artifact, budget, data.task_metric, data.task_metric_name)
        small = benchmark(resolved.artifact, x86_profile, r, data.inputs, bench=SHORT, eval_feeds=feeds, eval_reduce=data.device_reduce)
        assert small.evaluation["reduce"] == ["topk:2"] and whole.evaluation["reduce"] == ["full"]
        assert small.evaluation["outputs_bytes"] * 100 < whole.evaluation["outputs_bytes"]
        dev = device_fidelity(ref, small, r, resolved.artifact, budget, data.task_metric, data.task_metric_name, reduce=data.device_reduce)
        shifted_small = benchmark(resolved.artifact, x86_profile, r, data.inputs, bench=SHORT, eval_feeds=feeds, eval_reduce=data.device_reduce)
        shifted = device_fidelity(ref[1:] + ref[:1], shifted_small, r, resolved.artifact, budget, data.task_metric, data.task_metric_name,
                                  reduce=data.device_reduce)
    assert dev.task_score == full.task_score == 1.0 and dev.reduced == ["topk:2"] and "topk:2" in describe(dev)
    assert shifted.task_score == compare(ref[1:] + ref[:1], ref, budget, data.task_metric, data.task_metric_name).task_score < 1.0


def test_det_mask_reduction_gives_the_same_iou_as_the_whole_maps(x86_profile):
    resolved = resolve_model("zoo:ppocr-det")
    data = build_data(resolved, shapes={"x": [1, 3, 160, 160]}, eval_count=3)
    assert data.device_reduce and data.device_reduce[0].startswith("gt:")
    feeds = data.heldout()
    ref = predict(resolved.artifact, feeds)
    wrong = ref[1:] + ref[:1]
    budget = _budget(0.03, True)
    with LocalRunner(x86_profile) as r:
        res = benchmark(resolved.artifact, x86_profile, r, data.inputs, bench=SHORT, eval_feeds=feeds, eval_reduce=data.device_reduce)
        dev = device_fidelity(wrong, res, r, resolved.artifact, budget, data.task_metric, data.task_metric_name, reduce=data.device_reduce)
    assert dev.task_score == pytest.approx(compare(wrong, ref, budget, data.task_metric, data.task_metric_name).task_score, abs=1e-12)
    assert dev.task_score < 1.0


def test_a_reduction_the_model_cannot_take_is_a_clear_spec_error(x86_profile, tmp_path):
    resolved = resolve_model("zoo:ppocr-rec")
    data = build_data(resolved, eval_count=2)
    with LocalRunner(x86_profile) as r:
        path = r.push(resolved.artifact)
        feeds = write_eval_feeds(resolved.artifact, data.heldout(), tmp_path)
        base = dict(model_path=path, model_format="onnx", runtime="onnxruntime", warmup_runs=0, warmup_seconds=0, min_runs=1,
                    min_seconds=0, idle_seconds=0, inputs=[{"name": "x", "shape": [1, 3, 48, 320], "dtype": "float32"}],
                    eval_inputs_file=str(feeds), eval_outputs_file=str(tmp_path / "o.npz"))
        with pytest.raises(RunnerError, match=r"'eval_reduce' names 2 reductions but the model has 1 outputs"):
            r.run_harness(HarnessSpec(**base, eval_reduce=["topk:2", "full"]))
        with pytest.raises(RunnerError, match=r"unknown reduction 'mean'"):
            r.run_harness(HarnessSpec(**base, eval_reduce=["mean"]))
    assert not (tmp_path / "o.npz").exists()

