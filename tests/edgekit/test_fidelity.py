"""Fidelity comparison: the metrics are right and a budget violation is reported, not hidden."""

from __future__ import annotations

import numpy as np

from edgekit.quality.fidelity import compare, predict
from edgekit.core.artifact import load_artifact
from edgekit.core.steps import FidelityBudget


def test_identical_outputs_pass_with_cosine_one():
    rng = np.random.RandomState(0)
    ref = [[rng.randn(2, 5).astype(np.float32)] for _ in range(3)]
    res = compare(ref, ref, FidelityBudget(min_cosine=0.9999, min_argmax_agreement=1.0))
    assert res.passed and res.cosine_min == 1.0 and res.max_abs_error == 0.0 and res.argmax_agreement == 1.0


def test_perturbed_outputs_fail_and_name_the_metric():
    ref = [[np.array([[1.0, 2.0, 3.0]], dtype=np.float32)]]
    new = [[np.array([[3.0, 2.0, 1.0]], dtype=np.float32)]]
    res = compare(ref, new, FidelityBudget(min_cosine=0.99, max_abs_error=0.5))
    assert not res.passed
    # cos = (3+4+3)/14
    assert abs(res.cosine_min - 10 / 14) < 1e-6
    assert res.max_abs_error == 2.0 and abs(res.max_rel_error - 2 / 3) < 1e-6
    assert res.argmax_agreement == 0.0
    assert any("cosine" in f for f in res.failures) and any("abs" in f for f in res.failures)


def test_task_metric_budget_is_enforced():
    ref = [[np.ones((1, 4), np.float32)]]
    res = compare(ref, ref, FidelityBudget(min_cosine=0.0, min_task_score=0.99), task_metric=lambda r, n: 0.5, task_metric_name="text agreement")
    assert not res.passed and res.task_score == 0.5 and "text agreement" in res.failures[0]


def test_nan_output_fails():
    ref = [[np.ones((1, 3), np.float32)]]
    new = [[np.array([[1.0, np.nan, 1.0]], np.float32)]]
    assert not compare(ref, new, FidelityBudget()).passed


def test_predict_real_model_is_deterministic(ppocr_rec_path):
    art = load_artifact(ppocr_rec_path)
    x = np.random.RandomState(0).rand(1, 3, 48, 320).astype(np.float32)
    a = predict(art, [{"x": x}], threads=1)
    b = predict(art, [{"x": x}], threads=1)
    assert a[0][0].shape[0] == 1 and a[0][0].ndim == 3
    np.testing.assert_array_equal(a[0][0], b[0][0])


def test_near_zero_outputs_equal_within_rounding_pass():
    """A det map of a page without text is ~0 everywhere; 1e-7 noise must not read as cosine 0.87."""
    rng = np.random.RandomState(1)
    ref = [[(rng.rand(1, 1, 8, 8) * 1e-6).astype(np.float32)]]
    new = [[ref[0][0] + (rng.rand(1, 1, 8, 8) * 1e-7).astype(np.float32)]]
    res = compare(ref, new, FidelityBudget(min_cosine=0.999))
    assert res.passed and res.cosine_min == 1.0
    worse = [[ref[0][0] + 1e-3]]
    assert not compare(ref, worse, FidelityBudget(min_cosine=0.999, max_abs_error=1e-4)).passed
