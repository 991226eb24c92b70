"""The forward (build-up) mixed-precision search and its damage proxy (edgekit.quality.sensitivity)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.errors import EdgekitError
from edgekit.quality.sensitivity import build_up_quantized, distribution_damage


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_distribution_damage_counts_flipped_positions_and_kl():
    rng = np.random.default_rng(0)
    ref = _softmax(rng.normal(size=(2, 1, 5, 7)) * 3)  # 2 samples, 5 positions x 7 classes each
    new = ref.copy()
    # sample 0, position 2: swap its top-1 and top-2 classes (a flip); sample 1, position 4: same
    for s, p in ((0, 2), (1, 4)):
        o = np.argsort(ref[s, 0, p])
        new[s, 0, p, o[-1]], new[s, 0, p, o[-2]] = ref[s, 0, p, o[-2]], ref[s, 0, p, o[-1]]
    d = distribution_damage([[r] for r in ref], [[n] for n in new])
    assert d["positions"] == 10 and d["flips"] == 2 and d["flip_rate"] == pytest.approx(0.2)
    r, n = ref.reshape(-1, 7), new.reshape(-1, 7)
    assert d["kl"] == pytest.approx(float(np.mean(np.sum(r * np.log(r / n), -1))), rel=1e-6)
    same = distribution_damage([[r] for r in ref], [[r] for r in ref])
    assert same["flips"] == 0 and same["kl"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(EdgekitError, match="not matching"):
        distribution_damage([[ref[0]]], [[ref[0][..., :3]]])


def _toy(damage, lines_lost_per_damage=1.0):
    """A model of 8 ops: quantizing op k alone adds `damage[k]` to the proxy and that many lines lost out of 100;
    losses add up. build() returns the quantized set; measure() its (score, damage)."""
    names = [f"op{k}" for k in range(len(damage))]
    calls = []

    def build(excluded):
        calls.append(list(excluded))
        return [n for n in names if n not in set(excluded)]

    def measure(quantized):
        d = sum(damage[names.index(n)] for n in quantized)
        return 1.0 - lines_lost_per_damage * d / 100.0, d

    return names, build, measure, calls


def test_build_up_quantizes_the_harmless_ops_and_stops_at_the_budget():
    # ops 1, 3, 4, 6 cost nothing; op 0 costs 0.5 line, op 5 one line, ops 2 and 7 many
    damage = [0.5, 0.0, 30.0, 0.0, 0.0, 1.0, 0.0, 12.0]
    names, build, measure, calls = _toy(damage)
    res = build_up_quantized(names, build, measure, max_drop=0.012, max_evaluations=40)
    chosen = res.chosen
    assert chosen is not None and chosen.meets_budget
    quantized = sorted(set(names) - set(chosen.excluded_nodes))
    # every harmless op, then op0 (0.5 line); op5 would bring the loss to 1.5 lines, past the 1.2 allowed
    assert quantized == ["op0", "op1", "op3", "op4", "op6"]
    assert any(set(names) - set(v.excluded_nodes) == set(quantized) | {"op5"} and not v.meets_budget for v in res.variants)
    assert "op2" in chosen.excluded_nodes and "op7" in chosen.excluded_nodes
    # ranked by damage alone: the harmless ones first, op2 (the worst) last
    ranks = list(res.sensitivity)
    assert set(ranks[:4]) == {"op1", "op3", "op4", "op6"} and ranks[-1] == "op2"
    assert res.variants[0].phase == "baseline" and len([v for v in res.variants if v.phase == "damage"]) == 8
    assert len(calls) == len(res.variants) <= 40


def test_build_up_with_an_exact_fit_takes_everything_below_the_budget():
    damage = [0.0, 0.0, 0.0, 5.0, 0.0, 0.0]
    names, build, measure, _ = _toy(damage)
    res = build_up_quantized(names, build, measure, max_drop=0.01, max_evaluations=40)
    assert res.chosen is not None and res.chosen.excluded_nodes == ["op3"]


def test_build_up_stops_when_the_baseline_meets_the_budget_and_when_evaluations_run_out():
    names, build, measure, calls = _toy([0.0] * 5)
    res = build_up_quantized(names, build, measure, max_drop=0.0)
    assert len(res.variants) == 1 and res.chosen.excluded_nodes == [] and res.stop_reason == "baseline meets the budget"
    names, build, measure, calls = _toy([3.0, 0.0, 0.0, 0.0, 0.0])
    res = build_up_quantized(names, build, measure, max_drop=0.01, max_evaluations=3)
    assert len(calls) == 3 and "ranked" in res.stop_reason
    # only op0 and op1 were ranked (and op0 alone misses): op1 is the only one that can be quantized
    assert res.chosen is not None and set(names) - set(res.chosen.excluded_nodes) == {"op1"}


def test_build_up_with_no_op_meeting_the_budget_alone_chooses_nothing():
    names, build, measure, _ = _toy([2.0, 3.0, 4.0])
    res = build_up_quantized(names, build, measure, max_drop=0.01)
    assert res.chosen is None and "no candidate" in res.stop_reason


def test_build_up_starts_no_evaluation_past_its_time_limit(monkeypatch):
    import edgekit.quality.sensitivity as sens

    clock = [0.0]
    monkeypatch.setattr(sens.time, "perf_counter", lambda: clock[0])
    names, build, measure, calls = _toy([0.0, 0.0, 5.0, 0.0, 0.0, 0.0])

    def slow(q):  # every evaluation takes 10 s of the fake clock
        clock[0] += 10.0
        return measure(q)

    res = build_up_quantized(names, build, slow, max_drop=0.01, max_seconds=25.0)
    assert len(calls) == 3  # started at t = 0, 10, 20; none after 25 s
    assert "ranked" in res.stop_reason and set(names) - set(res.chosen.excluded_nodes) in ({"op0"}, {"op1"}, {"op0", "op1"})


def test_build_up_with_weights_spends_the_budget_on_what_gains_most():
    # six light ops of damage 0.2 line each (weight 1) and one heavy op of damage 1.0 line (weight 50); 1.2 lines allowed.
    # By damage alone all six light ops fit (1.2 lines) and the heavy one does not; by damage per weight the heavy op
    # comes first and one light op still fits beside it: 51 of 56 weight quantized instead of 6.
    damage = [0.2, 0.2, 0.2, 1.0, 0.2, 0.2, 0.2]
    names, build, measure, _ = _toy(damage)
    weights = {n: (50.0 if n == "op3" else 1.0) for n in names}
    plain = build_up_quantized(names, build, measure, max_drop=0.012, max_evaluations=40)
    assert set(names) - set(plain.chosen.excluded_nodes) == {"op0", "op1", "op2", "op4", "op5", "op6"}
    names, build, measure, _ = _toy(damage)
    res = build_up_quantized(names, build, measure, max_drop=0.012, max_evaluations=40, weights=weights)
    chosen = set(names) - set(res.chosen.excluded_nodes)
    assert "op3" in chosen and len(chosen) == 2 and res.chosen.meets_budget
    # the ranking is per weight: the heavy op first although its damage alone is the largest
    first_buildup = next(v for v in res.variants if v.phase == "build-up" or v.phase == "extend")
    assert "op3" not in first_buildup.excluded_nodes
    # an op without a weight counts 0: never preferred over one that gains
    names, build, measure, _ = _toy([0.0, 0.5])
    res = build_up_quantized(names, build, measure, max_drop=0.004, weights={"op1": 1.0})
    assert set(names) - set(res.chosen.excluded_nodes) == {"op0"}  # op1 alone misses (0.5 line > 0.4)
