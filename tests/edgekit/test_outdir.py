"""--out is one coherent run: staged and swapped in, the run before kept in .previous, locked, umask respected."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from edgekit.workflows.deploy import deploy
from edgekit.core.errors import EdgekitError, OutputError
from edgekit.core.outdir import OutDir

QUICK = ["--min-seconds", "0.05", "--min-runs", "2", "--warmup-runs", "0", "--warmup-seconds", "0"]


@pytest.fixture(scope="module")
def light() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend/test/data/light"


def _files(d: Path):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and ".previous" not in p.relative_to(d).parts)


def test_a_second_run_replaces_the_first_which_is_kept_as_previous(light, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "c"
    deploy(str(light / "light_shufflenet.onnx"), "x86-cpu", runtime="openvino", run_benchmark=False, cache_dir=cache, out=out, fidelity_samples=1)
    first = _files(out)
    assert "model.xml" in first and "model.bin" in first
    deploy(str(light / "light_squeezenet.onnx"), "x86-cpu", runtime="onnxruntime", run_benchmark=False, cache_dir=cache, out=out, fidelity_samples=1)
    now = _files(out)
    assert "model.xml" not in now and "model.bin" not in now, "files of the earlier run must not stay beside the new ones"
    assert any(f.endswith(".onnx") for f in now)
    assert json.loads((out / "report.json").read_text())["model"].endswith("light_squeezenet.onnx")
    assert _files(out / ".previous") == first
    assert json.loads((out / ".previous" / "report.json").read_text())["model"].endswith("light_shufflenet.onnx")
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name or ".old-" in p.name], "no staging dir is left"
    # only one generation is kept
    deploy(str(light / "light_shufflenet.onnx"), "x86-cpu", runtime="openvino", run_benchmark=False, cache_dir=cache, out=out, fidelity_samples=1)
    assert not (out / ".previous" / ".previous").exists()
    assert json.loads((out / ".previous" / "report.json").read_text())["model"].endswith("light_squeezenet.onnx")


def test_a_failed_run_never_sits_beside_an_earlier_success(light, tmp_path, cli):
    out, cache = tmp_path / "out", tmp_path / "c"
    m = str(light / "light_shufflenet.onnx")
    ok = cli("deploy", m, "-p", "x86-cpu", "--runtime", "onnxruntime", "--cache-dir", str(cache), "--out", str(out), *QUICK)
    assert ok.returncode == 0, ok.stderr
    assert (out / "report.md").exists()
    # an invalid benchmark option reaching the harness fails the run after conversion (the API does not pre-validate)
    with pytest.raises(EdgekitError):
        deploy(m, "x86-cpu", runtime="openvino", cache_dir=cache, out=out, fidelity_samples=1, bench={"threads": -1})
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and "threads" in report["error"]
    assert not (out / "report.md").exists(), "the earlier success's report.md must not stay beside a failed report.json"
    assert not list(out.glob("*.onnx")), "nor its model"
    assert (out / ".previous" / "report.md").exists(), "the earlier success is kept as .previous"


def test_a_non_empty_directory_edgekit_did_not_write_is_refused_untouched(light, tmp_path, cli):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    r = cli("deploy", str(light / "light_shufflenet.onnx"), "-p", "x86-cpu", "--no-bench", "--cache-dir", str(tmp_path / "c"), "--out", str(out))
    assert r.returncode != 0
    assert "not empty and was not written by edgekit" in r.stderr and "Traceback" not in r.stderr
    assert [p.name for p in out.iterdir()] == ["thesis.tex"] and (out / "thesis.tex").read_text() == "precious"
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_a_concurrent_second_writer_gets_a_clear_error(light, tmp_path, cli):
    out = tmp_path / "out"
    holder = OutDir(out).open()  # the first writer, mid-run
    try:
        r = cli("deploy", str(light / "light_shufflenet.onnx"), "-p", "x86-cpu", "--no-bench", "--cache-dir", str(tmp_path / "c"), "--out", str(out))
        assert r.returncode != 0
        assert f"pid {os.getpid()}" in r.stderr and "being written by another edgekit run" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert not out.exists() or not any(out.iterdir())
    finally:
        holder.abort()
    # the lock dies with its holder: the next run proceeds
    r = cli("deploy", str(light / "light_shufflenet.onnx"), "-p", "x86-cpu", "--no-bench", "--cache-dir", str(tmp_path / "c"), "--out", str(out))
    assert r.returncode == 0, r.stderr


def test_an_interrupted_run_leaves_out_as_it_was(tmp_path):
    out = tmp_path / "out"
    o = OutDir(out).open()
    (o.stage / "half.bin").write_bytes(b"x")
    o.abort()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [f".{out.name}.edgekit-lock"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_out_files_follow_the_umask(light, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        deploy(str(light / "light_shufflenet.onnx"), "x86-cpu", runtime="openvino", run_benchmark=False, cache_dir=tmp_path / "c", out=tmp_path / "o", fidelity_samples=1)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "o").rglob("*") if p.is_file()]
    assert len(files) >= 5
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == mode, f"{p} has mode {oct(stat.S_IMODE(p.stat().st_mode))}"
    for d in [tmp_path / "o", *[p for p in (tmp_path / "o").rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask, d


def test_relative_cache_dir_and_env_work_with_and_without_benchmark(light, tmp_path, cli):
    m = str(light / "light_shufflenet.onnx")
    r = cli("deploy", m, "-p", "x86-cpu", "--no-bench", "--cache-dir", "rel-cache", "--out", "o1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "rel-cache").rglob("entry.json"))
    r = cli("deploy", m, "-p", "x86-cpu", "--runtime", "onnxruntime", "--out", "o2", *QUICK, cwd=tmp_path, env={"EDGEKIT_CACHE_DIR": "env-cache"})
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "env-cache").rglob("entry.json"))
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["benchmark"]["timing"]["runs"] >= 2


def test_an_error_while_keeping_the_partial_report_never_masks_the_original(light, tmp_path, monkeypatch):
    import edgekit.report

    def broken(*a, **k):
        raise OutputError("disk full while writing the partial report")

    monkeypatch.setattr(edgekit.report, "write_partial", broken)
    seen = []
    with pytest.raises(EdgekitError) as ei:
        deploy(str(light / "light_shufflenet.onnx"), "x86-cpu", runtime="openvino", cache_dir=tmp_path / "c", out=tmp_path / "o",
               fidelity_samples=1, bench={"threads": -1}, progress=seen.append)
    assert "threads" in str(ei.value), "the original error is raised, not the one from the partial report"
    assert any("could not write the partial report" in s and "disk full" in s for s in seen)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_the_current_directory_is_refused_as_out(tmp_path, cli, light):
    r = cli("deploy", str(light / "light_shufflenet.onnx"), "-p", "x86-cpu", "--no-bench", "--cache-dir", str(tmp_path / "c"), "--out", ".", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "is the current directory" in r.stderr and "--out out/" in r.stderr


def test_compress_out_is_staged_locked_and_kept_whole_on_failure(light, tmp_path, cli):
    """`edgekit compress --out` follows deploy's rule: a second writer is refused, a failed run leaves the earlier one."""
    import numpy as np
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.2, (32, 16, 3, 3)).astype(np.float32), "w")
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "c", [h.make_tensor_value_info("x", T.FLOAT, [1, 16, 16, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 32, 16, 16])], [w])
    m = str(tmp_path / "conv.onnx")
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), m)
    out = tmp_path / "ws"
    ok = cli("compress", m, "--method", "weight-share", "--clusters", "16", "--profile", "x86-cpu", "--eval-samples", "1", "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    first = _files(out)
    assert {"model.onnx", "report.json", "report.md"} <= set(first)
    rec = json.loads((out / "report.json").read_text())
    assert rec["output"] == str(out / "model.onnx"), "the report names where the model is, not the staging dir"
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    holder = OutDir(out).open()
    try:
        r = cli("compress", m, "--method", "weight-share", "--clusters", "8", "--profile", "x86-cpu", "--out", str(out))
        assert r.returncode != 0 and "being written by another edgekit run" in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.abort()
    # a run that fails inside the step (prune needs a PyTorch module, this is ONNX) leaves the earlier run untouched
    bad = cli("compress", m, "--method", "prune", "--profile", "x86-cpu", "--out", str(out))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert _files(out) == first and json.loads((out / "report.json").read_text()) == rec
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
