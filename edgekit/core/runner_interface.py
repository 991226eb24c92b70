"""Runner interface and HarnessSpec: how a benchmark is described and run on a device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field

from edgekit.core.artifact import Artifact
from edgekit.core.registry import harness_module
from edgekit.core.results import BenchmarkResult


class InputSpec(BaseModel):
    """A concrete input for the harness: symbolic dims already resolved to ints."""

    model_config = ConfigDict(extra="forbid")
    name: str
    shape: List[int]
    dtype: str
    low: Optional[float] = None  # range for random data (ints: [low, high))
    high: Optional[float] = None


# Defaults come from the harness's wire schema (plain data; reached through the registry like all of runners/).
_WIRE = harness_module("schema").SPEC_FIELDS


def _default(name: str) -> Any:
    return _WIRE[name][1]


class HarnessSpec(BaseModel):
    """The JSON document the harness reads (fields and defaults: edgekit.runners.harness.schema). Device paths."""

    model_config = ConfigDict(extra="forbid")
    model_path: str
    model_format: str  # onnx | tflite | openvino | tensorrt
    runtime: str  # an adapter of the harness (edgekit.core.runtimes: harness_adapter)
    sha256: Optional[str] = _default("sha256")
    precision: Optional[str] = _default("precision")
    threads: int = _default("threads")
    inputs: List[InputSpec] = Field(default_factory=list)
    inputs_file: Optional[str] = _default("inputs_file")  # .npz on the device, keyed by input name
    seed: int = _default("seed")
    warmup_runs: int = _default("warmup_runs")
    warmup_seconds: float = _default("warmup_seconds")
    min_runs: int = _default("min_runs")
    min_seconds: float = _default("min_seconds")
    max_seconds: float = _default("max_seconds")
    energy_source: str = _default("energy_source")
    energy_rails: List[str] = Field(default_factory=list)
    energy_interval_ms: int = _default("energy_interval_ms")
    energy_options: Dict[str, Any] = Field(default_factory=dict)  # e.g. sysfs_root / command overrides for a sensor
    idle_seconds: float = _default("idle_seconds")
    thermal_zones: List[str] = Field(default_factory=list)
    runtime_options: Dict[str, Any] = Field(default_factory=dict)
    eval_inputs_file: Optional[str] = _default("eval_inputs_file")  # evaluation mode: held-out feeds (.npz, device path)
    eval_outputs_file: Optional[str] = _default("eval_outputs_file")  # where the harness writes their outputs
    eval_reduce: Optional[List[str]] = _default("eval_reduce")  # per output (device order): e.g. "topk:2", "gt:0.3"


class Runner(ABC):
    """Local, SSH and ADB runners share one harness and one result schema. Use as a context manager."""

    name: str = "runner"

    def __enter__(self) -> "Runner":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def push(self, artifact: Artifact) -> str:
        """Make the artifact (and its extra files) available on the device; return the device path of its main file."""

    @abstractmethod
    def run_harness(self, spec: HarnessSpec) -> BenchmarkResult: ...

    @abstractmethod
    def probe(self) -> Dict[str, Any]:
        """Arch, OS, Python, runtimes and versions, energy sensors, thermal zones, governor (for `doctor`)."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    def target(self) -> str:
        return self.name
