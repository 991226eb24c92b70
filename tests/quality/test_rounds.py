"""Interleaved rounds and the variant search's near-tie settling, on real harness runs of light_* models."""

from __future__ import annotations

import pytest

from edgekit.quality.rounds import run_rounds, summarize


def _light(name):
    from pathlib import Path

    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


QUICK = {"warmup_runs": 1, "warmup_seconds": 0.0, "min_runs": 5, "min_seconds": 0.0}


def test_run_rounds_interleaves_and_waits_between_rounds_only():
    from edgekit.core.artifact import load_artifact
    from edgekit.core.profiles import load_profile
    from edgekit.core.shapes import resolve_inputs
    from edgekit.workflows.deploy import benchmark, make_runner

    prof = load_profile("x86-cpu")
    arts = [load_artifact(_light("squeezenet")), load_artifact(_light("shufflenet"))]
    order, sleeps = [], []

    def recording_benchmark(art, *a, **kw):
        order.append(art.path.name)
        return benchmark(art, *a, **kw)

    with make_runner(prof) as runner:
        res = run_rounds(recording_benchmark, arts, prof, runner, lambda a: resolve_inputs(a.inputs, model=a.path.name), 3,
                         cooldown_s=7.5, runtimes=["onnxruntime", None], bench=QUICK, sleep=sleeps.append)
    assert order == ["light_squeezenet.onnx", "light_shufflenet.onnx"] * 3
    assert sleeps == [7.5, 7.5]
    assert [r[0].runtime.name for r in res] == ["onnxruntime", "onnxruntime"]
    s = summarize(["sq", "sh"], res)
    assert s["rounds"] == 3 and [len(a["round_medians_ms"]) for a in s["artifacts"]] == [3, 3]
    (pair,) = s["pairs"]
    assert pair["base"] == "sq" and pair["lo"] <= pair["ratio"] <= pair["hi"] and len(pair["per_round"]) == 3
    assert s["artifacts"][0]["runs"] == sum(r.timing.runs for r in res[0])


def test_variant_search_settles_near_ties_with_interleaved_rounds(tmp_path):
    """Every passing variant counts as near-tied (near_tie=10): they are re-measured in interleaved rounds and the
    lowest median over rounds is chosen, each rival carrying its paired ratio to the pick."""
    from edgekit.core.profiles import load_profile
    from edgekit.core.registry import get_runner
    from edgekit.quality.variant_search import search_variants
    from edgekit.workflows.deploy import benchmark, build_data, resolve_model

    calls = []

    def short_bench(art, profile, runner, inputs, runtime=None, bench=None):
        calls.append((art.path.name, runtime))
        return benchmark(art, profile, runner, inputs, runtime=runtime, bench=QUICK)

    prof = load_profile("x86-cpu")
    resolved = resolve_model(str(_light("squeezenet")))
    data = build_data(resolved)
    with get_runner("local")(prof) as runner:
        variants, best = search_variants(resolved, prof, data, runner, max_drop=0.01, host=None, simplify=False, cache_dir=tmp_path,
                                runtimes=["onnxruntime"], precisions=["fp32", "fp16"], benchmark=short_bench, tie_rounds=2, near_tie=10.0)
    by = {v.precision: v for v in variants}
    assert set(by) == {"fp32", "fp16"} and all(v.rounds_median_ms is not None for v in variants)
    (chosen,) = [v for v in variants if v.status == "chosen"]
    (rival,) = [v for v in variants if v.status != "chosen"]
    assert chosen.rounds_median_ms <= rival.rounds_median_ms
    assert "interleaved rounds" in chosen.reason and "vs chosen over 2 interleaved rounds" in rival.reason
    assert len(calls) == 2 + 2 * 2  # one quick benchmark each, then 2 rounds of both
    assert best[1].artifact.precision == chosen.precision
