"""One onnx2tf run serves the fp32, fp16 and INT8 TFLite steps; its shared cache entry is sha256-checked.

The conversions use a tiny real conv model in the real onnx2tf tool env (skipped where the env does not exist;
.ci/run creates it). The cache-entry tests need no onnx2tf.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.converters import onnx2tf_env
from edgekit.converters.tflite import TfliteConfig, TfliteStep
from edgekit.core import cache as ekcache
from edgekit.core.artifact import load_artifact
from edgekit.core.steps import StepContext

from tests.converters.test_tflite import _env_ready, _feeds, _tiny_onnx


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture
def counted(monkeypatch):
    """Every onnx2tf invocation, with its arguments."""
    calls = []
    real = onnx2tf_env.run_onnx2tf

    def spy(python, args, **kw):
        calls.append(list(args) + [f"skip={','.join(kw.get('skip', ()))}"])
        return real(python, args, **kw)

    monkeypatch.setattr(onnx2tf_env, "run_onnx2tf", spy)
    return calls


def _step(art, tmp: Path, name: str, cache: Path, **cfg):
    notes: list = []
    ctx = StepContext(work_dir=tmp / name, profile=None, calib_data=lambda n: _feeds(n), cache_dir=cache, progress=notes.append)
    out = TfliteStep().run(art, TfliteConfig(calib_samples=4, **cfg), ctx)
    return out, ctx.notes


def _shared_entries(cache: Path):
    return sorted(p.parent for p in cache.glob(f"??/*/{ekcache.FILES}"))


def _tensor_dtypes(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    return {str(d["dtype"].__name__) for d in Interpreter(model_path=str(path)).get_tensor_details()}


@pytest.mark.slow
@pytest.mark.skipif(not _env_ready(), reason="the onnx2tf tool env has not been created on this machine")
def test_one_onnx2tf_run_serves_fp32_fp16_and_int8(tmp_path, counted):
    art = load_artifact(_tiny_onnx(tmp_path))
    cache = tmp_path / "cache"
    fp32, notes = _step(art, tmp_path, "fp32", cache, precision="fp32", share_with=["fp16", "int8"])
    assert len(counted) == 1 and "-oiqt" in counted[0]  # the fp32 step ran the calibrated run for the others
    (entry,) = _shared_entries(cache)
    files, meta = ekcache.load_files(entry)
    assert meta["mode"] == "iq" and "out/model_integer_quant.tflite" in files and "out/model_float16.tflite" in files
    # -oiqt's int16-activation and full-integer models are not built (nobody asked for them)
    assert not [f for f in files if "int16" in f or "full_integer" in f]
    int8, notes8 = _step(art, tmp_path, "int8", cache, precision="int8")
    fp16, _ = _step(art, tmp_path, "fp16", cache, precision="fp16")
    assert len(counted) == 1, "the INT8 and FP16 steps must reuse the fp32 step's onnx2tf run"
    assert any("onnx2tf run shared" in n for n in notes8)
    assert len({fp32.sha256, int8.sha256, fp16.sha256}) == 3  # three different models came out of the one run
    assert "int8" in _tensor_dtypes(int8.path) and "int8" not in _tensor_dtypes(fp32.path)
    assert "float16" in _tensor_dtypes(fp16.path)
    assert int8.metadata["feed_transpose"] == fp32.metadata["feed_transpose"]  # each step still maps its own layout

    # fp32 on its own (no share_with) in a cache with no shared run: the same float32 model from a plain run, so the
    # model a step ships does not depend on which run happened to be in the cache
    alone, _ = _step(art, tmp_path, "alone", tmp_path / "cache2", precision="fp32")
    assert len(counted) == 2 and "-oiqt" not in counted[1] and "-cind" in counted[1]
    assert alone.sha256 == fp32.sha256
    (entry2,) = _shared_entries(tmp_path / "cache2")
    files2, meta2 = ekcache.load_files(entry2)
    assert meta2["mode"] == "plain" and meta2["float16"] is False
    assert set(files2) & {"out/model_float32.tflite", "out/model_float16.tflite"} == {"out/model_float32.tflite"}  # fp16 not asked: not built


@pytest.mark.slow
@pytest.mark.skipif(not _env_ready(), reason="the onnx2tf tool env has not been created on this machine")
def test_corrupted_shared_output_is_detected_and_converted_again(tmp_path, counted):
    art = load_artifact(_tiny_onnx(tmp_path))
    cache = tmp_path / "cache"
    good, _ = _step(art, tmp_path, "first", cache, precision="int8")
    assert len(counted) == 1
    (entry,) = _shared_entries(cache)
    victim = entry / "out" / "model_integer_quant.tflite"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the INT8 model
    victim.write_bytes(bytes(data))
    again, notes = _step(art, tmp_path, "second", cache, precision="int8")
    assert any("damaged" in n and "model_integer_quant.tflite" in n for n in notes)
    assert len(counted) == 2, "a damaged shared run must be converted again, not served"
    assert _sha(again.path) != hashlib.sha256(bytes(data)).hexdigest()
    (rebuilt,) = _shared_entries(cache)
    files, _meta = ekcache.load_files(rebuilt)
    assert _sha(rebuilt / "out" / "model_integer_quant.tflite") == files["out/model_integer_quant.tflite"]
    assert again.sha256 == files["out/model_integer_quant.tflite"]
    assert good.sha256 == again.sha256  # the same conversion again (deterministic on the same data)


# ---- the shared entry itself (no onnx2tf)


def _publish(tmp_path: Path, files: dict) -> Path:
    cache = tmp_path / "c"
    entry = cache / "ab" / ("ab" + "0" * 62)
    build = ekcache.new_build_dir(entry)
    for name, data in files.items():
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        (build / name).write_bytes(data)
    ekcache.store_files(build, entry, {"mode": "test"}, cache)
    return entry


def test_shared_entry_copy_is_checked_after_copying(tmp_path):
    entry = _publish(tmp_path, {"out/a.tflite": b"A" * 1000, "out/b.tflite": b"B" * 10})
    files, meta = ekcache.load_files(entry)
    assert meta == {"mode": "test"} and set(files) == {"out/a.tflite", "out/b.tflite"}
    dest = tmp_path / "got.tflite"
    ekcache.copy_verified(entry, files, "out/a.tflite", dest)
    assert dest.read_bytes() == b"A" * 1000
    (entry / "out/b.tflite").write_bytes(b"C" * 10)  # same size, other bytes
    with pytest.raises(ekcache.Damaged, match="b.tflite does not match its recorded sha256"):
        ekcache.copy_verified(entry, files, "out/b.tflite", tmp_path / "b.tflite")
    assert not (tmp_path / "b.tflite").exists()  # nothing half-trusted is left behind
    (entry / "out/a.tflite").unlink()
    with pytest.raises(ekcache.Damaged, match="a.tflite is missing"):
        ekcache.copy_verified(entry, files, "out/a.tflite", tmp_path / "a2.tflite")


def test_shared_entry_index_tampering_is_detected(tmp_path):
    entry = _publish(tmp_path, {"out/a.tflite": b"A"})
    index = entry / ekcache.FILES
    sealed = json.loads(index.read_text())
    sealed["body"]["files"]["out/a.tflite"] = hashlib.sha256(b"evil").hexdigest()
    index.write_text(json.dumps(sealed))
    with pytest.raises(ekcache.Damaged, match="does not match its own checksum"):
        ekcache.load_files(entry)
    index.write_text("{not json")
    with pytest.raises(ekcache.Damaged, match="unreadable"):
        ekcache.load_files(entry)
    index.unlink()
    with pytest.raises(ekcache.Damaged, match="missing"):
        ekcache.load_files(entry)
    assert ekcache.load_files(tmp_path / "nope") is None


def test_republishing_replaces_the_old_shared_entry(tmp_path):
    entry = _publish(tmp_path, {"out/a.tflite": b"old"})
    build = ekcache.new_build_dir(entry)
    (build / "out").mkdir()
    (build / "out/a.tflite").write_bytes(b"new")
    ekcache.store_files(build, entry, {"mode": "again"}, tmp_path / "c")
    files, meta = ekcache.load_files(entry)
    assert meta["mode"] == "again" and (entry / "out/a.tflite").read_bytes() == b"new"
    assert files["out/a.tflite"] == hashlib.sha256(b"new").hexdigest()
    assert not list(entry.parent.glob(".stale-*"))  # the old entry was moved aside and removed


def test_search_plans_share_one_run(tmp_path):
    """The variant search gives every TFLite step the others' precisions; FP16 joins only where the CPU computes FP16."""
    from edgekit.core.plan import PlanOptions, make_plan
    from edgekit.core.profiles import load_profile
    from edgekit.quality.variant_search import share_tflite_runs

    art = load_artifact(_tiny_onnx(tmp_path))
    prof = load_profile("x86-cpu")

    def plans():
        return {("tflite", p): make_plan(art, "tiny", prof, PlanOptions(runtime="tflite", precision=p, has_calib=True, max_drop=0.05 if p != "fp32" else None))
                for p in ("fp32", "fp16", "int8")}

    def shares(ps):
        return {k[1]: next(s.config.get("share_with") for s in plan.steps if s.step == "tflite") for k, plan in ps.items()}

    ps = plans()
    share_tflite_runs(ps, with_fp16=True)
    assert shares(ps) == {"fp32": ["fp16", "int8"], "fp16": ["fp32", "int8"], "int8": ["fp16", "fp32"]}
    ps = plans()
    share_tflite_runs(ps, with_fp16=False)
    assert shares(ps) == {"fp32": ["int8"], "fp16": [], "int8": ["fp32"]}
    for plan in ps.values():  # the configs stay valid step configs
        TfliteConfig(**next(s.config for s in plan.steps if s.step == "tflite"))
