"""Pipeline: run a plan step by step with a content-addressed cache and a fidelity check after each step."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from pydantic import ValidationError

from edgekit import __version__
from edgekit.core import runtimes
from edgekit.core.artifact import Artifact
from edgekit.core.errors import ArtifactRunError, EdgekitError, FidelityError, OutputError, PlanError, StepError, StepSkipped
from edgekit.quality.fidelity import compare, describe, predict
from edgekit.core.fsutil import atomic_write_text
from edgekit.core.plan import Plan
from edgekit.core.profiles import DeviceProfile
from edgekit.core.registry import get_step
from edgekit.core.results import FidelityResult, StepRecord
from edgekit.core.runner_interface import InputSpec
from edgekit.core.shapes import random_feeds
from edgekit.core.steps import StepContext, drop_budget, task_judged

# Steps whose output depends on calibration/evaluation data, so the data's identity is part of their cache key.
DATA_STEPS = {"quantize-ort", "openvino", "tflite", "tensorrt", "prune", "lowrank", "weight-share", "qat"}
CACHE_LAYOUT = 2  # 2: entry.json records the sha256 of every file (main and extras)


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    # resolved here, once: steps run tools in other working directories, so a relative path would break
    return (Path(os.environ.get("EDGEKIT_CACHE_DIR") or user_cache_dir("edgekit")).expanduser() / "artifacts").resolve()


@dataclass
class DataSources:
    """Reference data for a run: calibration and held-out evaluation feeds, task metric, concrete input shapes."""

    inputs: List[InputSpec]
    calib: Optional[Callable[[int], List[Dict[str, Any]]]] = None
    eval: Optional[Callable[[int], List[Dict[str, Any]]]] = None
    task_metric: Optional[Callable[[Any, Any], float]] = None
    task_metric_name: Optional[str] = None
    fingerprint: str = "none"  # identity of calib/eval data (e.g. "zoo:ppocr-det" or a file's sha256)
    user_feed: Optional[Dict[str, Any]] = None  # --inputs FILE.npz: real values for fidelity (first sample) and the benchmark
    eval_count: Optional[int] = None  # size of THE held-out evaluation set (deploy: --fidelity-samples or the zoo model's)
    device_reduce: Optional[List[str]] = None  # per source output: what an on-device check fetches (harness reduce.py)
    _heldout: Optional[List[Dict[str, Any]]] = field(default=None, repr=False)

    def heldout(self, default_count: int = 32) -> Optional[List[Dict[str, Any]]]:
        """The one held-out evaluation set (never calibration data), made once: every step's own search, each
        step's fidelity check, the end-to-end check, the variant search and the on-device check score on it.
        Without an eval_count the first caller's default fixes it (a Pipeline's fidelity_samples)."""
        if self.eval is None:
            return None
        if self._heldout is None:
            if self.eval_count is None:
                self.eval_count = int(default_count)
            self._heldout = list(self.eval(self.eval_count))
        return self._heldout

    def heldout_data(self) -> Optional[Callable[[int], List[Dict[str, Any]]]]:
        """StepContext.eval_data: the held-out set whatever count a step's config asks for (one set decides)."""
        return None if self.eval is None else (lambda _n: self.heldout())


@dataclass
class PipelineResult:
    artifact: Artifact
    records: List[StepRecord]
    artifacts: List[Artifact] = field(default_factory=list)
    produced: List[Tuple[StepRecord, Artifact]] = field(default_factory=list)
    end_to_end: Optional[FidelityResult] = None


def _step_source_hash(step_cls) -> str:
    import inspect

    import importlib

    try:
        h = hashlib.sha256(inspect.getsource(inspect.getmodule(step_cls)).encode())
        for name in getattr(step_cls, "source_modules", ()):
            h.update(inspect.getsource(importlib.import_module(name)).encode())
        return h.hexdigest()[:16]
    except (OSError, TypeError):
        return "unknown"


def _artifact_summary(art: Artifact) -> Dict[str, Any]:
    return {
        "path": str(art.path),
        "format": art.format,
        "precision": art.precision,
        "sha256": art.sha256,
        "size_bytes": art.total_size_bytes if art.format != "pytorch" else art.size_bytes,
    }


class Pipeline:
    """Runs a Plan. `records`/`artifacts` stay readable after a failure so callers can keep partial results."""

    def __init__(
        self,
        plan: Plan,
        profile: DeviceProfile,
        data: DataSources,
        cache_dir: Optional[Path] = None,
        runner: Any = None,
        fidelity_samples: int = 8,
        progress: Optional[Callable[[str], None]] = None,
        use_cache: bool = True,
    ):
        self.plan = plan
        self.profile = profile
        self.data = data
        self.cache_dir = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir()
        self.runner = runner
        self.fidelity_samples = fidelity_samples
        if data.eval is not None and data.eval_count is None:
            data.eval_count = fidelity_samples  # fixed before any step draws the held-out set
        self.progress = progress or (lambda msg: None)
        self.use_cache = use_cache
        self.records: List[StepRecord] = []
        self.artifacts: List[Artifact] = []
        self.produced: List[Tuple[StepRecord, Artifact]] = []  # (record, artifact) of every step that made one
        self._pred_cache: Dict[str, Any] = {}
        self._feeds: Optional[List[Dict[str, Any]]] = None
        self._feeds_kind = "random"
        self._damaged: Optional[str] = None

    # ---- reference data
    def reference_feeds(self) -> List[Dict[str, Any]]:
        if self._feeds is None:
            if self.data.eval is not None:
                self._feeds = list(self.data.heldout(self.fidelity_samples))
                self._feeds_kind = "eval"
            else:
                self._feeds = random_feeds(self.data.inputs, self.fidelity_samples, seed=1234)
                self._feeds_kind = "random"
        return self._feeds

    def _n_ref(self) -> int:
        return (self.data.eval_count or self.fidelity_samples) if self.data.eval is not None else self.fidelity_samples

    def _predict(self, art: Artifact):
        key = art.sha256 + art.format
        if key not in self._pred_cache:
            self._pred_cache[key] = predict(art, self.reference_feeds(), threads=self.profile.threads)
        return self._pred_cache[key]

    def check(self, source: Artifact, produced: Artifact, budget) -> FidelityResult:
        ref = self._predict(source)
        new = self._predict(produced)
        return compare(ref, new, budget, self.data.task_metric, self.data.task_metric_name, data=self._feeds_kind)

    def _end_to_end(self, source: Artifact, final: Artifact) -> FidelityResult:
        """Final artifact vs the original model; cached like a step so a cached re-run stays near-instant."""
        from edgekit.core.steps import FidelityBudget

        key = hashlib.sha256(f"{source.sha256}|{final.sha256}|{self.data.fingerprint}|{self._n_ref()}".encode()).hexdigest()
        path = self.cache_dir / "fidelity" / f"{key}.json"
        if self.use_cache and path.exists():
            try:
                return FidelityResult.model_validate_json(path.read_text())
            except ValueError:
                pass  # unreadable entry: recompute
        res = self.check(source, final, FidelityBudget(min_cosine=0.0))
        atomic_write_text(path, res.model_dump_json())
        return res

    # ---- cache
    def _key(self, source: Artifact, step_cls, config_json: Dict[str, Any]) -> str:
        payload = {
            "layout": CACHE_LAYOUT,
            "edgekit": __version__,
            "source": source.sha256,
            "source_format": source.format,
            "step": step_cls.name,
            "step_code": _step_source_hash(step_cls),
            "config": config_json,
            "tools": step_cls.tool_versions(),
            "profile": self.profile.model_dump(mode="json", exclude={"source_file", "description", "name"}),
            "data": self.data.fingerprint if step_cls.name in DATA_STEPS else None,
            "device": self._device_identity(step_cls, config_json),
            "fidelity_samples": self._n_ref(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def _device_identity(self, step_cls, config_json: Dict[str, Any]) -> Optional[Dict[str, str]]:
        """For steps that build on the device (TensorRT): the device's identity, so no board reuses another's result."""
        probe = getattr(step_cls, "device_identity", None)
        if probe is None:
            return None
        cache = self.__dict__.setdefault("_device_ids", {})
        if step_cls.name not in cache:
            cache[step_cls.name] = probe(self.runner, step_cls.Config(**config_json))
        return cache[step_cls.name]

    def _load_cached(self, entry: Path, step: str) -> Optional[tuple]:
        """A verified entry, or None; a damaged entry is discarded and the user told (a rebuild follows)."""
        from edgekit.core import cache

        try:
            return cache.load(entry)
        except cache.Damaged as bad:
            self._damaged = f"the cached result was damaged ({bad.reason}) and was rebuilt"
            self.progress(f"      cache entry {entry.name[:12]}… of {step} is damaged ({bad.reason}): rebuilding")
            cache.discard(entry)
            return None

    def _store(self, tmp: Path, entry: Path, art: Artifact, record: StepRecord) -> Artifact:
        from edgekit.core import cache

        return cache.store(tmp, entry, art, record, self.cache_dir)

    def _out_of_space(self, exc: BaseException, tmp: Path, step: str, source: Artifact) -> Optional[OutputError]:
        """A clear error when a step failed because the cache's disk is full (tools say e.g. 'basic_ios::clear')."""
        import errno

        if not isinstance(exc, Exception) or isinstance(exc, EdgekitError) and not isinstance(exc, OutputError):
            return None  # Ctrl-C/SIGTERM stay what they are; a step's own clear error is kept
        enospc = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        try:
            free = shutil.disk_usage(tmp).free
        except OSError:
            return None
        need = 2 * max(source.total_size_bytes if source.format != "pytorch" else source.size_bytes, 1 << 20)
        if not enospc and free >= need:
            return None
        return OutputError(
            f"step '{step}' could not write its output: the cache {self.cache_dir} is out of space "
            f"({free / 1e6:.1f} MB free; the source model alone is {source.size_bytes / 1e6:.1f} MB) [{type(exc).__name__}: {str(exc).strip()[:120]}]",
            hint="free some space, or pass --cache-dir (or set EDGEKIT_CACHE_DIR) to a disk with room",
        )

    # ---- run
    def run(self, source: Artifact) -> PipelineResult:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cache directory {self.cache_dir} is not writable: {exc.strerror or exc}", hint="pass --cache-dir DIR or set EDGEKIT_CACHE_DIR") from exc
        from edgekit.core import cache

        swept = cache.sweep(self.cache_dir)
        if swept:
            self.progress(f"removed {swept} temp dir(s) that interrupted runs left in the cache")
        current = source
        self.artifacts = [source]
        total = len(self.plan.steps)
        for i, planned in enumerate(self.plan.steps, 1):
            current = self._run_step(i, total, planned, current)
        e2e = None
        if len(self.artifacts) > 2 and runtimes.host_checkable(current.format) and any(r.fidelity for r in self.records):
            e2e = self._end_to_end(source, current)
        return PipelineResult(artifact=current, records=self.records, artifacts=self.artifacts, produced=self.produced, end_to_end=e2e)

    def _configure(self, planned, current: Artifact):
        """(step class, validated config) for a planned step, checked against the model's format at this point."""
        step_cls = get_step(planned.step)
        try:
            config = step_cls.Config(**planned.config)
        except ValidationError as exc:
            raise PlanError(f"step '{planned.step}': invalid configuration: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
        if current.format not in step_cls.accepts:
            raise PlanError(
                f"step '{planned.step}' accepts {', '.join(step_cls.accepts)}, but the model is {current.format} at this point",
                hint="this is a planning bug; please report it with `edgekit plan` output",
            )
        return step_cls, config

    def _context(self, work_dir: Path) -> StepContext:
        return StepContext(
            work_dir=work_dir,
            profile=self.profile,
            calib_data=self.data.calib,
            eval_data=self.data.heldout_data(),
            task_metric=self.data.task_metric,
            task_metric_name=self.data.task_metric_name,
            runner=self.runner,
            cache_dir=self.cache_dir,
            progress=self.progress,
        )

    def _run_step(self, i: int, total: int, planned, current: Artifact) -> Artifact:
        """One step: served from the cache, or run in a temp dir, judged, stored. Returns the model after it."""
        step_cls, config = self._configure(planned, current)
        config_json = config.model_dump(mode="json")
        key = self._key(current, step_cls, config_json)
        entry = self.cache_dir / key[:2] / key
        self.progress(f"[{i}/{total}] {planned.step}: {planned.reason}")
        self._damaged = None
        cached = self._load_cached(entry, planned.step) if self.use_cache and step_cls.produces != "pytorch" else None
        if cached is not None:
            art, old = cached
            record = old.model_copy(update={"status": "cached", "reason": planned.reason, "duration_s": 0.0, "artifact": _artifact_summary(art)})
            self.records.append(record)
            self.artifacts.append(art)
            self.produced.append((record, art))
            return art
        from edgekit.core import cache

        tmp = cache.new_build_dir(entry)
        ctx = self._context(tmp)
        t0 = time.perf_counter()
        try:
            produced = step_cls().run(current, config, ctx)
        except StepSkipped as skip:
            shutil.rmtree(tmp, ignore_errors=True)
            self.records.append(
                StepRecord(step=planned.step, status="skipped", reason=f"skipped: {skip.reason}", config=config_json, duration_s=time.perf_counter() - t0, notes=ctx.notes)
            )
            self.progress(f"      skipped: {skip.reason}")
            return current
        except BaseException as exc:
            full = self._out_of_space(exc, tmp, planned.step, current)
            shutil.rmtree(tmp, ignore_errors=True)
            if full is not None:
                raise full from exc
            raise
        duration = time.perf_counter() - t0
        try:
            fid = self._judge(planned, step_cls, config, current, produced, ctx, tmp, key)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # the step's output is never kept unchecked (rejected/ already moved it)
            raise
        if self._damaged:
            ctx.note(f"{planned.step}: {self._damaged}")
        record = StepRecord(
            step=planned.step,
            status="ran",
            reason=planned.reason,
            config=config_json,
            duration_s=duration,
            artifact=_artifact_summary(produced),
            fidelity=fid,
            notes=list(ctx.notes),
            details=ctx.report,
        )
        if produced.format == "pytorch":
            final = produced  # an in-memory module is not cached; files the step wrote stay in its work dir
        else:
            final = self._store(tmp, entry, produced, record)
            record = record.model_copy(update={"artifact": _artifact_summary(final)})
        self.records.append(record)
        self.artifacts.append(final)
        self.produced.append((record, final))
        return final

    def _judge(self, planned, step_cls, config, current: Artifact, produced: Artifact, ctx: StepContext, tmp: Path,
               key: str) -> Optional[FidelityResult]:
        """Fidelity of the step's output against its input; a failure moves the output to <cache>/rejected/ and raises."""
        budget = getattr(config, "fidelity", None)
        fp16_drop = getattr(config, "max_drop", None) if getattr(config, "precision", None) == "fp16" else None
        if budget is not None and fp16_drop is not None and "fidelity" not in config.model_fields_set:
            # FP16 is lossy: judged against the user's --max-drop, not the lossless 0.999 default
            budget = drop_budget(fp16_drop, self.data.task_metric is not None)
        elif budget is not None and self.data.task_metric is not None and "fidelity" not in config.model_fields_set:
            budget = task_judged(budget)  # the model's task metric judges; cosine guards gross breakage
        if not step_cls.checkable:
            ctx.note(f"{planned.step}: output is not checked on the host (it only runs on the device)")
            return None
        if budget is None or not budget.check:
            return None
        self.progress(f"      checking fidelity against the {current.format} source")
        try:
            fid = self.check(current, produced, budget)
        except ArtifactRunError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StepError(planned.step, f"its {produced.format} artifact cannot be run for the fidelity check: {exc.message}", hint=exc.hint) from exc
        if not fid.passed:
            rejected = self.cache_dir / "rejected" / key
            shutil.rmtree(rejected, ignore_errors=True)
            rejected.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, rejected)
            raise FidelityError(
                f"step '{planned.step}' produced a model whose outputs differ from its source: "
                + "; ".join(fid.failures)
                + f"\n  measured: {describe(fid)}\n  the rejected artifact is kept at {rejected} for inspection",
                hint="raise the budget (e.g. --max-drop) only if this accuracy is acceptable, or choose another precision/runtime",
            )
        return fid
