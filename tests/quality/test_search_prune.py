"""--precision auto measures speed before accuracy: an INT8 variant whose full-INT8 build already runs no faster than
a variant meeting the budget skips its accuracy search (and says so), and the pick stays the same."""

from __future__ import annotations

import onnx

from edgekit.core.profiles import load_profile
from edgekit.core.registry import get_runner
from edgekit.quality import sensitivity
from edgekit.quality.variant_search import search_variants
from edgekit.workflows.deploy import benchmark, build_data, resolve_model


def _node_count_bench(art, profile, runner, inputs, runtime=None, bench=None):
    """The real benchmark, shortened, whose latency is then replaced by the artifact's ONNX node count: a latency
    that does not depend on the machine or its load (a QDQ INT8 graph has more nodes than its FP32 source)."""
    res = benchmark(art, profile, runner, inputs, runtime=runtime, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0})
    res.timing.stats.median_ms = float(len(onnx.load(str(art.path)).graph.node))
    return res


def _search(tmp, prune, calls):
    real = sensitivity.keep_sensitive_nodes_in_float

    def spy(*a, **k):  # the real search, recording how many build+score evaluations it spent
        r = real(*a, **k)
        calls.append(len(r.variants))
        return r

    sensitivity.keep_sensitive_nodes_in_float = spy
    try:
        prof = load_profile("x86-cpu")
        resolved = resolve_model("zoo:ppocr-rec")  # the real PP-OCRv4 rec with the zoo's held-out text lines
        data = build_data(resolved, shapes={"x": [1, 3, 48, 160]})
        with get_runner("local")(prof) as runner:
            return search_variants(resolved, prof, data, runner, max_drop=0.0005, host=None, simplify=False, cache_dir=tmp,
                                   runtimes=["onnxruntime"], precisions=["fp32", "int8"], benchmark=_node_count_bench,
                                   prune=prune, tie_rounds=1, eval_samples=8)
    finally:
        sensitivity.keep_sensitive_nodes_in_float = real


def test_int8_that_cannot_win_skips_its_accuracy_search_and_the_pick_is_unchanged(tmp_path):
    full_calls, pruned_calls = [], []
    full, full_best = _search(tmp_path / "full", False, full_calls)
    pruned, pruned_best = _search(tmp_path / "pruned", True, pruned_calls)

    # without pruning the INT8 step really searched (more than its one full-INT8 build) and still lost
    assert full_calls and full_calls[0] > 1
    chosen_full = [v for v in full if v.status == "chosen"]
    chosen_pruned = [v for v in pruned if v.status == "chosen"]
    assert len(chosen_full) == len(chosen_pruned) == 1
    assert (chosen_pruned[0].runtime, chosen_pruned[0].precision) == (chosen_full[0].runtime, chosen_full[0].precision)
    assert pruned_best is not None and full_best is not None

    # with pruning: one full-INT8 build, measured, then skipped with the reason and the figures in its row
    assert pruned_calls == [1]
    row = next(v for v in pruned if v.precision == "int8")
    assert row.status == "skipped"
    assert "cannot win" in row.reason and "accuracy search was skipped" in row.reason
    assert row.median_ms is not None and row.median_ms >= chosen_pruned[0].median_ms
    assert row.score is not None and row.score < 1 - 0.0005
    assert f"{row.median_ms:.2f} ms" in row.reason
