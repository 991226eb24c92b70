"""The accuracy-budget search engine on controlled build/score functions (the real models are in test_quantize_ort)."""

from __future__ import annotations

import pytest

from edgekit.quality import sensitivity
from edgekit.core.errors import EdgekitError


def _model(errors):
    """A 'quantized model' whose score drops by errors[n] for every node n still quantized."""
    built = []

    def build(excluded):
        built.append(list(excluded))
        return frozenset(excluded)

    def score(excluded):
        return 1.0 - sum(e for n, e in errors.items() if n not in excluded)

    return build, score, built


def test_baseline_meeting_budget_needs_one_evaluation():
    build, score, built = _model({"a": 0.001, "b": 0.001})
    res = sensitivity.keep_sensitive_nodes_in_float(["a", "b"], build, score, max_drop=0.01)
    assert len(res.variants) == 1 and built == [[]]
    assert res.chosen is res.variants[0] and res.chosen.excluded_nodes == []


def test_finds_the_sensitive_nodes_per_node():
    errors = {f"n{i}": 0.0005 for i in range(8)}
    errors["n2"] = 0.02
    errors["n6"] = 0.01
    build, score, built = _model(errors)
    res = sensitivity.keep_sensitive_nodes_in_float(list(errors), build, score, max_drop=0.006, max_evaluations=20, describe=lambda a: {"size_bytes": len(a)})
    assert res.variants[0].meets_budget is False  # the naive all-quantized variant violates the budget
    assert res.chosen is not None and res.chosen.meets_budget
    assert set(res.chosen.excluded_nodes) == {"n2", "n6"}
    assert res.chosen.details == {"size_bytes": 2}
    assert res.sensitivity["n2"] == pytest.approx(0.02) and res.sensitivity["n6"] == pytest.approx(0.01)
    assert len(res.variants) <= 20
    # every variant is recorded with its phase, score and drop
    assert {v.phase for v in res.variants} == {"baseline", "sensitivity", "greedy"}
    assert all(v.drop == pytest.approx(1 - v.score) for v in res.variants)


def test_grouped_search_then_refine_stays_within_budget_of_evaluations():
    names = [f"layer{i}" for i in range(40)]
    errors = {n: 0.0001 for n in names}
    errors["layer3"] = 0.01
    errors["layer31"] = 0.008
    build, score, built = _model(errors)
    res = sensitivity.keep_sensitive_nodes_in_float(names, build, score, max_drop=0.005, max_evaluations=30)
    assert len(built) == len(res.variants) <= 30
    assert any(v.phase == "sensitivity" and len(v.excluded_nodes) > 1 for v in res.variants)  # groups were used
    assert res.chosen is not None
    chosen = set(res.chosen.excluded_nodes)
    assert {"layer3", "layer31"} <= chosen
    # refinement returned most of the harmless group members to int8
    greedy_best = max((v for v in res.variants if v.phase == "greedy" and v.meets_budget), key=lambda v: v.score)
    assert len(chosen) < len(greedy_best.excluded_nodes)


def test_unreachable_budget_chooses_nothing_and_says_why():
    errors = {"a": 0.01, "b": 0.01, "c": 0.01, "not-a-candidate": 0.001}
    build, score, built = _model(errors)
    res = sensitivity.keep_sensitive_nodes_in_float(["a", "b", "c"], build, score, max_drop=0.0, max_evaluations=5)
    assert res.chosen is None
    assert len(res.variants) <= 5
    assert "nothing left quantized" in res.stop_reason
    assert all(len(v.excluded_nodes) < 3 for v in res.variants)  # never the all-float model
    assert res.best.meets_budget is False
    tight = sensitivity.keep_sensitive_nodes_in_float(["a", "b", "c"], build, score, max_drop=0.0, max_evaluations=1)
    assert tight.chosen is None and len(tight.variants) == 1 and "budget spent" in tight.stop_reason


def test_stops_when_nothing_more_is_gained():
    # a fixed error that no exclusion removes (e.g. from an op that is not a candidate)
    def build(excluded):
        return excluded

    def score(excluded):
        return 0.9

    res = sensitivity.keep_sensitive_nodes_in_float([f"n{i}" for i in range(6)], build, score, max_drop=0.01, max_evaluations=50, patience=2)
    assert res.chosen is None
    assert "nothing more gained" in res.stop_reason
    # baseline, 6 single-node probes, then greedy step 1 reuses a probe and step 2 is the second stale one
    assert len(res.variants) == 1 + 6 + 1


def test_as_dict_is_serialisable():
    import json

    build, score, _ = _model({"a": 0.1})
    res = sensitivity.keep_sensitive_nodes_in_float(["a"], build, score, max_drop=0.01)
    d = json.loads(json.dumps(res.as_dict()))
    assert d["chosen"] == "keep a" and d["variants"][0]["excluded_nodes"] == []
    assert "artifact" not in d["variants"][0]


@pytest.mark.parametrize("kw", [{"max_drop": -0.1}, {"max_drop": 0.1, "max_evaluations": 0}])
def test_bad_arguments(kw):
    with pytest.raises(EdgekitError):
        sensitivity.keep_sensitive_nodes_in_float(["a"], lambda e: e, lambda a: 1.0, **kw)
