"""Statistics used by compare and bench --rounds: synthetic latency-like samples with fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.quality import stats


def _latencies(rng, n, median_ms, jitter=0.05, outliers=0.02):
    """Right-skewed latencies like a real device: lognormal body plus rare slow outliers."""
    x = median_ms * rng.lognormal(0.0, jitter, n)
    k = int(n * outliers)
    x[rng.choice(n, k, replace=False)] *= rng.uniform(1.5, 3.0, k)
    return x


def test_catches_a_ten_percent_slowdown():
    rng = np.random.default_rng(12)
    base = _latencies(rng, 300, 20.0)
    slow = _latencies(rng, 300, 22.0)
    r = stats.compare_samples(base, slow)
    assert r["verdict"] == stats.SLOWER
    assert r["lo"] > 1.0 and r["lo"] <= 1.10 <= r["hi"] + 0.02
    assert 1.05 < r["ratio"] < 1.15
    assert r["p_value"] < 1e-6
    # and the reverse direction is "faster"
    assert stats.compare_samples(slow, base)["verdict"] == stats.FASTER


def test_pure_noise_gives_no_detectable_difference_across_seeds():
    verdicts = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        verdicts.append(stats.compare_samples(_latencies(rng, 200, 20.0), _latencies(rng, 200, 20.0), seed=seed)["verdict"])
    # same distribution: at most one false alarm in 20 at 95 % confidence with the 2 % minimum effect
    assert verdicts.count(stats.SAME) >= 19, verdicts


def test_interval_contains_the_true_ratio():
    rng = np.random.default_rng(3)
    base = _latencies(rng, 500, 10.0, outliers=0)
    new = _latencies(rng, 500, 10.3, outliers=0)
    r = stats.ratio_of_medians(base, new)
    assert r["lo"] < 1.03 < r["hi"]
    assert r["hi"] - r["lo"] < 0.03


def test_small_real_effect_below_min_effect_is_not_reported():
    rng = np.random.default_rng(5)
    base = _latencies(rng, 5000, 10.0, jitter=0.01, outliers=0)
    new = _latencies(rng, 5000, 10.1, jitter=0.01, outliers=0)  # 1 %: detectable, but below the 2 % minimum
    r = stats.compare_samples(base, new)
    assert r["lo"] > 1.0
    assert r["verdict"] == stats.SAME
    assert stats.compare_samples(base, new, min_effect=0.005)["verdict"] == stats.SLOWER


def test_rankdata_matches_average_ranks_with_ties():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0])
    assert stats.rankdata(x).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_mann_whitney_matches_hand_computed_u():
    # base {1,2,3}, new {4,5}: every new beats every base -> U_new = 6, effect 1.0
    r = stats.mann_whitney([1, 2, 3], [4, 5])
    assert r["u"] == 6.0 and r["effect"] == 1.0
    assert stats.mann_whitney([1, 1, 1], [1, 1])["p"] == 1.0


def test_paired_rounds_ratio_and_interval():
    base = [10.0, 10.5, 9.8, 10.2, 10.1]
    new = [b * 1.2 for b in base]
    r = stats.paired_round_ratios(base, new)
    assert r["ratio"] == pytest.approx(1.2)
    assert r["lo"] == pytest.approx(1.2) and r["hi"] == pytest.approx(1.2)
    assert r["verdict"] == stats.SLOWER and r["rounds_slower"] == 5
    assert r["p_value"] == pytest.approx(2 / 32)
    mixed = stats.paired_round_ratios(base, [10.3, 10.1, 9.9, 10.6, 9.9])
    assert mixed["verdict"] == stats.SAME
    with pytest.raises(ValueError):
        stats.paired_round_ratios([1.0], [1.0, 2.0])
    two = stats.paired_round_ratios(base[:2], new[:2])  # both rounds 20 % slower, but two rounds decide nothing
    assert two["ratio"] == pytest.approx(1.2) and two["verdict"] == stats.SAME


def test_pareto_front():
    pts = [{"latency": 10, "score": 0.9}, {"latency": 5, "score": 0.8}, {"latency": 12, "score": 0.85}, {"latency": 5, "score": 0.7}]
    assert stats.pareto_front(pts) == [0, 1]


def test_empty_samples_rejected():
    with pytest.raises(ValueError, match="no finite"):
        stats.median([float("nan")])


def test_mean_interval_of_scores_brackets_the_mean_narrows_with_n_and_is_reproducible():
    from edgekit.quality.stats import mean_interval

    rng = np.random.default_rng(3)
    small = rng.uniform(0.9, 1.0, size=8)
    big = rng.uniform(0.9, 1.0, size=200)
    a, b = mean_interval(small), mean_interval(big)
    assert a["lo"] <= a["mean"] <= a["hi"] and b["lo"] <= b["mean"] <= b["hi"]
    assert b["hi"] - b["lo"] < a["hi"] - a["lo"]
    assert mean_interval(small) == a and a["n"] == 8 and a["level"] == 0.95
    assert mean_interval([0.97]) == {"mean": 0.97, "lo": 0.97, "hi": 0.97, "level": 0.95, "n": 1}
    assert mean_interval([1.0] * 10)["lo"] == 1.0
