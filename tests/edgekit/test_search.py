"""Variant search: infeasible candidates are recorded, not fatal; the fastest within budget is chosen."""

from __future__ import annotations

from edgekit.workflows.deploy import build_data, resolve_model
from edgekit.core.profiles import load_profile
from edgekit.core.registry import get_runner
from edgekit.quality.variant_search import candidates, search_variants


def test_candidates_follow_profile_order_and_precisions():
    prof = load_profile("jetson-nano")
    c = candidates(prof, precisions=["int8"])
    assert [r for r, _ in c] == list(prof.runtimes)


def test_search_records_infeasible_and_chooses_a_measured_variant(ppocr_rec_path, tmp_path):
    """A runtime the profile cannot use is recorded as infeasible; the measured ORT variant is chosen."""
    prof = load_profile("x86-cpu")
    resolved = resolve_model(str(ppocr_rec_path))
    data = build_data(resolved, shapes={"x": [1, 3, 48, 160]})
    def short_bench(art, profile, runner, inputs, runtime=None, bench=None):
        """The real benchmark, shortened for the test."""
        from edgekit.workflows.deploy import benchmark

        return benchmark(art, profile, runner, inputs, runtime=runtime, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 3, "min_seconds": 0})

    with get_runner("local")(prof) as runner:
        variants, best = search_variants(
            resolved, prof, data, runner, max_drop=0.01, host=None, simplify=False, cache_dir=tmp_path,
            runtimes=["onnxruntime", "tensorrt"], precisions=["fp32"], benchmark=short_bench,
        )
    by = {(v.runtime, v.precision): v for v in variants}
    assert by[("tensorrt", "fp32")].status == "infeasible" and "tensorrt" in by[("tensorrt", "fp32")].reason
    chosen = [v for v in variants if v.status == "chosen"]
    assert len(chosen) == 1 and chosen[0].runtime == "onnxruntime" and chosen[0].median_ms > 0
    assert best is not None and best[1].artifact.format == "onnx"


def test_search_says_when_it_creates_the_onnx2tf_env(ppocr_rec_path, tmp_path, monkeypatch):
    """A variant search on a fresh machine creates the onnx2tf env (~2.6 GB, minutes) inside a quiet tflite build:
    the one-time message must still reach the user. Here pip is pointed at no index so creation fails in seconds."""
    from edgekit.converters import onnx2tf_env

    monkeypatch.undo()  # the conftest guard replaced _create; the real one runs here, but pip has no index (no download)
    monkeypatch.delenv(onnx2tf_env.ENV_VAR, raising=False)
    monkeypatch.setattr(onnx2tf_env, "_chosen_root", lambda: (tmp_path / "tools" / "onnx2tf", "default"))
    monkeypatch.setattr(onnx2tf_env, "PINS", ["--no-index", "--find-links", str(tmp_path / "none"), "onnx2tf==0.0.0"])
    prof = load_profile("x86-cpu")
    resolved = resolve_model(str(ppocr_rec_path))
    data = build_data(resolved, shapes={"x": [1, 3, 48, 160]})
    said = []
    with get_runner("local")(prof) as runner:
        variants, _ = search_variants(resolved, prof, data, runner, max_drop=0.01, host=None, simplify=False, cache_dir=tmp_path / "cache",
                                      runtimes=["tflite"], precisions=["fp32"], shapes={"x": [1, 3, 48, 160]}, benchmark=lambda *a, **k: None,
                                      progress=said.append)
    assert any(m.startswith("creating the onnx2tf tool env at " + str(tmp_path)) for m in said), said
    assert [v.status for v in variants] == ["failed"], [(v.status, v.reason) for v in variants]
