"""DeviceProfile: data describing a device (schema, YAML loading, `extends:` inheritance, lookup)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekit.errors import ProfileError, closest

RUNTIMES = ("onnxruntime", "openvino", "tflite", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
ENERGY_SOURCES = ("none", "tegrastats", "ina3221", "vcgencmd_pmic", "android_battery", "rapl")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CPU(_Strict):
    """CPU facts that drive quantization defaults (e.g. VNNI decides the INT8 scheme on x86)."""

    model: str
    cores: int = Field(gt=0)
    isa: Literal["x86_64", "aarch64", "armv7l"]
    features: List[str] = Field(default_factory=list, description="e.g. avx2, avx512, vnni, neon, dotprod, fp16, i8mm")
    max_freq_mhz: Optional[int] = None


class Accelerator(_Strict):
    type: Literal["gpu", "npu", "dsp"]
    name: str
    precisions: List[Literal["fp32", "fp16", "int8"]]
    runtimes: List[str] = Field(default_factory=list)
    compute_capability: Optional[str] = None
    note: Optional[str] = None


class Connection(_Strict):
    type: Literal["local", "ssh", "adb"] = "local"
    user: Optional[str] = None
    port: Optional[int] = None
    python: str = "python3"
    workdir: Optional[str] = None  # default: the remote user's cache dir (~/.cache/edgekit)
    serial: Optional[str] = None  # adb


class Energy(_Strict):
    source: Literal["none", "tegrastats", "ina3221", "vcgencmd_pmic", "android_battery", "rapl"] = "none"
    rails: List[str] = Field(default_factory=list, description="rail names to use (empty = source default)")
    interval_ms: int = Field(default=100, gt=0)
    note: Optional[str] = None


class PowerMode(_Strict):
    name: str
    watts: Optional[float] = None
    nvpmodel_id: Optional[int] = None
    note: Optional[str] = None


class DeviceProfile(_Strict):
    """One device. Every field is data; a user's own YAML file is validated exactly like a bundled one."""

    name: str
    description: str = ""
    extends: Optional[str] = None
    os: str
    cpu: CPU
    memory_mb: int = Field(gt=0)
    accelerators: List[Accelerator] = Field(default_factory=list)
    runtimes: List[Literal["onnxruntime", "openvino", "tflite", "tensorrt"]] = Field(min_length=1)
    precisions: List[Literal["fp32", "fp16", "int8"]] = Field(min_length=1)
    default_precision: Literal["fp32", "fp16", "int8", "auto"] = "fp32"
    threads: int = Field(gt=0)
    connection: Connection = Field(default_factory=Connection)
    energy: Energy = Field(default_factory=Energy)
    thermal_zones: List[str] = Field(default_factory=list, description="sysfs paths or zone type names")
    power_modes: List[PowerMode] = Field(default_factory=list)
    source_file: Optional[str] = Field(default=None, description="where this profile was loaded from (set by the loader)")

    @field_validator("precisions")
    @classmethod
    def _fp32_first_class(cls, v: List[str]) -> List[str]:
        if "fp32" not in v:
            raise ValueError("must include fp32 (every runtime here can run fp32)")
        return v

    def supports_precision(self, precision: str, runtime: Optional[str] = None) -> bool:
        if runtime == "tensorrt":
            return any(precision in a.precisions for a in self.accelerators if "tensorrt" in a.runtimes)
        return precision in self.precisions

    @property
    def arch(self) -> str:
        return self.cpu.isa

    def has_feature(self, feature: str) -> bool:
        return feature in self.cpu.features


def bundled_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("edgekit.device_profiles")))


def bundled_names() -> List[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.yaml"))


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror or exc})", hint="check the path") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(f"{path}: malformed YAML{where}: {problem}", hint="fix the YAML syntax") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a YAML mapping of fields, got {type(data).__name__}", hint="see device_profiles/x86-cpu.yaml for the shape")
    return data


def _merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Deep-merge dicts; lists and scalars in `override` replace those in `base`."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _resolve_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path or p.exists():
        if not p.exists():
            raise ProfileError(f"{p}: profile file not found", hint="check the path, or use a bundled name: " + ", ".join(bundled_names()))
        return p
    cand = bundled_dir() / f"{name_or_path}.yaml"
    if not cand.exists():
        near = closest(name_or_path, bundled_names())
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ProfileError(
            f"unknown device profile '{name_or_path}'",
            hint=hint + "bundled profiles: " + ", ".join(bundled_names()) + "; or pass a path to your own YAML",
        )
    return cand


def _raw_resolved(name_or_path: str, seen: List[str]) -> tuple[Dict[str, Any], Path]:
    path = _resolve_path(name_or_path)
    key = str(path.resolve())
    if key in seen:
        raise ProfileError(f"{path}: extends: cycle ({' -> '.join(seen + [key])})", hint="remove the circular extends")
    data = _read_yaml(path)
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise ProfileError(f"{path}: extends: must be a profile name or path", hint="e.g. extends: jetson-orin-nano")
        # a relative path in extends is relative to the child file
        ppath = parent
        if ("/" in parent or parent.endswith((".yaml", ".yml"))) and not Path(parent).is_absolute():
            ppath = str(path.parent / parent)
        base, _ = _raw_resolved(ppath, seen + [key])
        base.pop("name", None)
        base.pop("description", None)
        data = _merge(base, data)
    return data, path


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{path}: {loc}: {msg}")
    return "\n".join(lines)


def load_profile(name_or_path: Union[str, Path]) -> DeviceProfile:
    """Load a bundled profile by name or a user's YAML by path, applying `extends:`."""
    data, path = _raw_resolved(str(name_or_path), [])
    data["source_file"] = str(path)
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_format_validation(path, exc), hint="fix the fields above; see device_profiles/x86-cpu.yaml for the shape") from exc


def profile_as_json(profile: DeviceProfile) -> str:
    return json.dumps(profile.model_dump(mode="json"), indent=2)
