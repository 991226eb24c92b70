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


def _table_bench(table):
    """The real benchmark, shortened, reporting a latency from `table` per (runtime, precision): the test decides which
    variant is how fast, independent of the machine."""

    def bench(art, profile, runner, inputs, runtime=None, bench=None, **kw):
        res = benchmark(art, profile, runner, inputs, runtime=runtime, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0}, **kw)
        res.timing.stats.median_ms = table[(runtime, art.precision)]
        return res

    return bench


def _built_steps(cache):
    import json

    return sorted(json.loads(e.read_text())["body"]["record"]["step"] for e in cache.glob("??/*/entry.json"))


def test_int8_whose_fp32_is_over_4x_slower_than_the_best_is_not_built(tmp_path):
    """ORT FP32 runs 20.5 ms, OpenVINO INT8 meets the budget at 5 ms: ORT INT8 could run at best 20.5/4 = 5.125 ms, so
    it is not built at all, and its row says why."""
    from edgekit.quality.variant_search import INT8_MAX_SPEEDUP

    prof = load_profile("x86-cpu")
    resolved = resolve_model("zoo:ppocr-rec")
    table = {("openvino", "fp32"): 10.0, ("openvino", "int8"): 5.0, ("onnxruntime", "fp32"): 5.0 * INT8_MAX_SPEEDUP + 0.5, ("onnxruntime", "int8"): 6.0}

    def search(cache):
        data = build_data(resolved, shapes={"x": [1, 3, 48, 160]})
        with get_runner("local")(prof) as runner:
            return search_variants(resolved, prof, data, runner, max_drop=0.5, host=None, simplify=False, cache_dir=cache,
                                   runtimes=["openvino", "onnxruntime"], precisions=["fp32", "int8"], benchmark=_table_bench(table),
                                   tie_rounds=1, eval_samples=8)

    cache = tmp_path / "c"
    variants, best = search(cache)
    chosen = [v for v in variants if v.status == "chosen"]
    assert [(v.runtime, v.precision) for v in chosen] == [("openvino", "int8")]
    row = next(v for v in variants if (v.runtime, v.precision) == ("onnxruntime", "int8"))
    assert row.status == "skipped" and row.median_ms is None and row.artifact is None
    assert "20.50 ms" in row.reason and "at most 4x faster" in row.reason and "openvino/int8" in row.reason and "not built" in row.reason
    assert "quantize-ort" not in _built_steps(cache)


def test_int8_bound_builds_what_could_still_win():
    """The bound only skips what cannot win: at 4x the FP32 time it is a tie (skipped), a hair below it is built."""
    from edgekit.quality.variant_search import int8_cannot_win

    assert int8_cannot_win(fp32_ms=20.0, best_ms=5.0)  # at best 5.0 ms: not faster than 5.0
    assert not int8_cannot_win(fp32_ms=19.9, best_ms=5.0)  # could reach 4.975 ms: built
    assert not int8_cannot_win(fp32_ms=float("inf"), best_ms=5.0)  # FP32 not measured: no bound, built


def _spiking_bench(table, spike):
    """Like _table_bench, but the FIRST run of each (runtime, precision) in `spike` reads that much slower: a quick
    benchmark taken while the machine's load jumped (seen for real: OpenVINO INT8 read 36 ms against FP32's 8.7 ms
    while the load went 0.5 -> 15; interleaved, INT8 ran 2x faster)."""
    seen = set()

    def bench(art, profile, runner, inputs, runtime=None, bench=None, **kw):
        res = benchmark(art, profile, runner, inputs, runtime=runtime, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0}, **kw)
        key = (runtime, art.precision)
        res.timing.stats.median_ms = table[key] * (spike.get(key, 1.0) if key not in seen else 1.0)
        seen.add(key)
        return res

    return bench


def _ort_search(cache, bench, calls):
    real = sensitivity.keep_sensitive_nodes_in_float

    def spy(*a, **k):
        r = real(*a, **k)
        calls.append(len(r.variants))
        return r

    sensitivity.keep_sensitive_nodes_in_float = spy
    try:
        prof = load_profile("x86-cpu")
        resolved = resolve_model("zoo:ppocr-rec")
        data = build_data(resolved, shapes={"x": [1, 3, 48, 160]})
        with get_runner("local")(prof) as runner:
            return search_variants(resolved, prof, data, runner, max_drop=0.0005, host=None, simplify=False, cache_dir=cache,
                                   runtimes=["onnxruntime"], precisions=["fp32", "int8"], benchmark=bench, tie_rounds=1, eval_samples=8)
    finally:
        sensitivity.keep_sensitive_nodes_in_float = real


def test_a_skip_from_quick_benchmarks_taken_under_other_load_is_retimed_and_undone(tmp_path):
    table = {("onnxruntime", "fp32"): 10.0, ("onnxruntime", "int8"): 4.0}
    calls = []
    variants, _ = _ort_search(tmp_path / "spike", _spiking_bench(table, {("onnxruntime", "int8"): 10.0}), calls)
    rows = [v for v in variants if v.precision == "int8"]
    # the full-INT8 probe read 40 ms (spike) against FP32's 10 ms: skipped; re-timed interleaved it runs 4 ms, so the
    # skip is undone and the accuracy search runs after all (more than the probe's one build)
    assert len(rows) == 1 and rows[0].status != "skipped", [(v.status, v.reason) for v in rows]
    assert calls and calls[-1] > 1

    calls = []
    variants, _ = _ort_search(tmp_path / "steady", _spiking_bench({**table, ("onnxruntime", "int8"): 12.0}, {}), calls)
    row = next(v for v in variants if v.precision == "int8")
    assert row.status == "skipped" and "confirmed:" in row.reason and "interleaved rounds" in row.reason
    assert calls == [1], "a confirmed skip spends no accuracy search"
