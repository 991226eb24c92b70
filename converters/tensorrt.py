"""TensorRT step: build the engine ON the device with trtexec (engines are tied to the GPU and TensorRT version).

Runner interface used (beyond `push(artifact) -> remote path`):
  exec(argv: list[str], timeout: float) -> (exit_code, stdout, stderr)   run a command on the device (no shell);
                                                                         raises TimeoutError on timeout
  pull(remote_path: str, local_path: Path) -> None                       copy a device file back to the host
  workdir: str (optional)                                                device directory edgekit may write in
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

from pydantic import Field

from edgekit.core.artifact import Artifact, LineageEntry
from edgekit.core.errors import StepError
from edgekit.core.fsutil import atomic_write_text, sha256_file
from edgekit.core.steps import Step, StepConfig, StepContext

TRTEXEC_CANDIDATES = ("trtexec", "/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")


class TensorRtConfig(StepConfig):
    """fp32/fp16, or int8 from a QDQ ONNX (trtexec has no calibrator); shapes fix dynamic dims."""

    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    shapes: Dict[str, List[int]] = Field(default_factory=dict, description="input name -> concrete shape for dynamic inputs")
    workspace_mib: int = Field(default=1024, gt=0)
    timeout_s: float = Field(default=3600.0, gt=0, description="trtexec build timeout (Jetson Nano builds take minutes)")
    trtexec: Optional[str] = Field(default=None, description="path of trtexec on the device; default: search PATH and JetPack's /usr/src/tensorrt/bin")
    int8_unsupported: Literal["error", "fp16"] = Field(default="error", description="what to do when the device has no INT8: fail, or build FP16 and say so")
    allow_unverified_engine: bool = False
    extra_flags: List[str] = Field(default_factory=list, description="more trtexec flags (part of the cache key)")


class TensorRtStep(Step):
    name = "tensorrt"
    summary = "ONNX -> TensorRT engine, built on the device with trtexec and cached there"
    accepts = ("onnx", "tensorrt")
    produces = "tensorrt"
    Config = TensorRtConfig
    requires = ()
    checkable = False

    @classmethod
    def availability(cls) -> Tuple[bool, str]:
        return True, "builds on the device through the runner (needs trtexec there)"

    @classmethod
    def device_identity(cls, runner: Any, config: StepConfig) -> Dict[str, str]:
        """Part of the host cache key: an engine built on one board (TensorRT, GPU, JetPack) is never reused for another."""
        cfg = config if isinstance(config, TensorRtConfig) else TensorRtConfig.model_validate(config.model_dump())
        return DeviceIdentity.probe(_check_runner(runner), cfg).key()

    def run(self, artifact: Artifact, config: StepConfig, ctx: StepContext) -> Artifact:
        cfg = config if isinstance(config, TensorRtConfig) else TensorRtConfig.model_validate(config.model_dump())
        runner = _check_runner(ctx.runner)
        precision = _choose_precision(cfg, artifact, ctx)
        device = DeviceIdentity.probe(runner, cfg)
        ctx.report["tensorrt_device"] = device.as_dict()
        if artifact.format == "tensorrt":
            return _reuse_given_engine(artifact, device, cfg, runner, ctx)
        return _build(artifact, _with_data_shapes(cfg, artifact, ctx), precision, device, runner, ctx)


def _with_data_shapes(cfg: TensorRtConfig, artifact: Artifact, ctx: StepContext) -> TensorRtConfig:
    """Fill build shapes of dynamic inputs from a data sample (eval, else calibration) when none were given."""
    dynamic = [t.name for t in artifact.inputs if t.name not in cfg.shapes and any(not isinstance(d, int) or d <= 0 for d in t.shape)]
    source = ctx.eval_data or ctx.calib_data
    if not dynamic or source is None:
        return cfg
    sample = source(1)
    if not sample:
        return cfg
    shapes = dict(cfg.shapes)
    for name in dynamic:
        if name in sample[0]:
            shapes[name] = [int(d) for d in sample[0][name].shape]
    ctx.note("tensorrt: build shapes taken from the data: " + ", ".join(f"{n}={'x'.join(map(str, shapes[n]))}" for n in dynamic if n in shapes))
    return cfg.model_copy(update={"shapes": shapes})


def _check_runner(runner: Any):
    if runner is None:
        raise StepError("tensorrt", "a TensorRT engine must be built on the target device, and no device runner was given", hint="pass --host HOST (SSH) for the Jetson, or run edgekit on the device itself")
    missing = [m for m in ("exec", "push", "pull") if not callable(getattr(runner, m, None))]
    if missing:
        raise StepError("tensorrt", f"runner '{getattr(runner, 'name', type(runner).__name__)}' cannot build engines: it lacks {', '.join(missing)}()", hint="use the local or SSH runner")
    return runner


def _choose_precision(cfg: TensorRtConfig, artifact: Artifact, ctx: StepContext) -> str:
    """The precision to build; refuses INT8 on GPUs without it (e.g. Jetson Nano) unless told to fall back to FP16."""
    precision = cfg.precision
    profile = ctx.profile
    if profile is not None and precision != "fp32" and not profile.supports_precision(precision, "tensorrt"):
        gpu = _gpu_label(profile)
        if precision == "int8" and cfg.int8_unsupported == "fp16" and profile.supports_precision("fp16", "tensorrt"):
            msg = f"tensorrt: {gpu} has no INT8 in TensorRT; building FP16 instead (int8_unsupported=fp16)"
            ctx.note(msg)
            ctx.report["precision_fallback"] = {"requested": "int8", "built": "fp16", "reason": f"{gpu} has no INT8 in TensorRT"}
            return "fp16"
        raise StepError("tensorrt", f"{gpu} has no {precision.upper()} in TensorRT; use --precision fp16" if precision == "int8" else f"{gpu} has no {precision.upper()} in TensorRT; use --precision fp32")
    if precision == "int8" and artifact.format == "onnx" and artifact.precision != "int8":
        raise StepError(
            "tensorrt",
            f"INT8 needs a QDQ (QuantizeLinear/DequantizeLinear) ONNX; {Path(str(artifact.path)).name} has none, and trtexec has no calibrator",
            hint="add a QDQ quantization step before tensorrt (quantize-ort with QDQ format), or build --precision fp16",
        )
    return precision


def _gpu_label(profile) -> str:
    accs = [a for a in profile.accelerators if "tensorrt" in a.runtimes] or list(profile.accelerators)
    if not accs:
        return f"{profile.name} (no TensorRT GPU in its profile)"
    a = accs[0]
    cc = f", sm_{a.compute_capability.replace('.', '')}" if a.compute_capability else ""
    return f"{profile.name} ({a.name}{cc})"


class DeviceIdentity:
    """TensorRT version and GPU of the device, as used in the engine cache key and the refusal check."""

    def __init__(self, trtexec: str, trt_version: str, gpu: str, gpu_source: str, workdir: str, l4t: str = "", help_text: str = ""):
        self.trtexec = trtexec
        self.trt_version = trt_version
        self.gpu = gpu
        self.gpu_source = gpu_source
        self.workdir = workdir
        self.l4t = l4t  # Jetson Linux (JetPack) release from /etc/nv_tegra_release; "" off Jetson
        self.help_text = help_text

    def as_dict(self) -> Dict[str, str]:
        return {"trtexec": self.trtexec, "trt_version": self.trt_version, "gpu": self.gpu, "gpu_source": self.gpu_source, "l4t": self.l4t}

    def key(self) -> Dict[str, str]:
        """What makes an engine valid on a device: TensorRT version, GPU, Jetson Linux/JetPack release."""
        return {"trt_version": self.trt_version, "gpu": self.gpu, "l4t": self.l4t}

    def skip_inference_flag(self) -> Optional[str]:
        """trtexec's build-only flag: --skipInference (TensorRT 8.2, 8.6+), --buildOnly (8.4/8.5; their logs say 'Build only')."""
        if "--skipInference" in self.help_text:
            return "--skipInference"
        if "--buildOnly" in self.help_text:
            return "--buildOnly"
        try:
            mm = tuple(int(x) for x in self.trt_version.split(".")[:2])
        except ValueError:
            return None
        return "--buildOnly" if (8, 4) <= mm < (8, 6) else "--skipInference"

    @classmethod
    def probe(cls, runner, cfg: TensorRtConfig) -> "DeviceIdentity":
        from edgekit.converters.trtexec_parse import version_from_tag

        tried: List[str] = []
        trtexec = version = None
        help_text = ""
        for cand in ([cfg.trtexec] if cfg.trtexec else list(TRTEXEC_CANDIDATES)):
            code, out, err = _exec(runner, [cand, "--help"], 60)
            m = re.search(r"\[TensorRT v(\d+)\]", out + err)
            if m:
                trtexec, version, help_text = cand, version_from_tag(m.group(1)), out + err
                break
            tried.append(f"{cand} (exit {code})")
        if trtexec is None:
            raise StepError(
                "tensorrt",
                "trtexec was not found on the device (tried " + ", ".join(tried) + ")",
                hint="install TensorRT (JetPack ships it at /usr/src/tensorrt/bin/trtexec) or set the step's trtexec path",
            )
        code, out, _ = _exec(runner, ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], 30)
        gpu, source = (out.strip().splitlines()[0].strip(), "nvidia-smi") if code == 0 and out.strip() else ("", "")
        if not gpu:
            code, out, _ = _exec(runner, ["cat", "/proc/device-tree/model"], 30)  # Jetson boards have no nvidia-smi
            if code == 0 and out.strip():
                gpu, source = out.replace("\x00", "").strip(), "device-tree"
        if not gpu:
            raise StepError("tensorrt", "cannot identify the device's GPU (no nvidia-smi, no /proc/device-tree/model)", hint="engines are cached per GPU; check the device's NVIDIA driver installation")
        code, out, _ = _exec(runner, ["cat", "/etc/nv_tegra_release"], 30)  # e.g. "# R36 (release), REVISION: 4.3, ..."
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", out) if code == 0 else None
        l4t = f"R{m.group(1)}.{m.group(2)}" if m else ""
        workdir = getattr(runner, "workdir", None) or ""
        return cls(trtexec, version, gpu, source, workdir, l4t=l4t, help_text=help_text)


def _exec(runner, argv: List[str], timeout: float) -> Tuple[int, str, str]:
    try:
        code, out, err = runner.exec(argv, timeout)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found"
    return int(code), out or "", err or ""


def build_flags(precision: str, trt_version: str, cfg: TensorRtConfig, artifact: Artifact) -> List[str]:
    """trtexec flags that define the engine (they go into the cache key); paths are added separately."""
    flags: List[str] = []
    if precision == "fp16":
        flags.append("--fp16")
    elif precision == "int8":
        flags += ["--int8", "--fp16"]  # QDQ layers run INT8; the rest may use FP16
    major_minor = tuple(int(x) for x in trt_version.split(".")[:2])
    flags.append(f"--memPoolSize=workspace:{cfg.workspace_mib}" if major_minor >= (8, 4) else f"--workspace={cfg.workspace_mib}")
    shapes = _shapes(artifact, cfg)
    if shapes:
        flags.append("--shapes=" + ",".join(f"{n}:{'x'.join(str(d) for d in s)}" for n, s in shapes.items()))
    return flags + list(cfg.extra_flags)


def _shapes(artifact: Artifact, cfg: TensorRtConfig) -> Dict[str, List[int]]:
    out: Dict[str, List[int]] = {}
    for t in artifact.inputs:
        if t.name in cfg.shapes:
            out[t.name] = list(cfg.shapes[t.name])
        elif any(not isinstance(d, int) or d <= 0 for d in t.shape):
            raise StepError(
                "tensorrt",
                f"input '{t.name}' has dynamic shape {t.shape}; TensorRT needs concrete build shapes",
                hint=f"pass --shape {t.name}=" + "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in t.shape),
            )
    return out


def cache_key(onnx_sha256: str, device: DeviceIdentity, flags: List[str]) -> str:
    blob = json.dumps({"onnx": onnx_sha256, "trt": device.trt_version, "gpu": device.gpu, "l4t": device.l4t, "flags": sorted(flags)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60]


def _read_remote_json(runner, path: str) -> Optional[Dict[str, Any]]:
    code, out, _ = _exec(runner, ["cat", path], 30)
    if code != 0:
        return None
    try:
        return json.loads(out)
    except ValueError:
        return {"unreadable": out[:200]}


def _mismatch(side: Dict[str, Any], device: DeviceIdentity) -> List[str]:
    problems = []
    if side.get("trt_version") != device.trt_version:
        problems.append(f"TensorRT {side.get('trt_version')} (this device has {device.trt_version})")
    if side.get("gpu") != device.gpu:
        problems.append(f"GPU '{side.get('gpu')}' (this device has '{device.gpu}')")
    if side.get("l4t") and device.l4t and side.get("l4t") != device.l4t:
        problems.append(f"Jetson Linux {side.get('l4t')} (this device has {device.l4t})")
    return problems


def _build(artifact: Artifact, cfg: TensorRtConfig, precision: str, device: DeviceIdentity, runner, ctx: StepContext) -> Artifact:
    from edgekit.converters.trtexec_parse import engine_mismatch_message, failing_node, parse_trtexec

    flags = build_flags(precision, device.trt_version, cfg, artifact)
    remote_onnx = runner.push(artifact)
    cache_dir = posixpath.join(device.workdir or posixpath.dirname(remote_onnx), "trt-engines")
    key = cache_key(artifact.sha256, device, flags)
    engine = posixpath.join(cache_dir, f"{key}.engine")
    sidecar = engine + ".json"
    timing_cache = posixpath.join(cache_dir, f"timing-{_slug(device.trt_version)}-{_slug(device.gpu)}.cache")
    work = Path(ctx.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    side = _read_remote_json(runner, sidecar)
    summary = None
    if side is not None:
        problems = _mismatch(side, device)
        if problems:
            raise StepError(
                "tensorrt",
                f"refusing cached engine {engine}: it was built with " + " and ".join(problems),
                hint=f"engines only run on the TensorRT version and GPU that built them; delete {engine} and its .json to rebuild",
            )
        code, _, _ = _exec(runner, ["test", "-s", engine], 30)
        if code == 0:
            ctx.note(f"tensorrt: reused engine {engine} (same ONNX, TensorRT {device.trt_version}, {device.gpu}, flags)")
            built = False
            summary = side.get("trtexec")
        else:
            side = None
    if side is None:
        _exec(runner, ["mkdir", "-p", cache_dir], 30)
        tmp_engine = engine + ".tmp"
        skip = device.skip_inference_flag()  # build only: the harness times the engine, not the build
        argv = [device.trtexec, f"--onnx={remote_onnx}", f"--saveEngine={tmp_engine}", f"--timingCacheFile={timing_cache}", *flags, *([skip] if skip else [])]
        ctx.note("tensorrt: building on the device: " + " ".join(shlex.quote(a) for a in argv))
        try:
            code, out, err = runner.exec(argv, cfg.timeout_s)
        except TimeoutError as exc:
            raise StepError("tensorrt", f"trtexec did not finish within {cfg.timeout_s:.0f} s", hint="raise the step's timeout_s (first builds on a Jetson Nano can take 10+ minutes)", tool_message=str(exc)) from exc
        log = out + ("\n" + err if err else "")
        atomic_write_text(work / "trtexec_build.log", log)  # kept even when the build fails
        parsed = parse_trtexec(log)
        if code != 0 or parsed.passed is False:
            where = failing_node(log)
            mism = engine_mismatch_message(log)
            msg = "trtexec failed to build the engine" + (f": {mism}" if mism else "")
            tool = "\n".join(parsed.errors) or log
            raise StepError("tensorrt", msg + f" (exit {code}; full log: {work / 'trtexec_build.log'})", hint="check the op against TensorRT's ONNX operator support, or simplify the model first", node=where["node"], op=where["op"], tool_message=tool)
        if parsed.trt_version and parsed.trt_version != device.trt_version:
            raise StepError("tensorrt", f"trtexec reported TensorRT {parsed.trt_version} but the device probe found {device.trt_version}", hint="several TensorRT installs? set the step's trtexec path explicitly")
        summary = parsed.model_dump(mode="json", exclude_none=True)
        side = {
            "onnx_sha256": artifact.sha256,
            "trt_version": device.trt_version,
            "gpu": device.gpu,
            "l4t": device.l4t,
            "gpu_reported_by_trtexec": parsed.gpu,
            "compute_capability": parsed.compute_capability,
            "flags": flags,
            "precision": precision,
            "trtexec": summary,
        }
        text = json.dumps(side, indent=2, sort_keys=True)
        code, _, err = _exec(runner, ["sh", "-c", f"printf '%s' {shlex.quote(text)} > {shlex.quote(sidecar + '.tmp')} && mv {shlex.quote(tmp_engine)} {shlex.quote(engine)} && mv {shlex.quote(sidecar + '.tmp')} {shlex.quote(sidecar)}"], 60)
        if code != 0:
            raise StepError("tensorrt", f"could not store the engine in the device cache {cache_dir}", tool_message=err)
        built = True
    local = work / "model.engine"
    runner.pull(engine, local)
    local_side = dict(side)
    atomic_write_text(work / "model.engine.json", json.dumps(local_side, indent=2, sort_keys=True))
    if summary:
        ctx.report["trtexec"] = summary
    meta = {
        "tensorrt": {"trt_version": device.trt_version, "gpu": device.gpu, "l4t": device.l4t, "flags": flags, "cache_key": key, "trtexec": device.trtexec},
        "device_engine_path": engine,
        "built_on_device": built,
        "source_onnx_sha256": artifact.sha256,
    }
    entry = LineageEntry(step="tensorrt", config=cfg.model_dump(mode="json"), tools={"tensorrt": device.trt_version}, notes=[f"{'built' if built else 'reused'} on {device.gpu}"], source_sha256=artifact.sha256)
    return Artifact(
        path=local.resolve(),
        format="tensorrt",
        inputs=artifact.inputs,
        outputs=artifact.outputs,
        precision=precision,
        sha256=sha256_file(local),
        size_bytes=local.stat().st_size,
        lineage=[*artifact.lineage, entry],
        metadata=meta,
    )


def _reuse_given_engine(artifact: Artifact, device: DeviceIdentity, cfg: TensorRtConfig, runner, ctx: StepContext) -> Artifact:
    """An engine passed in by the user: accept it only if its recorded TensorRT version and GPU match the device."""
    info = artifact.metadata.get("tensorrt")
    side_path = Path(str(artifact.path) + ".json")
    if info is None and side_path.exists():
        try:
            info = json.loads(side_path.read_text())
        except ValueError:
            info = None
    if info is None:
        if not cfg.allow_unverified_engine:
            raise StepError(
                "tensorrt",
                f"{artifact.path.name}: cannot tell which TensorRT version and GPU built this engine (no {side_path.name} beside it)",
                hint="rebuild from the ONNX (edgekit builds on the device and records this), or set allow_unverified_engine if you know it matches",
            )
        ctx.note(f"tensorrt: using unverified engine {artifact.path.name} (allow_unverified_engine=true)")
    else:
        problems = _mismatch(info, device)
        if problems:
            raise StepError(
                "tensorrt",
                f"refusing engine {artifact.path.name}: it was built with " + " and ".join(problems),
                hint="TensorRT engines only run on the TensorRT version and GPU that built them; rebuild from the ONNX on this device",
            )
    remote = runner.push(artifact)
    ctx.note(f"tensorrt: engine {artifact.path.name} matches this device; pushed to {remote}")
    return artifact


def native_timing(runner: Any, artifact: Artifact, device_path: str, shapes: Dict[str, List[int]], duration_s: int = 3, timeout_s: float = 300.0) -> Dict[str, Any]:
    """trtexec's own timing of the engine on the device (`--loadEngine`), to report beside the harness latency.

    GPU compute time is the kernels alone; trtexec's latency adds its H2D/D2H copies from pinned buffers.
    Returns {"command", "gpu_compute_median_ms", ...}, or {"error": why} when trtexec could not time it."""
    from edgekit.converters.trtexec_parse import parse_trtexec

    if not callable(getattr(runner, "exec", None)):
        return {"error": f"runner '{getattr(runner, 'name', '?')}' cannot run commands on the device"}
    info = artifact.metadata.get("tensorrt") or {}
    cands = [info["trtexec"]] if info.get("trtexec") else list(TRTEXEC_CANDIDATES)
    argv: List[str] = []
    for cand in cands:
        argv = [cand, f"--loadEngine={device_path}", f"--duration={int(duration_s)}", "--warmUp=500"]
        if shapes:
            argv.append("--shapes=" + ",".join(f"{n}:{'x'.join(str(d) for d in s)}" for n, s in shapes.items()))
        try:
            code, out, err = runner.exec(argv, timeout_s)
        except FileNotFoundError:
            continue
        except TimeoutError:
            return {"error": f"trtexec --loadEngine did not finish within {timeout_s:.0f} s", "command": " ".join(argv)}
        parsed = parse_trtexec((out or "") + "\n" + (err or ""))
        if code == 127 and parsed.trt_version is None:
            continue
        if code != 0 or parsed.gpu_compute is None:
            return {"error": f"trtexec --loadEngine exited {code}" + (f": {parsed.errors[0]}" if parsed.errors else ""), "command": " ".join(argv)}
        out_d: Dict[str, Any] = {
            "command": " ".join(shlex.quote(a) for a in argv),
            "trt_version": parsed.trt_version,
            "gpu_compute_median_ms": parsed.gpu_compute.median_ms,
            "gpu_compute_mean_ms": parsed.gpu_compute.mean_ms,
            "gpu_compute_p99_ms": parsed.gpu_compute.p(99),
            "queries": parsed.queries,
        }
        if parsed.latency is not None:
            out_d["latency_median_ms"] = parsed.latency.median_ms  # H2D + GPU compute + D2H (pinned buffers)
        if parsed.gpu_compute_cv_percent is not None:
            out_d["gpu_compute_cv_percent"] = parsed.gpu_compute_cv_percent
        return out_d
    return {"error": "trtexec was not found on the device", "command": " ".join(argv)}
