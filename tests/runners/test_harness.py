"""The on-device harness: real onnxruntime / OpenVINO / LiteRT on real models (PP-OCRv4 rec/det, MediaPipe BlazeFace)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.core.registry import harness_path
from edgekit.runners.harness import adapters, common, device, errors
from edgekit.runners.harness import spec as hspec
from edgekit.runners.harness.adapters import tflite as tflite_adapter
from edgekit.core.results import BenchmarkResult

FIX = Path(__file__).resolve().parents[1] / "fixtures"
MODELS = Path(importlib.util.find_spec("rapidocr_onnxruntime").origin).parent / "models"
REC = MODELS / "ch_PP-OCRv4_rec_infer.onnx"
DET = MODELS / "ch_PP-OCRv4_det_infer.onnx"
TFLITE = FIX / "face_detection_front.tflite"


def spec(**over):
    """A small, quick spec on PP-OCRv4 det at 1x3x64x64 (fully convolutional, so any multiple of 32 works)."""
    s = {"model_path": str(DET), "model_format": "onnx", "runtime": "onnxruntime", "threads": 1,
         "inputs": [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}],
         "warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 5, "min_seconds": 0.0, "idle_seconds": 0.0}
    s.update(over)
    return s


def run(spec_doc, tmp_path, python=None, pre=None, stdin=False):
    """Run the harness as a subprocess the way a device does; return (rc, stdout, stderr)."""
    sp = tmp_path / "spec.json"
    sp.write_text(json.dumps(spec_doc))
    argv = [python or sys.executable]
    if pre:
        argv += ["-c", pre, str(harness_path())]
    else:
        argv += [str(harness_path())]
    argv.append("-" if stdin else str(sp))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                       input=json.dumps(spec_doc) if stdin else None)
    return p.returncode, p.stdout, p.stderr


def ok(spec_doc, tmp_path, **kw):
    rc, out, err = run(spec_doc, tmp_path, **kw)
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 1, out  # exactly one JSON document on stdout
    return json.loads(out)


def error_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.startswith("EDGEKIT-ERROR ")]
    assert len(lines) == 1, stderr
    return json.loads(lines[0][len("EDGEKIT-ERROR "):])


# ---------------------------------------------------------------- result shape and measurement rules


def test_result_validates_and_stats_match_samples(tmp_path):
    r = ok(spec(min_runs=12), tmp_path)
    res = BenchmarkResult.model_validate(r)
    t = res.timing
    assert t.runs == len(t.samples_ms) == 12  # min_seconds 0: min_runs decides
    s = np.asarray(t.samples_ms)
    assert t.stats.mean_ms == pytest.approx(s.mean())
    assert t.stats.median_ms == pytest.approx(np.median(s))
    assert t.stats.p90_ms == pytest.approx(np.percentile(s, 90))
    assert t.stats.p99_ms == pytest.approx(np.percentile(s, 99))
    assert (t.stats.min_ms, t.stats.max_ms) == (s.min(), s.max())
    assert t.stats.std_ms == pytest.approx(s.std(ddof=1))
    assert t.stats.min_ms <= t.stats.median_ms <= t.stats.p90_ms <= t.stats.p99_ms <= t.stats.max_ms
    # samples are the bare calls inside the window; throughput is runs over that window
    assert s.sum() / 1000.0 <= t.duration_s
    assert t.throughput_ips == pytest.approx(t.runs / t.duration_s)
    assert t.warmup_runs >= 2 and t.load_ms > 0 and t.first_inference_ms > 0
    assert res.runtime.name == "onnxruntime" and res.runtime.threads == 1
    assert res.runtime.providers == ["CPUExecutionProvider"]
    assert res.model.size_bytes == DET.stat().st_size
    assert res.inputs == [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32", "source": "random", "seed": 0}]
    assert res.memory.peak_rss_mb >= res.memory.rss_after_load_mb > res.memory.rss_before_load_mb > 0
    assert res.device.python == ".".join(map(str, sys.version_info[:3]))
    assert res.energy.available is False and res.energy.reason


def test_min_seconds_governs_when_runs_are_few(tmp_path):
    r = ok(spec(min_runs=2, min_seconds=0.8, warmup_runs=1, warmup_seconds=0.3), tmp_path)
    t = r["timing"]
    assert t["duration_s"] >= 0.8 and t["runs"] >= 2 and len(t["samples_ms"]) == t["runs"]
    assert t["warmup_s"] >= 0.3 and t["warmup_runs"] >= 1  # both warm-up conditions hold
    # stopping rule: the run before the last had not yet reached min_seconds
    assert sum(t["samples_ms"][:-1]) / 1000.0 < 0.8


def test_max_seconds_caps_with_warning(tmp_path):
    r = ok(spec(min_runs=100000, min_seconds=0.0, max_seconds=0.5), tmp_path)
    assert r["timing"]["runs"] < 100000 and r["timing"]["duration_s"] >= 0.5
    assert any("max_seconds" in w for w in r["warnings"])


def test_spec_from_stdin_and_progress_lines(tmp_path):
    rc, out, err = run(spec(), tmp_path, stdin=True)
    assert rc == 0, err
    phases = [json.loads(ln.split(" ", 1)[1])["phase"] for ln in err.splitlines() if ln.startswith("EDGEKIT-PROGRESS ")]
    assert phases[0] == "load" and "warmup" in phases and phases[-1] == "timed"
    assert phases.index("warmup") < phases.index("timed")


def test_seeded_random_inputs_with_range(tmp_path):
    s = hspec.validate_spec(spec(seed=7, inputs=[{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32", "low": -1, "high": 1}]))
    sess = adapters.open_session("onnxruntime", str(DET), 1)
    f1, rec = hspec.make_inputs(s, sess.input_details)
    f2, _ = hspec.make_inputs(s, sess.input_details)
    assert np.array_equal(f1["x"], f2["x"]) and f1["x"].min() >= -1 and f1["x"].max() < 1 and f1["x"].min() < 0
    assert rec[0]["low"] == -1 and rec[0]["seed"] == 7
    f3, _ = hspec.make_inputs(hspec.validate_spec(spec(seed=8)), sess.input_details)
    assert not np.array_equal(f1["x"], f3["x"])


def test_int_inputs_default_range():
    details = [{"name": "ids", "shape": [2, 500], "dtype": "int64"}]
    feeds, _ = hspec.make_inputs(hspec.validate_spec(spec(inputs=[])), details)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].min() >= 0 and feeds["ids"].max() < 100


def test_dynamic_model_input_without_shape_is_a_spec_error(tmp_path):
    rc, out, err = run(spec(inputs=[]), tmp_path)
    assert rc == 2 and out == ""
    e = error_line(err)
    assert e["kind"] == "spec" and "'x'" in e["message"] and "dynamic" in e["message"]


# ---------------------------------------------------------------- .npz inputs


def test_npz_inputs_are_used(tmp_path):
    arr = np.random.RandomState(1).rand(1, 3, 32, 96).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=arr)
    r = ok(spec(inputs=[], inputs_file=str(tmp_path / "in.npz")), tmp_path)
    # the model is dynamic: the shape can only have come from the file
    assert r["inputs"] == [{"name": "x", "shape": [1, 3, 32, 96], "dtype": "float32", "source": "file",
                            "file": str(tmp_path / "in.npz")}]


def test_npz_wrong_name_names_the_input(tmp_path):
    np.savez(tmp_path / "in.npz", image=np.zeros((1, 3, 64, 64), np.float32))
    rc, _out, err = run(spec(inputs_file=str(tmp_path / "in.npz")), tmp_path)
    assert rc == 2
    e = error_line(err)
    assert "missing x" in e["message"] and "unexpected image" in e["message"]


def test_npz_wrong_shape_names_the_input(tmp_path):
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 4, 64, 64), np.float32))
    rc, _out, err = run(spec(inputs_file=str(tmp_path / "in.npz")), tmp_path)
    assert rc == 2
    e = error_line(err)
    assert "'x'" in e["message"] and "[1, 4, 64, 64]" in e["message"]


# ---------------------------------------------------------------- failures and exit codes


def test_bad_spec_exit_2(tmp_path):
    rc, _o, err = run(spec(warmup=3), tmp_path)
    assert rc == 2 and "warmup" in error_line(err)["message"]
    bad = spec()
    del bad["runtime"]
    rc, _o, err = run(bad, tmp_path)
    assert rc == 2 and "'runtime' is required" in error_line(err)["message"]
    rc, _o, err = run(spec(runtime="onnx"), tmp_path)
    assert rc == 2 and "onnxruntime" in error_line(err)["message"]


def test_missing_runtime_tensorrt_exit_3(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    rc, out, err = run(spec(runtime="tensorrt", model_format="tensorrt"), tmp_path)
    assert rc == 3 and out == ""
    e = error_line(err)
    assert e["kind"] == "runtime_missing" and "JetPack" in e["hint"]


def test_missing_onnxruntime_exit_3(tmp_path):
    # A Python where onnxruntime cannot be imported: sys.modules[name] = None makes `import` raise ImportError,
    # exactly as on a device without the wheel.
    pre = ("import sys, runpy; sys.modules['onnxruntime'] = None; sys.argv = sys.argv[1:]; "
           "runpy.run_path(sys.argv[0], run_name='__main__')")
    rc, out, err = run(spec(), tmp_path, pre=pre)
    assert rc == 3 and out == ""
    e = error_line(err)
    assert e["hint"].startswith("pip install onnxruntime") and "onnxruntime" in e["message"]


def test_missing_model_and_corrupt_model_exit_4(tmp_path):
    rc, _o, err = run(spec(model_path=str(tmp_path / "nope.onnx")), tmp_path)
    assert rc == 4 and "nope.onnx" in error_line(err)["message"]
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(DET.read_bytes()[:5000])
    rc, _o, err = run(spec(model_path=str(bad)), tmp_path)
    e = error_line(err)
    assert rc == 4 and e["kind"] == "model_load" and "truncated.onnx" in e["message"]


def test_unavailable_execution_provider_is_an_error_not_a_fallback(tmp_path):
    rc, _o, err = run(spec(runtime_options={"providers": ["CUDAExecutionProvider"]}), tmp_path)
    assert rc == 2 and "CUDAExecutionProvider" in error_line(err)["message"]


# ---------------------------------------------------------------- probe


def test_probe_keys(tmp_path):
    p = subprocess.run([sys.executable, str(harness_path()), "--probe", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for k in ("arch", "os", "kernel", "python", "hostname", "cpu_model", "cores", "memory_mb", "device_model",
              "runtimes", "energy", "thermal_zones", "governor", "free_disk_bytes", "temps_c"):
        assert k in d, k
    rt = d["runtimes"]
    assert rt["onnxruntime"]["available"] and rt["onnxruntime"]["version"] == __import__("onnxruntime").__version__
    assert rt["numpy"]["version"] == np.__version__
    for k in ("openvino", "ai_edge_litert", "tflite_runtime", "tensorrt", "trtexec"):
        assert k in rt
    assert set(rt["cuda_bindings"]) == {"cuda-python", "pycuda"}
    assert set(d["energy"]) == {"tegrastats", "ina3221", "vcgencmd_pmic", "android_battery", "rapl"}
    for v in d["energy"].values():
        assert v["readable"] or v["reason"]
    if d["arch"] == "x86_64":  # the CPU's own flags, as /proc/cpuinfo spells them
        cpuinfo = Path("/proc/cpuinfo").read_text()
        assert "sse2" in d["cpu_flags"] and ("avx2" in d["cpu_flags"]) == (" avx2" in cpuinfo)
    assert d["free_disk_bytes"] > 0 and d["cores"] == os.cpu_count()


def test_doctor_names_isa_features_the_profile_does_not_declare():
    from edgekit.cli.doctor import feature_mismatches
    from edgekit.core.profiles import load_profile

    prof = load_profile("x86-cpu")  # AVX2/FMA/F16C, no AVX-512, no VNNI (Zen 3 class)
    zen3 = "fpu sse4_2 avx avx2 fma f16c sha_ni vaes".split()
    assert feature_mismatches(zen3, prof) == []
    xeon = zen3 + ["avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni"]
    (msg,) = feature_mismatches(xeon, prof)
    assert "vnni" in msg and "avx512_bf16" in msg and "x86-cpu" in msg
    (msg,) = feature_mismatches(["sse4_2", "avx"], prof)
    assert "avx2" in msg and "f16c" in msg and "lacks" in msg
    assert feature_mismatches(None, prof) == []


# ---------------------------------------------------------------- adapters in-process


def test_onnxruntime_adapter_matches_plain_session():
    import onnxruntime as ort

    x = np.random.RandomState(0).rand(1, 3, 48, 320).astype(np.float32)
    sess = adapters.open_session("onnxruntime", str(REC), 2)
    assert sess.input_names == ["x"] and sess.input_details[0]["dtype"] == "float32"
    out = sess.run({"x": x})
    ref = ort.InferenceSession(str(REC), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert len(out) == 1 and out[0].shape == (1, 40, 6625)
    np.testing.assert_allclose(out[0], ref[0], atol=1e-5)


def test_openvino_adapter_on_rec_ir(rec_ir):
    x = np.random.RandomState(0).rand(1, 3, 48, 320).astype(np.float32)
    sess = adapters.open_session("openvino", str(rec_ir), 2, {"input_shapes": {"x": [1, 3, 48, 320]}})
    assert sess.input_names == ["x"] and sess.input_details[0]["shape"] == [1, 3, 48, 320]
    assert sess.options["compiled"]["INFERENCE_NUM_THREADS"] == "2"
    assert sess.options["compiled"]["NUM_STREAMS"] == "1"
    out = sess.run({"x": x})
    ref = adapters.open_session("onnxruntime", str(REC), 2).run({"x": x})
    assert out[0].shape == ref[0].shape
    # same characters decoded on every time step, outputs close (OpenVINO CPU may run some ops in bf16/fp16)
    assert (out[0].argmax(-1) == ref[0].argmax(-1)).mean() >= 0.95
    assert np.abs(out[0] - ref[0]).max() < 0.05
    assert common.model_size_bytes(str(rec_ir), "openvino") == rec_ir.stat().st_size + rec_ir.with_suffix(".bin").stat().st_size


def test_openvino_through_harness(rec_ir, tmp_path):
    r = ok(spec(model_path=str(rec_ir), model_format="openvino", runtime="openvino", min_runs=3,
                inputs=[{"name": "x", "shape": [1, 3, 48, 320], "dtype": "float32"}]), tmp_path)
    assert r["runtime"]["name"] == "openvino" and r["timing"]["runs"] == 3
    assert r["model"]["size_bytes"] > rec_ir.stat().st_size  # .xml + .bin


def test_tflite_adapter_on_blazeface():
    sess = adapters.open_session("tflite", str(TFLITE), 1)
    assert sess.options["interpreter_module"] in ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
    assert sess.input_details == [{"name": "input", "shape": [1, 128, 128, 3], "dtype": "float32", "quantization": None}]
    assert sess.output_names == ["regressors", "classificators"]
    rng = np.random.RandomState(0)
    a = rng.rand(1, 128, 128, 3).astype(np.float32)
    b = rng.rand(1, 128, 128, 3).astype(np.float32)
    oa, ob, oa2 = sess.run({"input": a}), sess.run({"input": b}), sess.run({"input": a})
    assert [o.shape for o in oa] == [(1, 896, 16), (1, 896, 1)]
    assert np.array_equal(oa[0], oa2[0]) and not np.allclose(oa[0], ob[0])  # outputs are copies, not live views
    # a feed of another shape resizes the interpreter (BlazeFace is fully convolutional: 256x256 -> 4x anchors)
    big = sess.run({"input": rng.rand(1, 256, 256, 3).astype(np.float32)})
    assert [o.shape for o in big] == [(1, 3584, 16), (1, 3584, 1)]
    assert sess.options["resized_inputs"] == {"input": [1, 256, 256, 3]}


def test_tflite_through_harness(tmp_path):
    r = ok(spec(model_path=str(TFLITE), model_format="tflite", runtime="tflite", inputs=[], min_runs=5), tmp_path)
    BenchmarkResult.model_validate(r)
    assert r["runtime"]["name"] == "tflite" and r["inputs"][0]["shape"] == [1, 128, 128, 3]
    assert r["runtime"]["options"]["interpreter_module"] == "ai_edge_litert"


def test_tflite_quantization_math():
    # scale/zero point as found in an onnx2tf full-integer PP-OCR rec model's input
    q = (0.005751634016633034, 32)
    x = np.array([0.0, 0.5, 1.0, -2.0, 10.0], np.float32)
    got = tflite_adapter.quantize_array(x, q, "int8")
    assert got.dtype == np.int8
    # 0.5/s = 86.93 -> 87 + 32; 1.0/s = 173.9 + 32 = 206 and 10.0 clip to 127; -2.0/s + 32 = -316 clips to -128
    assert got.tolist() == [32, 32 + 87, 127, -128, 127]
    back = tflite_adapter.dequantize_array(got[:2], q)
    assert back.dtype == np.float32 and np.abs(back - x[:2]).max() <= q[0] / 2 + 1e-7


def test_tensorrt_missing_in_process():
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(errors.RuntimeMissing) as ei:
        adapters.open_session("tensorrt", str(DET), 1)
    assert "tensorrt" in ei.value.message and "JetPack" in ei.value.hint and ei.value.exit_code == 3


def test_thermal_and_throttle_helpers():
    assert device.throttled_during("throttled=0x0", "throttled=0x0") is False
    assert device.throttled_during("throttled=0x0", "throttled=0x50000") is True  # sticky bits newly set
    assert device.throttled_during("throttled=0x50000", "throttled=0x50000") is False  # set before the run
    assert device.throttled_during("throttled=0x0", "throttled=0x4") is True  # currently throttled
    assert device.throttled_during(None, None) is None
