"""One held-out evaluation set decides (issue 15 §3): a step's own search, the pipeline's check after that step, the
end-to-end check and the variant search score the SAME feeds. The det case: the search said IoU 0.9657 on its 20
samples, the check found 0.9542 on 8 others and refused. Written first against the pipeline that asked the zoo for
`eval_samples` (step) and `fidelity_samples` (check) feeds separately."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgekit.core.pipeline import Pipeline
from edgekit.core.plan import PlanOptions, make_plan
from edgekit.core.profiles import load_profile
from edgekit.workflows.deploy import build_data, resolve_model


def _fp(outputs) -> str:
    h = hashlib.sha256()
    for sample in outputs:
        for o in sample:
            h.update(np.ascontiguousarray(o).tobytes())
    return h.hexdigest()


def test_the_steps_own_search_and_the_pipeline_check_score_the_same_heldout_set(tmp_path):
    prof = load_profile("x86-cpu")
    resolved = resolve_model("zoo:ppocr-rec")
    data = build_data(resolved, shapes={"x": [1, 3, 48, 160]}, eval_count=6)
    asked, scored = [], []
    make, metric = data.eval, data.task_metric

    def eval_feeds(n):
        asked.append(n)
        return make(n)

    def task_metric(ref, new):
        if len(ref) > 1:  # whole-set scores (per-sample calls make the interval)
            scored.append((len(ref), _fp(ref)))
        return metric(ref, new)

    data.eval, data.task_metric = eval_feeds, task_metric
    plan = make_plan(resolved.artifact, resolved.label, prof, PlanOptions(runtime="onnxruntime", precision="fp16", max_drop=0.05,
                                                                          simplify=False, shapes={"x": [1, 3, 48, 160]}))
    assert any(s.step == "fp16" for s in plan.steps)
    pipe = Pipeline(plan, prof, data, cache_dir=tmp_path, fidelity_samples=8, use_cache=False)
    result = pipe.run(resolved.artifact)
    rec = next(r for r in result.records if r.step == "fp16")
    # one draw of the held-out set, of its size, whatever the fp16 config's eval_samples (20) or fidelity_samples (8) say
    assert asked == [6]
    # the step's own score and the pipeline's check saw the same 6 reference outputs
    assert {n for n, _ in scored} == {6} and len({fp for _, fp in scored}) == 1 and len(scored) >= 2
    assert rec.fidelity.samples == 6 and rec.fidelity.data == "eval"
    assert rec.details["variants"][0]["score"] == pytest.approx(rec.fidelity.task_score, abs=1e-12)
    assert rec.fidelity.interval is not None and rec.fidelity.interval["lo"] <= rec.fidelity.task_score <= rec.fidelity.interval["hi"]


def test_eval_count_defaults_to_the_zoo_models_and_fidelity_samples_overrides():
    det = resolve_model("zoo:ppocr-det")
    assert build_data(det).eval_count == 32 == det.zoo.eval_count
    assert build_data(resolve_model("zoo:ppocr-rec")).eval_count == 128
    assert build_data(det, eval_count=3).eval_count == 3


def test_shape_shapes_the_zoo_heldout_and_calibration_samples():
    """A 320x320 deploy is judged on 320x320 pages (and calibrated on them); a batched --shape keeps the zoo's."""
    det = resolve_model("zoo:ppocr-det")
    small = build_data(det, shapes={"x": [1, 3, 320, 320]}, eval_count=2)
    assert [f["x"].shape for f in small.heldout()] == [(1, 3, 320, 320)] * 2 and small.calib(1)[0]["x"].shape == (1, 3, 320, 320)
    plain = build_data(det, eval_count=2)
    assert plain.heldout()[0]["x"].shape == (1, 3, 640, 640) and small.fingerprint != plain.fingerprint  # cache keys differ
    batched = build_data(det, shapes={"x": [4, 3, 320, 320]}, eval_count=1)
    assert batched.heldout()[0]["x"].shape == (1, 3, 640, 640) and batched.inputs[0].shape == [4, 3, 320, 320]


def test_the_variant_search_scores_on_the_same_heldout_set_as_the_steps(tmp_path):
    """--precision auto: the search's score of a variant is the one its step's search and check found on the same set."""
    from edgekit.core.registry import get_runner
    from edgekit.quality.variant_search import search_variants
    from edgekit.workflows.deploy import benchmark

    prof = load_profile("x86-cpu")
    resolved = resolve_model("zoo:ppocr-rec")
    data = build_data(resolved, shapes={"x": [1, 3, 48, 160]}, eval_count=6)
    asked = []
    make = data.eval
    data.eval = lambda n: asked.append(n) or make(n)

    def short(art, profile, runner, inputs, runtime=None, bench=None, **kw):
        return benchmark(art, profile, runner, inputs, runtime=runtime, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 2, "min_seconds": 0}, **kw)

    with get_runner("local")(prof) as runner:
        variants, best = search_variants(resolved, prof, data, runner, max_drop=0.05, host=None, simplify=False, cache_dir=tmp_path,
                                         runtimes=["onnxruntime"], precisions=["fp16"], benchmark=short, fidelity_samples=8)
    v = variants[0]
    assert asked == [6] and v.fidelity.samples == 6 and v.fidelity.data == "eval"
    step = next(r for r in best[1].records if r.step == "fp16")
    assert v.score == pytest.approx(step.fidelity.task_score, abs=1e-12) == pytest.approx(step.details["variants"][0]["score"], abs=1e-12)
