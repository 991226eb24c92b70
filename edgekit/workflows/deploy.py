"""The main job as a Python API: resolve model and profile, plan, run the pipeline, benchmark, report."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from edgekit import __version__
from edgekit.core import runtimes
from edgekit.core.artifact import Artifact, load_artifact
from edgekit.core.errors import EdgekitError, FidelityError, NoVariantError, PlanError, StepError, UsageError
from edgekit.core.outdir import OutDir
from edgekit.core.pipeline import DataSources, Pipeline, PipelineResult
from edgekit.core.plan import Plan, PlanOptions, make_plan
from edgekit.core.profiles import DeviceProfile, load_profile
from edgekit.core.registry import get_runner
from edgekit.core.results import BenchmarkResult, DeployReport
from edgekit.core.runner_interface import HarnessSpec, InputSpec, Runner
from edgekit.core.shapes import random_feeds, resolve_inputs

Progress = Callable[[str], None]


class ResolvedModel:
    """A model given by the user: the source artifact, a label, and the zoo entry if it came from the zoo."""

    def __init__(self, artifact: Artifact, label: str, zoo: Any = None):
        self.artifact = artifact
        self.label = label
        self.zoo = zoo


def resolve_model(spec: Union[str, Path, Artifact], trust_pickle: bool = False) -> ResolvedModel:
    if isinstance(spec, Artifact):
        return ResolvedModel(spec, str(spec.path))
    text = str(spec)
    if text.startswith("zoo:"):
        from edgekit.zoo import models as zoo

        model = zoo.resolve(text)
        return ResolvedModel(model.artifact(), text, model)
    return ResolvedModel(load_artifact(text, trust_pickle=trust_pickle), text)


def _signature_from_shapes(resolved: ResolvedModel, shapes: Optional[Dict[str, List[int]]]) -> ResolvedModel:
    """A PyTorch file that carries no signature (TorchScript, pickled module) takes its inputs from --shape."""
    art = resolved.artifact
    if art.inputs or art.format not in ("torchscript", "pytorch") or art.module is not None:
        return resolved
    if not shapes:
        raise UsageError(
            f"{resolved.label}: a {art.format} file carries no input signature; edgekit needs example input shapes to export it",
            hint="pass one --shape per forward() argument, e.g. --shape x=1x3x224x224",
        )
    from edgekit.core.artifact import TensorSpec

    inputs = [TensorSpec(name=n, shape=list(s), dtype="float32") for n, s in shapes.items()]
    return ResolvedModel(art.model_copy(update={"inputs": inputs}), resolved.label, resolved.zoo)


def build_data(
    model: ResolvedModel,
    shapes: Optional[Dict[str, List[int]]] = None,
    calib: Optional[Any] = None,
    calib_preprocess: Optional[str] = None,
    calib_samples: int = 128,
    inputs_file: Optional[Union[str, Path]] = None,
    eval_count: Optional[int] = None,
) -> DataSources:
    """Calibration/evaluation data and concrete input shapes: user data first, else the zoo's, else none.

    With `inputs_file` (--inputs FILE.npz) its values are the first evaluation sample (fidelity) and the
    benchmark's feed, and its arrays fix the input shapes."""
    if inputs_file is None:
        return _with_count(_build_data(model, shapes, calib, calib_preprocess, calib_samples), model, eval_count)
    from edgekit.core import feeds as feeds_mod

    feed = feeds_mod.load_inputs_file(inputs_file, model.artifact.inputs, model=model.label, shapes=shapes)
    data = _build_data(model, {**(shapes or {}), **{n: list(a.shape) for n, a in feed.items()}}, calib, calib_preprocess, calib_samples)
    other = data.eval

    def eval_with_user(n: int) -> List[Dict[str, Any]]:
        rest = list(other(max(0, n - 1))) if other is not None else []
        return [feed, *rest][: max(1, n)]

    data.inputs = feeds_mod.specs_from_feed(feed)
    data.eval = eval_with_user
    data.user_feed = feed
    data.fingerprint = f"{data.fingerprint}+inputs:{feeds_mod.fingerprint(feed)}"
    return _with_count(data, model, eval_count)


def _with_count(data: DataSources, model: ResolvedModel, eval_count: Optional[int]) -> DataSources:
    """Size the held-out evaluation set: --fidelity-samples, else the zoo model's default (what a stable estimate
    costs for it), else 8 random feeds' worth for models without evaluation data."""
    if eval_count is not None:
        data.eval_count = int(eval_count)
    else:
        data.eval_count = int(getattr(model.zoo, "eval_count", 0) or (32 if data.eval is not None else 8))
    return data


def _build_data(model, shapes, calib, calib_preprocess, calib_samples) -> DataSources:
    zoo = model.zoo
    sample = None
    if zoo is not None and any(not t.dtype.startswith(("float", "bfloat")) for t in model.artifact.inputs):
        sample = zoo.eval_feeds(1)[0]  # real value ranges for integer inputs (token ids, masks)
    inputs = resolve_inputs(
        model.artifact.inputs,
        overrides=shapes,
        defaults=getattr(zoo, "default_shapes", None),
        sample=sample,
        model=model.label,
    )
    if calib is not None:
        calib_feeds, eval_feeds, fingerprint = load_user_data(calib, model.artifact.inputs, calib_samples, calib_preprocess)
        return DataSources(
            inputs=inputs,
            calib=lambda n: calib_feeds[:n],
            eval=lambda n: eval_feeds[:n],
            task_metric=zoo.task_metric if zoo is not None else None,
            task_metric_name=zoo.task_metric_name if zoo is not None else None,
            fingerprint=fingerprint,
            device_reduce=zoo.device_reduction() if zoo is not None else None,
        )
    if zoo is not None:
        # --shape also shapes the zoo's calibration/held-out samples (a 320x320 deploy is checked on 320x320 pages);
        # the zoo makes one sample per feed, so a batched --shape keeps the zoo's own shapes
        zshapes = {k: list(v) for k, v in (shapes or {}).items() if k in zoo.default_shapes and list(v)[:1] == [1]} or None
        return DataSources(
            inputs=inputs,
            calib=lambda n: zoo.calib_feeds(n, shapes=zshapes),
            eval=lambda n: zoo.eval_feeds(n, shapes=zshapes),
            task_metric=zoo.task_metric,
            task_metric_name=zoo.task_metric_name,
            fingerprint=f"zoo:{zoo.name}" + (f"@{sorted(zshapes.items())}" if zshapes else ""),
            device_reduce=zoo.device_reduction(),
        )
    return DataSources(inputs=inputs)


def load_user_data(source: Any, inputs, n_max: int, preprocess: Optional[str]):
    """--calib data split into calibration (first 3/4) and held-out evaluation (last 1/4) samples, never shared."""
    import hashlib

    from edgekit.quality import calibration as calib_mod
    from edgekit.core.errors import CalibrationError

    feeds = calib_mod.load_calibration(source, list(inputs), n_max, preprocess)
    if len(feeds) < 2:
        raise CalibrationError(
            f"{calib_mod.what_src(source)} gave {len(feeds)} usable sample(s); edgekit needs at least 2 (some are held out to measure accuracy)",
            hint="add more samples (tens to a few hundred are typical)",
        )
    n_eval = max(1, len(feeds) // 4)
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            h.update(name.encode())
            h.update(feed[name].tobytes())
    return feeds[: len(feeds) - n_eval], feeds[len(feeds) - n_eval :], "user:" + h.hexdigest()[:16]


def _demo_apk(model: Path) -> Path:
    """The Android demo app with `model` embedded (edgekit app build), in a fresh temp dir."""
    import tempfile

    from edgekit.workflows.app import build_apk

    return build_apk(model, Path(tempfile.mkdtemp(prefix="edgekit-apk-")) / "edgekit-demo.apk")


def make_runner(profile: DeviceProfile, host: Optional[str] = None, ssh: Optional[Dict[str, Any]] = None, on_progress=None) -> Runner:
    """A LocalRunner for local profiles without --host, an SSHRunner for --host, an AdbRunner for --serial or adb profiles."""
    opts = dict(ssh or {})
    serial = opts.pop("serial", None)
    if host and serial:
        raise UsageError("--host and --serial both given", hint="--host is an SSH device, --serial an adb device: pass one")
    if serial or (not host and profile.connection.type == "adb"):
        # the demo-app path (a phone without Python) needs an APK with the model: built here, not by the transport
        return get_runner("adb")(profile, serial, on_progress=on_progress, apk_builder=_demo_apk, **opts)
    if host:
        return get_runner("ssh")(host, profile, on_progress=on_progress, **opts)
    if profile.connection.type == "local":
        return get_runner("local")(profile, on_progress=on_progress)
    raise UsageError(
        f"profile '{profile.name}' describes a device reached over {profile.connection.type}; edgekit needs to know where it is",
        hint="pass --host user@device (an ~/.ssh/config alias works too), or use --profile x86-cpu to run here",
    )


def runtime_on_device(profile: DeviceProfile, host: str, ssh: Optional[Dict[str, Any]], progress: Progress) -> tuple:
    """The first of the profile's runtimes that the device really has (probed over SSH), and a plan note saying so."""
    progress(f"probing {host} for the runtimes of '{profile.name}' ({', '.join(profile.runtimes)})")
    runner = make_runner(profile, host, ssh)
    try:
        runner.connect()
        probe = runner.probe()
    finally:
        runner.close()
    rts = probe.get("runtimes", {})
    from edgekit.core import runtimes

    have = [rt for rt in profile.runtimes if runtimes.get(rt).usable_in_probe(rts)]
    where = f"{probe.get('arch')}, Python {probe.get('python')} at {probe.get('python_executable')}"
    if not have:
        raise PlanError(
            f"none of the runtimes of profile '{profile.name}' ({', '.join(profile.runtimes)}) is installed on {host} ({where})",
            hint=f"edgekit setup --host {host} --profile {profile.name} installs the profile's pinned runtimes into a venv there",
        )
    missing = profile.runtimes[: profile.runtimes.index(have[0])]
    note = f"runtime {have[0]}: found on the device ({where})"
    if missing:
        note += f"; the preferred {', '.join(missing)} is not installed there"
    return have[0], note


def harness_spec(artifact: Artifact, device_path: str, profile: DeviceProfile, runtime: str, inputs: Sequence[InputSpec], bench: Dict[str, Any], inputs_file: Optional[str] = None) -> HarnessSpec:
    return HarnessSpec(
        inputs_file=inputs_file,
        model_path=device_path,
        model_format=artifact.format,
        runtime=runtimes.get(runtime).harness_adapter,
        sha256=artifact.sha256,
        precision=artifact.precision,
        threads=bench.get("threads") or profile.threads,
        inputs=_device_inputs(artifact, inputs),
        warmup_runs=bench.get("warmup_runs", 10),
        warmup_seconds=bench.get("warmup_seconds", 1.0),
        min_runs=bench.get("min_runs", 50),
        min_seconds=bench.get("min_seconds", 5.0),
        max_seconds=bench.get("max_seconds", 120.0),
        energy_source=profile.energy.source,
        energy_rails=profile.energy.rails,
        energy_interval_ms=profile.energy.interval_ms,
        idle_seconds=bench.get("idle_seconds", 2.0) if profile.energy.source != "none" else 0.0,
        thermal_zones=profile.thermal_zones,
        runtime_options=runtimes.runtime_options_for(runtime, artifact.precision, artifact.metadata),
    )


def _device_inputs(artifact: Artifact, inputs: Sequence[InputSpec]) -> List[InputSpec]:
    """Inputs in the artifact's own names/layout (e.g. NHWC for TFLite) from source-layout specs."""
    meta = artifact.metadata
    name_map = meta.get("input_name_map", {})
    transpose = meta.get("feed_transpose", {})
    out = []
    for s in inputs:
        name = name_map.get(s.name, s.name)
        shape = list(s.shape)
        if name in transpose:
            shape = [shape[i] for i in transpose[name]]
        out.append(s.model_copy(update={"name": name, "shape": shape}))
    return out


def runtime_for(artifact: Artifact, requested: Optional[str] = None) -> str:
    """The requested runtime (checked against the runtime table), else the one whose native format the artifact is."""
    if requested:
        return runtimes.get(requested).name
    rt = runtimes.for_format(artifact.format)
    if rt is None:
        raise PlanError(f"{artifact.path}: a {artifact.format} model cannot be benchmarked directly", hint="run `edgekit deploy` to convert it first")
    return rt.name


def benchmark(
    artifact: Artifact,
    profile: DeviceProfile,
    runner: Runner,
    inputs: Sequence[InputSpec],
    runtime: Optional[str] = None,
    bench: Optional[Dict[str, Any]] = None,
    progress: Optional[Progress] = None,
    feed: Optional[Dict[str, Any]] = None,
    eval_feeds: Optional[Sequence[Dict[str, Any]]] = None,
    eval_reduce: Optional[List[str]] = None,
) -> BenchmarkResult:
    """Push and time `artifact`; `feed` (--inputs, source names/layout) replaces the harness's random inputs.
    With `eval_feeds` (source names/layout) the harness also runs them after timing (evaluation mode) and leaves
    their outputs on the device (result.evaluation.outputs_file) for edgekit.quality.fidelity.device_fidelity,
    each source output reduced as `eval_reduce` says (DataSources.device_reduce: what the task metric needs)."""
    rt = runtime_for(artifact, runtime)
    from edgekit.core.resources import check_benchmark_memory
    from edgekit.fleet.lock import hold_runner_board

    check_benchmark_memory(_device_inputs(artifact, inputs), _model_bytes(artifact), profile.memory_mb, profile.name, host_too=runner.target == "local")
    # one benchmark per board at a time, across edgekit processes (a sweep, another deploy): figures never share a board
    with hold_runner_board(runner, holder=f"edgekit benchmark of {artifact.path.name}", on_wait=progress):
        return _benchmark_on(artifact, profile, runner, inputs, rt, bench, progress, feed, eval_feeds, eval_reduce)


def _benchmark_on(artifact: Artifact, profile: DeviceProfile, runner: Runner, inputs: Sequence[InputSpec], rt: str, bench: Optional[Dict[str, Any]],
                  progress: Optional[Progress], feed: Optional[Dict[str, Any]], eval_feeds: Optional[Sequence[Dict[str, Any]]],
                  eval_reduce: Optional[List[str]] = None) -> BenchmarkResult:
    if progress:
        progress(f"pushing {artifact.path.name} to {runner.target}")
    device_path = runner.push(artifact)
    device_inputs = None
    if feed is not None:
        device_inputs = _push_feed(artifact, feed, runner)
    spec = harness_spec(artifact, device_path, profile, rt, inputs, bench or {}, inputs_file=device_inputs)
    if eval_feeds:
        from edgekit.quality.fidelity import device_reductions, outputs_path_for, write_eval_feeds

        if progress:
            progress(f"pushing {len(eval_feeds)} held-out evaluation samples to {runner.target} (run after timing, outside it)")
        device_eval = _push_local_file(write_eval_feeds(artifact, eval_feeds, _work_dir("eval")), runner, "eval")
        spec = spec.model_copy(update={"eval_inputs_file": device_eval, "eval_outputs_file": outputs_path_for(device_eval, artifact, rt),
                                       "eval_reduce": device_reductions(artifact, eval_reduce)})
    if progress:
        progress(f"benchmarking on {runner.target} with {rt} ({spec.threads} threads, ≥{spec.min_runs} runs and ≥{spec.min_seconds:g} s)")
    result = runner.run_harness(spec)
    if rt == "tensorrt":
        from edgekit.converters.tensorrt import native_timing

        if progress:
            progress("timing the engine with trtexec --loadEngine too (its GPU compute time, reported beside the harness latency)")
        native = native_timing(runner, artifact, device_path, {s.name: list(s.shape) for s in spec.inputs})
        result = result.model_copy(update={"native": {**result.native, "trtexec": native}})
    return result


def bench_inputs(artifact: Artifact, shapes: Optional[Dict[str, List[int]]] = None, inputs_file: Optional[Union[str, Path]] = None):
    """(InputSpecs, feed or None) to benchmark an existing artifact: --shape values, and --inputs FILE.npz (in the
    artifact's own names and layout) whose arrays fix the shapes."""
    overrides = dict(shapes or {})
    feed = None
    if inputs_file:
        from edgekit.core.feeds import load_inputs_file

        feed = load_inputs_file(inputs_file, artifact.inputs, model=str(artifact.path), shapes=overrides)
        overrides.update({n: list(a.shape) for n, a in feed.items()})
    return resolve_inputs(artifact.inputs, overrides=overrides, model=str(artifact.path)), feed


def _work_dir(kind: str) -> Path:
    """A directory under the cache for files made to be pushed (content-named), or a temp dir if that is not writable."""
    import tempfile

    from edgekit.core.pipeline import default_cache_dir

    directory = default_cache_dir() / kind
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    except OSError:
        return Path(tempfile.mkdtemp(prefix=f"edgekit-{kind}-"))


def _push_local_file(path: Path, runner: Runner, kind: str) -> str:
    """Make a local file available on the device (runners without push_files run here: the local path)."""
    push_files = getattr(runner, "push_files", None)
    if push_files is not None:
        return push_files([path], kind=kind)[0]
    return str(path.resolve())


def _push_feed(artifact: Artifact, feed: Dict[str, Any], runner: Runner) -> str:
    """Write the --inputs feed in the artifact's own names/layout and make it available on the device."""
    import tempfile

    from edgekit.core.feeds import write_device_feed
    from edgekit.core.pipeline import default_cache_dir

    try:
        directory = default_cache_dir() / "inputs"
        path = write_device_feed(artifact, feed, directory)
    except OSError:
        path = write_device_feed(artifact, feed, Path(tempfile.mkdtemp(prefix="edgekit-inputs-")))
    push_files = getattr(runner, "push_files", None)
    if push_files is not None:
        return push_files([path], kind="inputs")[0]
    return str(path.resolve())


def _model_bytes(art: Artifact) -> int:
    try:
        return art.total_size_bytes if art.format != "pytorch" else art.size_bytes
    except OSError:
        return 0


def deploy(
    model: Union[str, Path, Artifact],
    profile: Union[str, DeviceProfile],
    *,
    host: Optional[str] = None,
    ssh: Optional[Dict[str, Any]] = None,
    runtime: Optional[str] = None,
    precision: Optional[str] = None,
    max_drop: Optional[float] = None,
    train_budget: Optional[float] = None,
    calib: Optional[Any] = None,
    calib_preprocess: Optional[str] = None,
    shapes: Optional[Dict[str, List[int]]] = None,
    simplify: bool = True,
    out: Optional[Union[str, Path]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    use_cache: bool = True,
    bench: Optional[Dict[str, Any]] = None,
    run_benchmark: bool = True,
    trust_pickle: bool = False,
    fidelity_samples: Optional[int] = None,
    progress: Optional[Progress] = None,
    command: Optional[str] = None,
    history: Optional[Union[str, Path]] = None,
    inputs_file: Optional[Union[str, Path]] = None,
) -> DeployReport:
    """Plan, convert (cached), push and benchmark; writes artifacts and reports to `out` atomically."""
    progress = progress or (lambda m: None)
    t_start = time.perf_counter()
    if fidelity_samples is not None and fidelity_samples < 1:
        raise UsageError(f"--fidelity-samples must be at least 1, got {fidelity_samples}",
                         hint="the held-out evaluation set has that many samples (default: the zoo model's eval_count, 32 for ppocr-det; 8 random feeds without data)")
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser().resolve()  # resolved once, here: steps run in other directories
    from edgekit.report import history as hist

    hist.check_writable(history)  # a bad history file fails now, not after the work
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    if run_benchmark and not host and prof.connection.type != "local":
        make_runner(prof, host, ssh)  # raises the clear "pass --host" (or "no adb") error before any work starts
    outdir = OutDir(out).open() if out else None  # locked and staged: --out only ever shows one whole run
    try:
        return _deploy(
            model, prof, outdir, t_start, host=host, ssh=ssh, runtime=runtime, precision=precision, max_drop=max_drop,
            calib=calib, calib_preprocess=calib_preprocess, shapes=shapes, simplify=simplify, cache_dir=cache_dir,
            use_cache=use_cache, bench=bench, run_benchmark=run_benchmark, trust_pickle=trust_pickle,
            fidelity_samples=fidelity_samples, progress=progress, command=command, history=history, inputs_file=inputs_file, train_budget=train_budget,
        )
    finally:
        if outdir is not None:
            outdir.abort()  # no-op after a commit


def _deploy(model, prof, outdir, t_start, *, host, ssh, runtime, precision, max_drop, calib, calib_preprocess, shapes, simplify,
            cache_dir, use_cache, bench, run_benchmark, trust_pickle, fidelity_samples, progress, command, history, inputs_file=None,
            train_budget: Optional[float] = None) -> DeployReport:
    timings: Dict[str, float] = {}
    resolved = _signature_from_shapes(resolve_model(model, trust_pickle=trust_pickle), shapes)
    timings["load_s"] = time.perf_counter() - t_start
    data = build_data(resolved, shapes=shapes, calib=calib, calib_preprocess=calib_preprocess, inputs_file=inputs_file, eval_count=fidelity_samples)
    fidelity_samples = data.eval_count  # one held-out set (or this many random feeds) judges every step and variant
    from edgekit.core.resources import check_benchmark_memory, check_fidelity_memory

    # before any feed exists or any conversion runs (the benchmark is checked again with the final artifact)
    check_fidelity_memory(data.inputs, fidelity_samples, _model_bytes(resolved.artifact))
    if run_benchmark:
        check_benchmark_memory(data.inputs, _model_bytes(resolved.artifact), prof.memory_mb, prof.name, host_too=not host)
    want = precision or prof.default_precision
    # int8 under a budget without a forced runtime: which runtime's INT8 keeps accuracy is model-dependent
    # (OpenVINO/NNCF wins on PP-OCR det, ORT dynamic INT8 on MiniLM), so measure each instead of guessing.
    if train_budget and want not in ("int8", "auto"):
        raise UsageError(f"--train-budget applies to --precision int8 or auto, not {want}", hint="add --precision int8 (or auto), or drop --train-budget")
    # a training budget always goes through the search (QAT and compounds are variants of it), with --runtime kept
    searching = want == "auto" or (want == "int8" and ((max_drop is not None and runtime is None) or train_budget is not None))
    explicit_runtime = runtime is not None  # a runtime found on the device below may still fall back
    device_note = None
    if host and runtime is None and run_benchmark and not searching:
        runtime, device_note = runtime_on_device(prof, host, ssh, progress)
    options = PlanOptions(runtime=runtime, precision=None if want == "auto" else want, max_drop=max_drop, simplify=simplify, has_calib=calib is not None or resolved.zoo is not None, host=host, shapes=shapes or None)
    runner: Optional[Runner] = None
    try:
        if host and device_note is None:
            # probe the device BEFORE converting: plan only for the runtimes it actually has
            runner = make_runner(prof, host, ssh, on_progress=getattr(progress, "on_progress", None))
            progress(f"connecting to {host} to see which runtimes it has")
            runner.connect()
            have = runtimes.in_probe(runner.probe())
            progress(f"{host} has: {', '.join(have) or 'no runtime edgekit can use'}")
            options = options.model_copy(update={"device_runtimes": have})
        plan = _first_plan(resolved, prof, options, searching, progress, device_note)
    except BaseException:
        if runner is not None:
            runner.close()
        raise
    if runner is None and (run_benchmark or searching or any(s.step == "tensorrt" for s in plan.steps)):
        runner = make_runner(prof, host, ssh, on_progress=getattr(progress, "on_progress", None))
    pipeline: Optional[Pipeline] = None
    result: Optional[PipelineResult] = None
    bench_result: Optional[BenchmarkResult] = None
    variants: List[Dict[str, Any]] = []
    try:
        if runner is not None:
            if not host:
                progress(f"connecting to {runner.target if runner.name == 'adb' else 'this machine'}")
            runner.connect()  # already connected when --host was probed before planning
        t0 = time.perf_counter()
        try:
            if searching:
                precisions = None if want == "auto" else [want]
                plan, result, variants = _auto(resolved, prof, data, runner, runtime, precisions, max_drop, host, simplify, shapes or None, cache_dir, use_cache, fidelity_samples, progress, options.device_runtimes, train_budget)
            else:
                attempt: List[Any] = []  # the last (plan, pipeline) tried: its finished steps are kept after a failure
                try:
                    plan, pipeline, result = _run_with_fallback(plan, options, resolved, prof, data, runner, cache_dir, fidelity_samples, progress, use_cache, explicit_runtime=explicit_runtime, attempt=attempt)
                except EdgekitError:
                    if attempt:
                        plan, pipeline = attempt[-1]
                    raise
        finally:
            timings["pipeline_s"] = time.perf_counter() - t0
        eval_feeds = pipeline.reference_feeds() if pipeline is not None else (data.heldout(fidelity_samples) or random_feeds(data.inputs, fidelity_samples, seed=1234))
        if run_benchmark and runner is not None:
            t0 = time.perf_counter()
            bench_result = benchmark(result.artifact, prof, runner, data.inputs, runtime=plan.runtime, bench=bench, progress=progress, feed=data.user_feed,
                                     eval_feeds=eval_feeds, eval_reduce=data.device_reduce)
            timings["benchmark_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        check = fidelity_check(resolved, result, bench_result, runner, data, eval_feeds, max_drop, plan.runtime, progress, pipeline)
        timings["fidelity_check_s"] = time.perf_counter() - t0
    except EdgekitError as err:
        if outdir is not None and pipeline is not None and pipeline.records:
            _keep_partial(outdir, pipeline, plan, resolved, prof, command or "", err, progress)
        elif outdir is not None and isinstance(err, NoVariantError):
            _keep_search(outdir, err, resolved, prof, command or "", progress)
        raise
    finally:
        if runner is not None:
            runner.close()
    timings["total_s"] = time.perf_counter() - t_start
    search = None
    if variants:
        from edgekit.quality.variant_search import DEFAULT_MAX_DROP

        md = DEFAULT_MAX_DROP if max_drop is None else max_drop
        search = {"max_drop": md, "budget": 1.0 - md, "score": data.task_metric_name or "output cosine"}
    return _report(command, resolved, prof, plan, result, bench_result, runner, timings, variants, outdir, data.inputs, search, history, check)


def fidelity_check(resolved, result, bench_result, runner, data, feeds, max_drop, runtime, progress, pipeline=None) -> Dict[str, Any]:
    """Host and device scores of the final artifact against the source, on the same held-out feeds and with the
    same scorer, and which one decided. For formats only the device can run (TensorRT engines) the device score is
    the only check and is mandatory: a missing or failing one raises FidelityError (the artifact is refused)."""
    from edgekit.quality.fidelity import check_row, compare, device_fidelity, predict
    from edgekit.quality.variant_search import DEFAULT_MAX_DROP, _budget

    md = DEFAULT_MAX_DROP if max_drop is None else max_drop
    budget = _budget(md, data.task_metric is not None)
    metric = data.task_metric_name or "output cosine"
    kind = "eval" if data.eval is not None else "random"
    src, final = resolved.artifact, result.artifact
    host_ok = runtimes.host_checkable(final.format) or final.format in ("pytorch", "torchscript", "exported_program")
    ref = pipeline._predict(src) if pipeline is not None else predict(src, feeds)
    host_res, host_why = None, None
    if host_ok:
        if final.sha256 == src.sha256 and final.format == src.format:
            new = ref  # deployed as is: the host runs the source itself
        else:
            new = pipeline._predict(final) if pipeline is not None else predict(final, feeds)
        host_res = compare(ref, new, budget, data.task_metric, data.task_metric_name, data=kind)
    else:
        host_why = f"a {final.format} artifact runs only on the device (built there for its GPU)"
    dev_res, dev_why = None, None
    if bench_result is None:
        dev_why = "no benchmark was run on the device (--no-bench)"
    elif not bench_result.evaluation:
        dev_why = f"the {bench_result.runner} run returned no evaluation outputs" + (
            " (the Android demo app has no evaluation mode)" if bench_result.runner == "adb" else "")
    else:
        progress(f"scoring the device's outputs on {len(feeds)} held-out samples against the source model ({metric})")
        dev_res = device_fidelity(ref, bench_result, runner, final, budget, data.task_metric, data.task_metric_name, data=kind,
                                  reduce=data.device_reduce)
    budget_score = 1.0 - md
    decided = "host" if host_ok else "device"
    rows = [check_row("host", host_res, budget_score, metric, host_why), check_row("device", dev_res, budget_score, metric, dev_why)]
    out: Dict[str, Any] = {"metric": metric, "max_drop": md, "budget": budget_score, "data": kind, "samples": len(feeds),
                           "decided_by": decided, "rows": rows, "device_result": dev_res}
    if decided == "host":
        out["note"] = ("the host check on the held-out set decided (a step that missed the budget there was refused); the device score is "
                       "measured on the target's own runtime build beside it")
        if dev_res is not None and not rows[1]["meets_budget"]:
            out["warning"] = (f"the device scores {rows[1]['score']:.4f} < budget {budget_score:.4f} although the host "
                              f"scores {rows[0]['score']:.4f}: the target's kernels differ from this host's")
    else:
        out["note"] = "only the device can run this artifact: its score is the only check, and it is mandatory"
        if bench_result is None:
            out["warning"] = f"not checked: {dev_why}; this {final.format} artifact has no measured score"
        elif dev_res is None or not rows[1]["meets_budget"]:
            why = rows[1]["status"] if dev_res is None else f"{metric} {rows[1]['score']:.4f} < budget {budget_score:.4f}"
            raise FidelityError(f"the {final.format} artifact on {runtime} does not meet the budget on the device: {why}",
                                hint="an engine without a measured device score is never accepted; run with the benchmark, or raise --max-drop if the score is acceptable")
    return out


def _first_plan(resolved, prof: DeviceProfile, options: PlanOptions, searching: bool, progress: Progress, device_note: Optional[str] = None) -> Optional[Plan]:
    """The plan to run (printed first), or None when a variant search will choose it and the preferred runtime
    cannot do what was asked (e.g. INT8 on the Nano's GPU)."""
    try:
        plan = make_plan(resolved.artifact, resolved.label, prof, options)
    except PlanError:
        if not searching:
            raise
        return None
    if device_note:
        # the planner was handed the device's runtime as if the user had asked for it; say where it came from
        notes = [n for n in plan.notes if n != f"runtime {options.runtime}: requested with --runtime"]
        plan = plan.model_copy(update={"notes": [*notes, device_note]})
    if not searching:
        for line in plan.describe():
            progress(line)
    return plan


def _report(command, resolved, prof, plan, result, bench_result, runner, timings, variants, outdir, inputs, search, history, check=None) -> DeployReport:
    """The DeployReport of a finished run, written to the staged --out (report.json last) and swapped in, and
    recorded in the history when it was benchmarked."""
    from edgekit.report import build_report, write_outputs
    from edgekit.report import history as hist

    report = build_report(
        command=command or "edgekit.deploy(...)",
        resolved=resolved,
        profile=prof,
        plan=plan,
        result=result,
        bench=bench_result,
        target=runner.target if runner is not None else plan.target,
        timings=timings,
    )
    if variants:
        report = report.model_copy(update={"variants": variants, "search": search})
    if check is not None:
        report = report.model_copy(update={"fidelity_device": check.pop("device_result", None), "fidelity_check": check})
    if outdir is not None:
        report = write_outputs(outdir.stage, report, result, outdir.shown_path, inputs=inputs, power_mode=prof.power_mode)
    if bench_result is not None:
        hist.append_benchmark(
            history, bench_result, kind="deploy", command=report.command, model=resolved.label, model_sha256=resolved.artifact.sha256,
            profile=prof.name, power_mode=prof.power_mode, fidelity=report.fidelity_end_to_end,
            report_path=str(outdir.final / "report.html") if outdir is not None else None,
        )
    if outdir is not None:
        outdir.commit()
    return report


# Steps that belong to one runtime's conversion path: their failure says nothing about the other runtimes.
RUNTIME_STEPS = {"openvino", "tflite", "litert-torch", "quantize-ort", "fp16", "tensorrt"}


def _fallback_reason(exc: EdgekitError) -> Optional[str]:
    """Why the plan's runtime failed, if the next runtime may succeed where it did not (else None: re-raise)."""
    if isinstance(exc, FidelityError):
        return "its artifact failed the fidelity check: " + exc.message.splitlines()[0].split(": ", 1)[-1]
    if isinstance(exc, StepError) and exc.step in RUNTIME_STEPS:
        return f"step '{exc.step}' could not convert the model: " + exc.message.splitlines()[0].split(": ", 2)[-1]
    return None


def _run_with_fallback(plan, options, resolved, prof, data, runner, cache_dir, fidelity_samples, progress, use_cache, explicit_runtime, attempt=None):
    """Run the plan; with no --runtime, when its runtime cannot convert or fails fidelity, re-plan with the next one.

    Returns (plan, pipeline, result); the final plan's notes say which runtimes failed and why. An explicit
    --runtime never falls back: its error is raised as it is."""
    excluded: Dict[str, str] = {}
    while True:
        pipeline = Pipeline(plan, prof, data, cache_dir=Path(cache_dir) if cache_dir else None, runner=runner, fidelity_samples=fidelity_samples, progress=progress, use_cache=use_cache)
        if attempt is not None:
            attempt.append((plan, pipeline))
        try:
            return plan, pipeline, pipeline.run(resolved.artifact)
        except (FidelityError, StepError) as exc:
            why = None if explicit_runtime else _fallback_reason(exc)
            if why is None:
                raise
            excluded[plan.runtime] = why
            progress(f"{plan.runtime} failed: {why}")
            try:
                plan = make_plan(resolved.artifact, resolved.label, prof, options.model_copy(update={"exclude_runtimes": dict(excluded)}))
            except PlanError as pe:
                tried = "; ".join(f"{r}: {w}" for r, w in excluded.items())
                raise PlanError(
                    f"no runtime of profile '{prof.name}' could deploy {resolved.label}: {tried}",
                    hint=f"pass --runtime {next(iter(excluded))} to see that runtime's full error; {pe.message}",
                ) from exc
            progress(f"falling back to {plan.runtime}")
            for line in plan.describe():
                progress(line)


def _keep_search(outdir, err: NoVariantError, resolved, prof, command, progress) -> None:
    """A search that found no variant: keep its measured rows as a failed report.json + report.md in the out dir
    (what each variant scored, how fast it ran, what training cost); a failure here never masks `err`."""
    from edgekit.report import write_search_failure

    try:
        write_search_failure(outdir.stage, err.variants, err.search, resolved, prof, command, error=err.message)
        outdir.commit()
        progress(f"kept the {len(err.variants)} variant row(s) of the search in {outdir.shown}/report.json and report.md{outdir.kept_previous()}")
    except (EdgekitError, OSError) as second:
        progress(f"could not write the search report to {outdir.shown}: {second}")


def _keep_partial(outdir, pipeline, plan, resolved, prof, command, err, progress) -> None:
    """Swap in the failed run's finished steps and a failed report.json; a failure here never masks `err`."""
    from edgekit.report import write_partial

    try:
        write_partial(outdir.stage, pipeline, plan, resolved, prof, command, error=err.message, shown=outdir.shown_path)
        outdir.commit()
        progress(f"kept the finished steps and a failed report.json in {outdir.shown}{outdir.kept_previous()}")
    except (EdgekitError, OSError) as second:
        progress(f"could not write the partial report to {outdir.shown}: {second}")


def _auto(resolved, prof, data, runner, runtime, precisions, max_drop, host, simplify, shapes, cache_dir, use_cache, fidelity_samples, progress, device_runtimes=None, train_budget=None):
    """Build and measure every feasible runtime x precision variant (or only `precisions`); keep the fastest within budget."""
    from edgekit.quality.variant_search import DEFAULT_MAX_DROP, search_variants

    md = DEFAULT_MAX_DROP if max_drop is None else max_drop
    from edgekit.quality.compound import DEFAULT_TRAIN_BUDGET_S

    train_default = train_budget is None and (not precisions or "int8" in precisions)
    if train_default:
        train_budget = DEFAULT_TRAIN_BUDGET_S
    what = "each runtime x precision" if not precisions else f"the {'/'.join(precisions)} path of each runtime"
    progress(f"variant search: building and measuring {what} of '{prof.name}' on {runner.target}; budget: drop ≤ {md:.2%} of {data.task_metric_name or 'output cosine'}")
    variants, best = search_variants(
        resolved, prof, data, runner, max_drop=md, host=host, simplify=simplify, shapes=shapes,
        cache_dir=Path(cache_dir) if cache_dir else None, use_cache=use_cache, fidelity_samples=fidelity_samples,
        runtimes=[runtime] if runtime else None, precisions=precisions, progress=progress, benchmark=benchmark, device_runtimes=device_runtimes,
        train_budget_s=train_budget, train_default=train_default,
    )
    rows = [v.model_dump(mode="json") for v in variants]
    if best is None:
        lines = "\n".join(f"  {v.runtime}/{v.precision}" + (f" {v.method}" if v.method else "") + f": {v.status} {v.reason}" for v in variants)
        hint = "raise --max-drop, or pick --runtime/--precision explicitly"
        if any(v.train_s for v in variants):  # QAT, and prune -> distill compounds
            hint = "give training more time with a larger --train-budget, " + hint
        elif not train_budget and any(v.precision == "int8" for v in variants):
            hint = "allow quantization-aware training with --train-budget 10m, " + hint
        from edgekit.quality.variant_search import closest_miss

        near = closest_miss(variants, md)
        if near:
            lines += f"\nclosest: {near}"
        search = {"max_drop": md, "budget": 1.0 - md, "score": data.task_metric_name or "output cosine", "closest": near}
        raise NoVariantError(f"no variant of {resolved.label} meets the budget on {prof.name}:\n{lines}", hint=hint, variants=rows, search=search)
    plan, result = best
    plan = plan.model_copy(update={"notes": [*plan.notes, f"chosen by measurement among {len(variants)} variants (see variants in the report)"]})
    return plan, result, rows


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["edgekit", *sys.argv[1:]])
