"""BenchmarkResult and DeployReport: the versioned schemas of everything edgekit measures and writes."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field


def now_iso() -> str:
    """UTC time of a result or report, to the second (ISO 8601)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


SCHEMA_VERSION = 1


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyStats(_M):
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float


class Timing(_M):
    load_ms: float
    first_inference_ms: float
    warmup_runs: int
    warmup_s: float
    runs: int
    duration_s: float
    samples_ms: List[float]
    stats: LatencyStats
    throughput_ips: float
    note: Optional[str] = None  # "emulated: not representative" when the device is emulated (qemu-user)
    timed_region: Optional[str] = None  # what one timed call does for this runtime (the adapter says; same scope for all)


class Memory(_M):
    peak_rss_mb: Optional[float] = None
    rss_before_load_mb: Optional[float] = None
    rss_after_load_mb: Optional[float] = None
    source: str = "unavailable"


class Energy(_M):
    """Measured energy over exactly the timed window; never estimated. `available=False` says why."""

    available: bool
    reason: Optional[str] = None
    source: Optional[str] = None
    rails: List[str] = Field(default_factory=list)
    idle_power_w: Optional[float] = None
    avg_power_w: Optional[float] = None
    energy_per_inference_mj: Optional[float] = None
    energy_above_idle_per_inference_mj: Optional[float] = None
    samples: int = 0
    idle_samples: int = 0
    sample_rate_hz: Optional[float] = None
    window_s: Optional[float] = None
    # sampled power [[t_s, watts], ...] with t relative to the timed window's start (idle samples are negative);
    # idle_window = [start, end] of the idle baseline on the same clock. Empty for counter-only sources.
    trace: List[List[float]] = Field(default_factory=list)
    idle_window: Optional[List[float]] = None


class ThermalSnapshot(_M):
    temps_c: Dict[str, float] = Field(default_factory=dict)
    cpu_freq_mhz: Dict[str, float] = Field(default_factory=dict)
    governor: Optional[str] = None
    throttled_raw: Optional[str] = None  # e.g. Raspberry Pi `vcgencmd get_throttled`


class Thermal(_M):
    before: ThermalSnapshot = Field(default_factory=ThermalSnapshot)
    after: ThermalSnapshot = Field(default_factory=ThermalSnapshot)
    throttled: Optional[bool] = None  # None = cannot tell on this device
    notes: List[str] = Field(default_factory=list)


class DeviceInfo(_M):
    hostname: str
    arch: str
    os: str
    kernel: str
    python: str
    cpu_model: Optional[str] = None
    cores: Optional[int] = None
    memory_mb: Optional[int] = None
    device_model: Optional[str] = None  # /proc/device-tree/model on ARM boards
    emulated: bool = False  # qemu-user or similar: timings are the emulator's, not the device's
    emulation: Optional[str] = None  # why the harness concluded so


class RuntimeInfo(_M):
    name: str
    version: str
    threads: int
    providers: List[str] = Field(default_factory=list)
    options: Dict[str, Any] = Field(default_factory=dict)


class ModelInfo(_M):
    path: str
    format: str
    sha256: Optional[str] = None
    size_bytes: int
    precision: Optional[str] = None


class BenchmarkResult(_M):
    """What the harness prints (as JSON) plus where it ran; identical for local, SSH and ADB runners."""

    schema_version: int = SCHEMA_VERSION
    created: str
    runner: str = "local"
    host: Optional[str] = None
    model: ModelInfo
    runtime: RuntimeInfo
    device: DeviceInfo
    inputs: List[Dict[str, Any]] = Field(default_factory=list)  # name, shape, dtype, source (random/file)
    timing: Timing
    memory: Memory
    energy: Energy
    thermal: Thermal
    warnings: List[str] = Field(default_factory=list)
    evaluation: Optional[Dict[str, Any]] = None  # evaluation mode: samples, outputs_file (device path), seconds
    native: Dict[str, Any] = Field(default_factory=dict)  # the runtime's own tool on the same artifact, e.g. {"trtexec": {gpu_compute_median_ms...}}


class FidelityResult(_M):
    """A produced artifact compared with its source on the same reference inputs."""

    samples: int
    cosine_min: float
    cosine_mean: float
    max_abs_error: float
    max_rel_error: float
    argmax_agreement: Optional[float] = None
    task_metric: Optional[str] = None
    task_score: Optional[float] = None
    passed: bool
    failures: List[str] = Field(default_factory=list)
    data: str = "random"  # "eval" when the zoo/user evaluation set was used
    interval: Optional[Dict[str, float]] = None  # 95 % bootstrap interval of the score over samples: lo, hi, level
    where: str = "host"  # "host": run in-process here; "device": outputs computed by the harness on the target
    device: Optional[str] = None  # where="device": the machine that ran it, e.g. "aarch64 (emulated)"
    reduced: Optional[List[str]] = None  # where="device": what was kept of each output there (reference reduced alike)


class StepRecord(_M):
    step: str
    status: str  # ran | cached | skipped
    reason: str
    config: Dict[str, Any] = Field(default_factory=dict)
    duration_s: float = 0.0
    artifact: Optional[Dict[str, Any]] = None  # path, format, precision, sha256, size_bytes
    fidelity: Optional[FidelityResult] = None
    notes: List[str] = Field(default_factory=list)
    details: Dict[str, Any] = Field(default_factory=dict)


class DeployReport(_M):
    schema_version: int = SCHEMA_VERSION
    status: str = "ok"  # ok | failed
    error: Optional[str] = None
    edgekit_version: str
    created: str
    command: str
    model: str
    profile: str
    runtime: str
    precision: str
    target: str  # "local" or "ssh:user@host:port"
    plan: List[Dict[str, Any]]
    plan_notes: List[str] = Field(default_factory=list)
    steps: List[StepRecord]
    artifact: Dict[str, Any]
    fidelity_end_to_end: Optional[FidelityResult] = None
    fidelity_device: Optional[FidelityResult] = None  # the final artifact's outputs computed on the device, scored here
    fidelity_check: Optional[Dict[str, Any]] = None  # host and device rows side by side and which one decided
    variants: List[Dict[str, Any]] = Field(default_factory=list)  # --precision auto: every candidate tried
    search: Optional[Dict[str, Any]] = None  # the variant search's budget: {"max_drop", "budget", "score"}
    benchmark: Optional[BenchmarkResult] = None
    timings_s: Dict[str, float] = Field(default_factory=dict)
