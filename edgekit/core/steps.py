"""Step: one conversion (export, simplify, quantize, compile...) from an Artifact to a new Artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type

from pydantic import BaseModel, ConfigDict, Field

from edgekit.core.artifact import Artifact
from edgekit.core.profiles import DeviceProfile


class FidelityBudget(BaseModel):
    """Tolerances a produced artifact must meet against its source on reference inputs."""

    model_config = ConfigDict(extra="forbid")
    min_cosine: float = 0.999
    max_abs_error: Optional[float] = None
    max_rel_error: Optional[float] = None
    min_argmax_agreement: Optional[float] = None
    min_task_score: Optional[float] = None  # task metric (zoo models) if available, e.g. 0.99 line agreement
    check: bool = True


# With a task metric (zoo models, user metrics) the task score judges a step and cosine only guards against
# gross breakage: near-tied softmax outputs flip under small numeric changes (OpenVINO's bf16 execution of PP-OCR
# rec moved one CTC frame from blank to the next character: cosine 0.95 on that line, decoded text identical).
TASK_COSINE_FLOOR = 0.9
TASK_LOSSLESS_SCORE = 0.999


def task_judged(budget: FidelityBudget) -> FidelityBudget:
    """A step's DEFAULT budget when a task metric exists: task score >= TASK_LOSSLESS_SCORE (unless the step already
    sets one, e.g. INT8 under --max-drop) and cosine >= min(its own floor, TASK_COSINE_FLOOR)."""
    return budget.model_copy(update={
        "min_cosine": min(budget.min_cosine, TASK_COSINE_FLOOR),
        "min_task_score": TASK_LOSSLESS_SCORE if budget.min_task_score is None else budget.min_task_score,
    })


def drop_budget(max_drop: float, has_task: bool) -> FidelityBudget:
    """The user's accuracy budget (--max-drop) as a FidelityBudget: the task score (if the model has one) may drop
    by max_drop, cosine guarding only gross breakage; without a task metric the output cosine may drop by max_drop."""
    if has_task:
        return FidelityBudget(min_cosine=min(TASK_COSINE_FLOOR, 1.0 - max_drop), min_task_score=1.0 - max_drop)
    return FidelityBudget(min_cosine=1.0 - max_drop)


def lossy_budget_default(data: Any, lossy: bool) -> Any:
    """For a lossy (INT8) step config given as a dict without `fidelity`: check the task score against 1 - max_drop and
    keep cosine only as a floor (min(0.9, 1 - max_drop)) against gross breakage. FP32's 0.999 raw-output cosine
    would reject every INT8 model (MiniLM dynamic INT8: raw cosine 0.997 at pooled cosine 0.998). An explicit
    `fidelity` always wins; non-lossy configs are returned unchanged."""
    if isinstance(data, dict) and "fidelity" not in data and lossy:
        md = data.get("max_drop")
        floor = 0.9 if md is None else min(0.9, 1.0 - float(md))
        data = {**data, "fidelity": FidelityBudget(min_cosine=floor, min_task_score=None if md is None else 1.0 - float(md))}
    return data


class StepConfig(BaseModel):
    """Base for every step's typed config; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")
    fidelity: FidelityBudget = Field(default_factory=FidelityBudget)


@dataclass
class StepContext:
    """What a step may use: a fresh work dir for its outputs, the profile, data, a runner, and a notes list."""

    work_dir: Path
    profile: DeviceProfile
    # Callables returning lists of feeds {input_name: np.ndarray}; None when no data is available.
    calib_data: Optional[Callable[[int], List[Dict[str, Any]]]] = None
    eval_data: Optional[Callable[[int], List[Dict[str, Any]]]] = None
    # Task metric from the zoo (or user): (reference outputs, candidate outputs) -> score in [0, 1].
    task_metric: Optional[Callable[[List[List[Any]], List[List[Any]]], float]] = None
    task_metric_name: Optional[str] = None
    runner: Any = None  # a connected Runner, for steps that build on the device (TensorRT)
    cache_dir: Optional[Path] = None
    progress: Optional[Callable[[str], None]] = None
    notes: List[str] = field(default_factory=list)
    # Extra records a step wants in the report (e.g. variants tried by a quantization search).
    report: Dict[str, Any] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.progress:
            self.progress(text)


class Step:
    """Subclass per converter module. Heavy libraries are imported inside `run`, never at module top."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    accepts: ClassVar[Tuple[str, ...]]
    produces: ClassVar[str]
    Config: ClassVar[Type[StepConfig]] = StepConfig
    # (python module, edgekit extra) pairs needed by `run`; used by `doctor` and for clear missing-extra errors.
    requires: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    # other modules whose code decides this step's output (hashed into the cache key with the step's own module)
    source_modules: ClassVar[Tuple[str, ...]] = ()
    # Set False for steps whose result cannot be compared in-process (e.g. an on-device TensorRT engine).
    checkable: ClassVar[bool] = True

    def run(self, artifact: Artifact, config: StepConfig, ctx: StepContext) -> Artifact:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def availability(cls) -> Tuple[bool, str]:
        """(usable here?, detail) without importing heavy modules; steps with tool envs override this."""
        import importlib.util

        missing = [(m, e) for m, e in cls.requires if importlib.util.find_spec(m.split(".")[0]) is None]
        if missing:
            return False, "missing " + ", ".join(m for m, _ in missing) + f" (pip install 'edgekit[{missing[0][1]}]')"
        versions = cls.tool_versions()
        return True, ", ".join(f"{k} {v}" for k, v in versions.items()) or "ok"

    @classmethod
    def tool_versions(cls) -> Dict[str, str]:
        """Versions of the tools this step uses; part of the cache key."""
        from importlib import metadata

        out: Dict[str, str] = {}
        for module, _extra in cls.requires:
            dist = module.split(".")[0].replace("_", "-")
            for cand in (dist, module.split(".")[0]):
                try:
                    out[cand] = metadata.version(cand)
                    break
                except metadata.PackageNotFoundError:
                    continue
        return out


class PlannedStep(BaseModel):
    """A step chosen by the planner: its name, config, and why it was chosen."""

    model_config = ConfigDict(extra="forbid")
    step: str
    config: Dict[str, Any] = Field(default_factory=dict)
    reason: str
