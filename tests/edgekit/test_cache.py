"""Cache integrity: a damaged entry (main file, extra file or entry.json) is never shipped; a rebuild replaces it."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from edgekit.core import cache as ekcache
from edgekit.core.artifact import load_artifact
from edgekit.workflows.deploy import deploy
from edgekit.quality.fidelity import predict
from edgekit.core.shapes import random_feeds


@pytest.fixture(scope="module")
def shufflenet() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend/test/data/light/light_shufflenet.onnx"


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _entries(cache: Path):
    return sorted(p.parent for p in cache.glob("??/*/entry.json"))


def _shipped_files_match_manifest(out: Path) -> int:
    """Every file manifest.json lists (final artifact and each step's) has the sha256 manifest.json records."""
    manifest = json.loads((out / "manifest.json").read_text())
    listed = dict(manifest["artifact"]["file_sha256"])
    for step in manifest["steps"]:
        listed.update(step["file_sha256"])
    for path, sha in listed.items():
        assert _sha(Path(path)) == sha, f"{path} was shipped with a sha256 that differs from manifest.json"
    assert Path(manifest["artifact"]["path"]).name in {Path(p).name for p in listed}
    return len(listed)


def _same_outputs(a: Path, b: Path) -> None:
    """The final artifacts in two --out dirs compute the same outputs on the same inputs (a damaged .bin would not)."""
    arts = [load_artifact(json.loads((d / "manifest.json").read_text())["artifact"]["path"]) for d in (a, b)]
    from edgekit.core.runner_interface import InputSpec

    feeds = random_feeds([InputSpec(name=t.name, shape=t.shape, dtype=t.dtype) for t in arts[0].inputs], 2, seed=3)
    ra, rb = (predict(x, feeds) for x in arts)
    for oa, ob in zip(ra, rb):
        for xa, xb in zip(oa, ob):
            np.testing.assert_allclose(xa, xb, rtol=1e-4, atol=1e-6)


def _deploy(model, cache, out, **kw):
    return deploy(str(model), "x86-cpu", run_benchmark=False, cache_dir=cache, out=out, fidelity_samples=2, **kw)


@pytest.mark.parametrize("victim", ["model.xml", "model.bin"])
def test_truncated_cache_file_is_rebuilt_replaced_and_never_shipped(shufflenet, tmp_path, victim):
    cache = tmp_path / "c"
    first = _deploy(shufflenet, cache, tmp_path / "o1")
    assert first.steps[-1].status == "ran"
    (entry,) = _entries(cache)
    with open(entry / victim, "r+b") as f:
        f.truncate((entry / victim).stat().st_size // 2)
    again = _deploy(shufflenet, cache, tmp_path / "o2")
    rec = again.steps[-1]
    assert rec.status == "ran", "a damaged entry must be rebuilt, not served"
    assert any("damaged" in n and victim in n for n in rec.notes), rec.notes  # the user is told
    # OpenVINO numbers node names with a process-wide counter, so a rebuild is not byte-identical: the truth is
    # the rebuilt entry (which verifies) and the model's outputs
    assert ekcache.load(entry) is not None, "the rebuild must replace the damaged entry"
    assert _sha(tmp_path / "o2" / victim) == _sha(entry / victim)
    assert (entry / victim).stat().st_size > (tmp_path / "o1" / victim).stat().st_size // 2
    _shipped_files_match_manifest(tmp_path / "o2")
    _same_outputs(tmp_path / "o1", tmp_path / "o2")
    third = _deploy(shufflenet, cache, tmp_path / "o3")
    assert third.steps[-1].status == "cached"


def test_no_cache_rebuild_replaces_a_stale_entry(shufflenet, tmp_path):
    cache = tmp_path / "c"
    _deploy(shufflenet, cache, tmp_path / "o1")
    (entry,) = _entries(cache)
    (entry / "model.xml").write_bytes((entry / "model.xml").read_bytes()[:70000])
    rebuilt = _deploy(shufflenet, cache, tmp_path / "o2", use_cache=False)
    assert rebuilt.steps[-1].status == "ran"
    assert ekcache.load(entry) is not None, "--no-cache's fresh build must replace the stale entry"
    assert _sha(tmp_path / "o2" / "model.xml") == _sha(entry / "model.xml")
    _same_outputs(tmp_path / "o1", tmp_path / "o2")
    assert not list(cache.glob("??/.*")), "no temp or stale dir is left beside the entry"


def test_garbage_entry_json_is_repaired(shufflenet, tmp_path):
    cache = tmp_path / "c"
    _deploy(shufflenet, cache, tmp_path / "o1")
    (entry,) = _entries(cache)
    (entry / "entry.json").write_text("{ not json")
    second = _deploy(shufflenet, cache, tmp_path / "o2")
    assert second.steps[-1].status == "ran"
    json.loads((entry / "entry.json").read_text())  # repaired
    third = _deploy(shufflenet, cache, tmp_path / "o3")
    assert third.steps[-1].status == "cached", "a repaired entry is served again"


CHAINS = {"ort-fp16": {"runtime": "onnxruntime", "precision": "fp16"}, "openvino": {"runtime": "openvino"}}


def test_random_byte_corruption_never_ships_a_file_that_differs_from_the_manifest(shufflenet, tmp_path):
    """Property: flip or cut random bytes in random cache files (main .onnx/.xml, the .bin extra, entry.json) of
    two chains (simplify -> fp16; openvino xml+bin); every later deploy ships only files whose sha256 is what
    its manifest.json says, every entry left verifies, and the shipped model computes what a clean build does."""
    cachedir = tmp_path / "c"
    for name, kw in CHAINS.items():
        _deploy(shufflenet, cachedir, tmp_path / f"clean-{name}", **kw)
    assert (tmp_path / "clean-openvino" / "model.bin").exists(), "one chain has an extra file (the IR's .bin)"
    rng = random.Random(14)
    for round_ in range(8):
        files = sorted(f for e in _entries(cachedir) for f in e.iterdir() if f.is_file())
        assert files
        for victim in rng.sample(files, k=rng.randint(1, 2)):
            data = bytearray(victim.read_bytes())
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(data))
                data[i] ^= rng.randint(1, 255)
            if rng.random() < 0.3:
                data = data[: rng.randrange(len(data))]
            victim.write_bytes(bytes(data))
        for name, kw in CHAINS.items():
            out = tmp_path / f"o{round_}-{name}"
            report = _deploy(shufflenet, cachedir, out, **kw)
            assert _shipped_files_match_manifest(out) >= 1
            for step in report.steps:
                ekcache.load(Path(step.artifact["path"]).parent)  # every entry this run used verifies (else Damaged)
            _same_outputs(tmp_path / f"clean-{name}", out)
