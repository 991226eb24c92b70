"""TensorRT step through a replay runner: no GPU can exist here, so trtexec/nvidia-smi answers are REAL captures.

Everything else the step runs on the "device" (cat, test, mkdir, sh -c mv) runs for real in a temp directory.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit.core.artifact import load_artifact
from edgekit.core.errors import StepError
from edgekit.core.profiles import load_profile
from edgekit.core.steps import StepContext
from edgekit.converters.tensorrt import TensorRtConfig, TensorRtStep

FIX = Path(__file__).resolve().parents[1] / "fixtures"
BUILD_10 = "trtexec_trt10.16.1_onnx_build_and_run_full.txt"
LOAD_82 = "trtexec_trt8.2.3_loadEngine_full.txt"


def _banner(fixture: str) -> str:
    return (FIX / fixture).read_text().splitlines()[0]


def _gpu(fixture: str) -> str:
    for line in (FIX / fixture).read_text().splitlines():
        if "] Selected Device: " in line:
            return line.split("Selected Device: ", 1)[1].strip()
    raise AssertionError("no device line")


class ReplayRunner:
    """A device whose trtexec and nvidia-smi print real captured output; other commands run in a local dir."""

    name = "replay"

    def __init__(self, root: Path, fixture: str, build_log: str = None, build_exit: int = 0):
        self.root = root
        self.workdir = str(root / "work")
        Path(self.workdir).mkdir(parents=True)
        self.fixture = fixture
        self.build_log = build_log if build_log is not None else (FIX / fixture).read_text()
        self.build_exit = build_exit
        self.calls = []
        self.builds = []

    def exec(self, argv, timeout):
        self.calls.append(list(argv))
        if argv[0].endswith("trtexec"):
            if argv[1] == "--help":
                return 0, _banner(self.fixture) + "\n=== Model Options ===\n", ""
            self.builds.append(list(argv))
            save = [a for a in argv if a.startswith("--saveEngine=")][0].split("=", 1)[1]
            if self.build_exit == 0:
                Path(save).write_bytes(b"engine-bytes-" + " ".join(argv).encode())
            return self.build_exit, self.build_log, ""
        if argv[0] == "nvidia-smi":
            return 0, _gpu(self.fixture) + "\n", ""
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, proc.stdout, proc.stderr

    def push(self, artifact):
        dst = Path(self.workdir) / "models" / f"{artifact.sha256[:12]}{artifact.path.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact.path, dst)
        return str(dst)

    def pull(self, remote, local):
        shutil.copyfile(remote, local)


def _onnx(tmp_path: Path, qdq: bool = False) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv0")]
    inits = [w]
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q0"),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq0"),
            helper.make_node("Conv", ["xd", "w"], ["y"], name="conv0"),
        ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    p = tmp_path / ("qdq.onnx" if qdq else "m.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    return p


def _profile(name="jetson-orin-nano"):
    return load_profile(name)


def _ctx(tmp_path, runner, profile=None, sub="out"):
    return StepContext(work_dir=tmp_path / sub, profile=profile or _profile(), runner=runner)


def test_build_command_parse_and_cache(tmp_path):
    art = load_artifact(_onnx(tmp_path))
    runner = ReplayRunner(tmp_path / "dev", BUILD_10)
    ctx = _ctx(tmp_path, runner)
    cfg = TensorRtConfig(precision="fp16", shapes={"x": [1, 3, 16, 16]})
    eng = TensorRtStep().run(art, cfg, ctx)

    assert len(runner.builds) == 1
    argv = runner.builds[0]
    assert argv[0] == "trtexec"
    assert any(a.startswith("--onnx=") and a.endswith(".onnx") for a in argv)
    assert "--fp16" in argv and "--int8" not in argv
    assert "--memPoolSize=workspace:1024" in argv  # TensorRT >= 8.4 syntax
    assert "--shapes=x:1x3x16x16" in argv
    assert any(a.startswith("--timingCacheFile=") and "10.16.1" in a and "H100" in a for a in argv)
    assert eng.format == "tensorrt" and eng.precision == "fp16"
    assert eng.metadata["tensorrt"]["trt_version"] == "10.16.1"
    assert eng.metadata["tensorrt"]["gpu"] == "NVIDIA H100 PCIe"
    assert eng.path.read_bytes().startswith(b"engine-bytes-")
    # parsed from the real capture (values read from the file by hand)
    assert ctx.report["trtexec"]["build_time_s"] == pytest.approx(8.09138)
    assert ctx.report["trtexec"]["throughput_qps"] == pytest.approx(15374.3)
    assert ctx.report["trtexec"]["gpu_compute"]["percentiles_ms"]["99"] == pytest.approx(0.041748)
    side = json.loads(Path(eng.metadata["device_engine_path"] + ".json").read_text())
    assert side["trt_version"] == "10.16.1" and side["onnx_sha256"] == art.sha256
    assert (tmp_path / "out" / "trtexec_build.log").exists()

    # same ONNX + device + flags: reused, no second build
    ctx2 = _ctx(tmp_path, runner, sub="out2")
    eng2 = TensorRtStep().run(art, cfg, ctx2)
    assert len(runner.builds) == 1
    assert eng2.sha256 == eng.sha256 and eng2.metadata["built_on_device"] is False
    assert any("reused engine" in n for n in ctx2.notes)

    # different flags -> a different key -> a new build
    TensorRtStep().run(art, TensorRtConfig(precision="fp32", shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, runner, sub="out3"))
    assert len(runner.builds) == 2 and "--fp16" not in runner.builds[1]


def test_old_trt_uses_workspace_flag(tmp_path):
    art = load_artifact(_onnx(tmp_path))
    runner = ReplayRunner(tmp_path / "dev", LOAD_82)
    eng = TensorRtStep().run(art, TensorRtConfig(precision="fp16", shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, runner))
    assert "--workspace=1024" in runner.builds[0]
    assert not any(a.startswith("--memPoolSize") for a in runner.builds[0])
    assert eng.metadata["tensorrt"] == {**eng.metadata["tensorrt"], "trt_version": "8.2.3", "gpu": "NVIDIA GeForce GTX 1070"}


def test_cached_engine_from_other_gpu_is_refused(tmp_path):
    art = load_artifact(_onnx(tmp_path))
    runner = ReplayRunner(tmp_path / "dev", BUILD_10)
    cfg = TensorRtConfig(precision="fp16", shapes={"x": [1, 3, 16, 16]})
    eng = TensorRtStep().run(art, cfg, _ctx(tmp_path, runner))
    side_path = Path(eng.metadata["device_engine_path"] + ".json")
    side = json.loads(side_path.read_text())
    side["gpu"] = "NVIDIA GeForce GTX 1070"  # e.g. a cache directory shared between two machines
    side_path.write_text(json.dumps(side))
    with pytest.raises(StepError) as ei:
        TensorRtStep().run(art, cfg, _ctx(tmp_path, runner, sub="again"))
    msg = str(ei.value)
    assert "refusing cached engine" in msg and "GTX 1070" in msg and "H100" in msg
    assert len(runner.builds) == 1


def test_given_engine_from_older_trt_is_refused(tmp_path):
    """An engine built on TensorRT 8.2.3 / GTX 1070 (recorded in its sidecar) handed to a 10.16.1 H100 device."""
    art = load_artifact(_onnx(tmp_path))
    old = ReplayRunner(tmp_path / "old", LOAD_82)
    eng = TensorRtStep().run(art, TensorRtConfig(precision="fp16", shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, old))
    assert (eng.path.parent / "model.engine.json").exists()  # the step records who built the engine beside it
    engine_file = load_artifact(eng.path, format="tensorrt")  # a plain file load: provenance only in that sidecar
    new = ReplayRunner(tmp_path / "new", BUILD_10)
    with pytest.raises(StepError) as ei:
        TensorRtStep().run(engine_file, TensorRtConfig(), _ctx(tmp_path, new, sub="n"))
    assert "TensorRT 8.2.3 (this device has 10.16.1)" in str(ei.value)


def test_jetson_nano_int8_fails_clearly_or_falls_back_visibly(tmp_path):
    art = load_artifact(_onnx(tmp_path, qdq=True))
    assert art.precision == "int8"
    nano = _profile("jetson-nano")
    runner = ReplayRunner(tmp_path / "dev", BUILD_10)
    with pytest.raises(StepError) as ei:
        TensorRtStep().run(art, TensorRtConfig(precision="int8", shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, runner, nano))
    assert "jetson-nano (128-core NVIDIA Maxwell GPU, sm_53) has no INT8 in TensorRT; use --precision fp16" in str(ei.value)
    assert runner.calls == []  # refused before touching the device
    ctx = _ctx(tmp_path, runner, nano, sub="fb")
    eng = TensorRtStep().run(art, TensorRtConfig(precision="int8", int8_unsupported="fp16", shapes={"x": [1, 3, 16, 16]}), ctx)
    assert eng.precision == "fp16" and "--int8" not in runner.builds[0]
    assert ctx.report["precision_fallback"]["built"] == "fp16"


def test_int8_needs_qdq_onnx_and_qdq_builds_with_int8(tmp_path):
    runner = ReplayRunner(tmp_path / "dev", BUILD_10)
    with pytest.raises(StepError, match="QDQ"):
        TensorRtStep().run(load_artifact(_onnx(tmp_path)), TensorRtConfig(precision="int8", shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, runner))
    TensorRtStep().run(load_artifact(_onnx(tmp_path, qdq=True)), TensorRtConfig(precision="int8", shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, runner, sub="q"))
    assert "--int8" in runner.builds[0]


def test_dynamic_input_without_shape_is_a_clear_error(tmp_path):
    runner = ReplayRunner(tmp_path / "dev", BUILD_10)
    with pytest.raises(StepError, match=r"--shape x=Nx3x16x16"):
        TensorRtStep().run(load_artifact(_onnx(tmp_path)), TensorRtConfig(), _ctx(tmp_path, runner))
    import numpy as np

    ctx = _ctx(tmp_path, runner, sub="d")
    ctx.eval_data = lambda n: [{"x": np.zeros((2, 3, 16, 16), np.float32)}] * n
    TensorRtStep().run(load_artifact(_onnx(tmp_path)), TensorRtConfig(), ctx)
    assert "--shapes=x:2x3x16x16" in runner.builds[-1]
    assert any("build shapes taken from the data" in n for n in ctx.notes)


def test_build_failure_names_op_and_keeps_log(tmp_path):
    # The head is the real 10.16.1 capture up to parsing; the error lines follow the ONNX parser's documented format.
    head = "\n".join((FIX / BUILD_10).read_text().splitlines()[:150])
    failure = head + (
        "\n[07/07/2026-02:10:45] [E] [TRT] ModelImporter.cpp:773: While parsing node number 0 [Conv -> \"y\"]:"
        "\n[07/07/2026-02:10:45] [E] [TRT] ModelImporter.cpp:780: ERROR: builtin_op_importers.cpp:1 In function importConv: [8] Assertion failed"
        "\n[07/07/2026-02:10:45] [E] Failed to parse onnx file"
        "\n&&&& FAILED TensorRT.trtexec [TensorRT v101601] [b11] # trtexec --onnx=m.onnx\n"
    )
    runner = ReplayRunner(tmp_path / "dev", BUILD_10, build_log=failure, build_exit=1)
    with pytest.raises(StepError) as ei:
        TensorRtStep().run(load_artifact(_onnx(tmp_path)), TensorRtConfig(shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, runner))
    err = ei.value
    assert err.step == "tensorrt" and err.op == "Conv" and err.node == "y"
    assert "Failed to parse onnx file" in err.tool_message
    assert (tmp_path / "out" / "trtexec_build.log").read_text() == failure


def test_no_runner_and_missing_trtexec(tmp_path):
    art = load_artifact(_onnx(tmp_path))
    with pytest.raises(StepError, match="built on the target device"):
        TensorRtStep().run(art, TensorRtConfig(shapes={"x": [1, 3, 16, 16]}), StepContext(work_dir=tmp_path / "o", profile=_profile()))

    class NoTrt(ReplayRunner):
        def exec(self, argv, timeout):
            if argv[0].endswith("trtexec"):
                return 127, "", f"sh: {argv[0]}: not found"
            return super().exec(argv, timeout)

    with pytest.raises(StepError, match="trtexec was not found.*/usr/src/tensorrt/bin/trtexec"):
        TensorRtStep().run(art, TensorRtConfig(shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, NoTrt(tmp_path / "d", BUILD_10)))


# ---- issue 15: device identity in the host cache key, build-only flag, trtexec's own GPU compute time

LOAD_10 = "trtexec_trt10.16.1_loadEngine_cudagraph_verbose_full.txt"
BUILD_ONLY_84 = "trtexec_trt8.4.1_loadEngine_full.txt"


class JetsonReplay(ReplayRunner):
    """ReplayRunner that also answers /etc/nv_tegra_release (JetPack) and trtexec --loadEngine with real captures."""

    def __init__(self, root, fixture, l4t_line=None, gpu=None, load_fixture=LOAD_10):
        super().__init__(root, fixture)
        self.l4t_line = l4t_line
        self.gpu_override = gpu
        self.load_fixture = load_fixture

    def exec(self, argv, timeout):
        if argv[:2] == ["cat", "/etc/nv_tegra_release"]:
            self.calls.append(list(argv))
            return (0, self.l4t_line + "\n", "") if self.l4t_line else (1, "", "cat: /etc/nv_tegra_release: No such file or directory")
        if argv[0] == "nvidia-smi" and self.gpu_override:
            return 0, self.gpu_override + "\n", ""
        if argv[0].endswith("trtexec") and any(a.startswith("--loadEngine=") for a in argv):
            self.calls.append(list(argv))
            return 0, (FIX / self.load_fixture).read_text(), ""
        return super().exec(argv, timeout)


def test_build_skips_inference(tmp_path):
    runner = ReplayRunner(tmp_path / "dev", BUILD_10)
    TensorRtStep().run(load_artifact(_onnx(tmp_path)), TensorRtConfig(precision="fp16", shapes={"x": [1, 3, 16, 16]}), _ctx(tmp_path, runner))
    assert "--skipInference" in runner.builds[0]


def test_build_only_flag_follows_the_device_trtexec(tmp_path):
    from edgekit.converters.tensorrt import DeviceIdentity

    # TensorRT 8.4 logs "Build only" (its flag is --buildOnly); 8.2 and 10.x log "Skip inference"
    assert DeviceIdentity("trtexec", "8.4.1", "g", "s", "").skip_inference_flag() == "--buildOnly"
    assert DeviceIdentity("trtexec", "8.2.3", "g", "s", "").skip_inference_flag() == "--skipInference"
    assert DeviceIdentity("trtexec", "8.4.1", "g", "s", "", help_text="  --skipInference  Exit after the engine").skip_inference_flag() == "--skipInference"
    for fx, word in [(BUILD_ONLY_84, "Build only"), (LOAD_82, "Skip inference"), (BUILD_10, "Skip inference")]:
        assert f"] {word}: " in (FIX / fx).read_text()


def test_host_cache_key_includes_device_identity(tmp_path):
    """The same ONNX and config on two boards (other JetPack, other GPU) never share a host cache entry."""
    from edgekit.core.pipeline import DataSources, Pipeline
    from edgekit.core.plan import Plan
    from edgekit.core.steps import PlannedStep
    from edgekit.core.registry import get_step

    art = load_artifact(_onnx(tmp_path))
    plan = Plan(model="m", source_format="onnx", profile="jetson-orin-nano", runtime="tensorrt", precision="fp16", target="t",
                steps=[PlannedStep(step="tensorrt", config={"precision": "fp16", "shapes": {"x": [1, 3, 16, 16]}}, reason="test")])
    step_cls = get_step("tensorrt")
    cfg = step_cls.Config(precision="fp16", shapes={"x": [1, 3, 16, 16]}).model_dump(mode="json")

    def key(runner):
        p = Pipeline(plan, _profile(), DataSources(inputs=[]), cache_dir=tmp_path / "cache", runner=runner)
        return p._key(art, step_cls, cfg)

    jp6 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
    jp5 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023"
    a = key(JetsonReplay(tmp_path / "a", BUILD_10, l4t_line=jp6))
    assert a == key(JetsonReplay(tmp_path / "a2", BUILD_10, l4t_line=jp6))  # same board identity: same key
    assert a != key(JetsonReplay(tmp_path / "b", BUILD_10, l4t_line=jp5))  # other JetPack
    assert a != key(JetsonReplay(tmp_path / "c", BUILD_10, l4t_line=jp6, gpu="Orin (nvgpu)"))  # other GPU
    assert a != key(JetsonReplay(tmp_path / "d", LOAD_82, l4t_line=jp6))  # other TensorRT


def test_engine_metadata_records_jetpack(tmp_path):
    jp6 = "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x"
    art = load_artifact(_onnx(tmp_path))
    cfg = TensorRtConfig(precision="fp16", shapes={"x": [1, 3, 16, 16]})
    runner = JetsonReplay(tmp_path / "dev", BUILD_10, l4t_line=jp6)
    eng = TensorRtStep().run(art, cfg, _ctx(tmp_path, runner))
    assert eng.metadata["tensorrt"]["l4t"] == "R36.4.3"


def test_native_timing_reports_trtexec_gpu_compute(tmp_path):
    from edgekit.converters.tensorrt import native_timing
    from edgekit.converters.trtexec_parse import parse_trtexec

    art = load_artifact(_onnx(tmp_path))
    runner = JetsonReplay(tmp_path / "dev", BUILD_10)
    out = native_timing(runner, art, "/dev/engine.plan", {"x": [1, 3, 16, 16]})
    want = parse_trtexec((FIX / LOAD_10).read_text())
    assert out["gpu_compute_median_ms"] == want.gpu_compute.median_ms
    assert out["latency_median_ms"] == want.latency.median_ms
    argv = runner.calls[-1]
    assert "--loadEngine=/dev/engine.plan" in argv and "--shapes=x:1x3x16x16" in argv


def test_native_timing_failure_is_reported_not_raised(tmp_path):
    from edgekit.converters.tensorrt import native_timing

    class NoTrt(ReplayRunner):
        def exec(self, argv, timeout):
            if argv[0].endswith("trtexec"):
                raise FileNotFoundError(argv[0])
            return super().exec(argv, timeout)

    out = native_timing(NoTrt(tmp_path / "dev", BUILD_10), load_artifact(_onnx(tmp_path)), "/e", {})
    assert "not found" in out["error"]


def test_report_shows_trtexec_gpu_compute_beside_harness_latency(tmp_path):
    """A real harness result (ONNX Runtime here: no GPU) with trtexec's timing attached renders both."""
    from edgekit.converters.tensorrt import native_timing
    from edgekit.core.shapes import resolve_inputs
    from edgekit.report import bench_rows
    from edgekit.workflows.deploy import benchmark, make_runner

    art = load_artifact(_onnx(tmp_path))
    prof = load_profile("x86-cpu")
    inputs = resolve_inputs(art.inputs, overrides={"x": [1, 3, 16, 16]})
    with make_runner(prof) as runner:
        res = benchmark(art, prof, runner, inputs, bench={"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 3, "min_seconds": 0})
    assert res.native == {}
    native = native_timing(JetsonReplay(tmp_path / "dev", BUILD_10), art, "/e", {"x": [1, 3, 16, 16]})
    rows = dict(bench_rows(res.model_copy(update={"native": {"trtexec": native}})))
    assert "latency median" in rows
    assert f"{native['gpu_compute_median_ms']:.3f} ms median" in rows["trtexec GPU compute"]
