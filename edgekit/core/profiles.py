"""DeviceProfile: data describing a device (schema, YAML loading, `extends:` inheritance, lookup)."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, NamedTuple, Optional, Sequence, Tuple, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.core import runtimes
from edgekit.core.errors import ProfileError, closest

PRECISIONS = ("fp32", "fp16", "int8")
ENERGY_SOURCES = ("none", "tegrastats", "ina3221", "vcgencmd_pmic", "android_battery", "rapl")



def _known_runtime(name: str) -> str:
    """A runtime of edgekit.core.runtimes (read at validation time, so the table is the only list)."""
    if name not in runtimes.RUNTIMES:
        near = closest(name, runtimes.RUNTIMES)
        tip = f"; did you mean {', '.join(near)}?" if near else ""
        raise ValueError(f"Input should be one of {', '.join(repr(r) for r in runtimes.RUNTIMES)}, got {name!r}{tip}")
    return name


Runtime = Annotated[str, AfterValidator(_known_runtime)]
Precision = Literal["fp32", "fp16", "int8"]

# Canonical CPU feature names per ISA. The planner asks `has_feature("vnni")` etc., so a typo in a
# profile ("avx-2") must be an error, not a silently missing feature.
CPU_FEATURES: Dict[str, Tuple[str, ...]] = {
    "x86_64": ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512", "vnni", "avx512_bf16", "avx512_fp16", "amx"),
    "aarch64": ("neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2"),
    "armv7l": ("neon", "fp16", "dotprod"),
}
# /proc/cpuinfo and compiler spellings accepted in YAML and in has_feature(); stored canonically.
FEATURE_ALIASES: Dict[str, str] = {
    "asimd": "neon",
    "asimdhp": "fp16",
    "fphp": "fp16",
    "asimddp": "dotprod",
    "avx512f": "avx512",
    "avx512_vnni": "vnni",
    "avx512vnni": "vnni",
    "avx_vnni": "vnni",
    "avxvnni": "vnni",
    "sse4.2": "sse4_2",
    "amx_int8": "amx",
    "amx_tile": "amx",
}
# fields that the loader sets; a value in a YAML file is replaced (so a `show --json` dump loads back).
LOADER_FIELDS = ("source_file", "source_files")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProfileProblems(ValueError):
    """Cross-field problems of a profile, each with its field path (formatted one per line by the loader)."""

    def __init__(self, problems: List[Tuple[Tuple[Union[str, int], ...], str]]):
        self.problems = problems
        super().__init__("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))


def _dotted(loc: Sequence[Union[str, int]]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _no_duplicates(values: Sequence[Any]) -> List[Any]:
    seen, dups = set(), []
    for v in values:
        if v in seen and v not in dups:
            dups.append(v)
        seen.add(v)
    return dups


class CPU(_Strict):
    """CPU facts that drive quantization defaults (e.g. VNNI decides the INT8 scheme on x86)."""

    model: str
    cores: int = Field(gt=0)
    isa: Literal["x86_64", "aarch64", "armv7l"]
    features: List[str] = Field(
        default_factory=list,
        description="x86_64: sse4_2 avx avx2 fma f16c avx512 vnni avx512_bf16 avx512_fp16 amx; "
        "aarch64: neon fp16 dotprod i8mm bf16 sve sve2 (/proc/cpuinfo spellings such as asimddp are accepted)",
    )
    march: Optional[str] = Field(default=None, description="architecture level, e.g. armv8.2-a or x86-64-v3")
    max_freq_mhz: Optional[int] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _features_known(self) -> "CPU":
        known = CPU_FEATURES[self.isa]
        canon, problems = [], []
        for i, feat in enumerate(self.features):
            name = FEATURE_ALIASES.get(feat.lower(), feat.lower())
            if name not in known:
                other = [isa for isa, feats in CPU_FEATURES.items() if name in feats]
                if other:
                    msg = f"'{feat}' is an {other[0]} feature, but cpu.isa is {self.isa}"
                else:
                    near = closest(name, known)
                    tip = f"did you mean {', '.join(near)}? " if near else ""
                    msg = f"unknown {self.isa} feature '{feat}'; {tip}known: {', '.join(known)}"
                problems.append((("features", i), msg))
            elif name not in canon:
                canon.append(name)
        if problems:
            raise ProfileProblems(problems)
        self.features = canon
        return self


class Accelerator(_Strict):
    """A GPU/NPU/DSP and the precisions it really executes (not what a runtime merely accepts)."""

    type: Literal["gpu", "npu", "dsp"]
    name: str
    precisions: List[Precision] = Field(min_length=1)
    runtimes: List[Runtime] = Field(default_factory=list, description="runtimes that can execute on this accelerator")
    compute_capability: Optional[str] = None
    cores: Optional[int] = Field(default=None, gt=0, description="e.g. CUDA cores")
    tensor_cores: Optional[int] = Field(default=None, ge=0)
    note: Optional[str] = None


class Connection(_Strict):
    type: Literal["local", "ssh", "adb"] = "local"
    user: Optional[str] = None
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    python: str = Field(default="python3", description="Python executable on the device")
    workdir: Optional[str] = None  # default: the remote user's cache dir (~/.cache/edgekit)
    serial: Optional[str] = None  # adb


class Energy(_Strict):
    source: Literal["none", "tegrastats", "ina3221", "vcgencmd_pmic", "android_battery", "rapl"] = "none"
    rails: List[str] = Field(default_factory=list, description="rail names to use (empty = source default)")
    interval_ms: int = Field(default=100, gt=0)
    note: Optional[str] = None


class PowerMode(_Strict):
    name: str
    watts: Optional[float] = Field(default=None, gt=0)
    nvpmodel_id: Optional[int] = Field(default=None, ge=0)
    cpu_online: Optional[int] = Field(default=None, gt=0, description="CPU cores online in this mode")
    cpu_max_mhz: Optional[int] = Field(default=None, gt=0)
    gpu_max_mhz: Optional[float] = Field(default=None, gt=0)
    note: Optional[str] = None


class Software(_Strict):
    """Versions of the device's stack that decide what an artifact may use (e.g. TensorRT engine format, Python syntax)."""

    python: Optional[str] = Field(default=None, description="version of connection.python, e.g. '3.6' (quote it in YAML)")
    jetpack: Optional[str] = None
    l4t: Optional[str] = None
    cuda: Optional[str] = None
    cudnn: Optional[str] = None
    tensorrt: Optional[str] = None
    android_api: Optional[int] = Field(default=None, gt=0)
    note: Optional[str] = None


class Setup(_Strict):
    """What `edgekit setup` installs into the device's venv: pip requirement pins known to work for this device class."""

    pins: List[str] = Field(default_factory=list, description="pip requirements, e.g. 'onnxruntime==1.23.2' (numpy and the runtimes)")
    note: Optional[str] = Field(default=None, description="where the pins were verified")


class DeviceProfile(_Strict):
    """One device. Every field is data; a user's own YAML file is validated exactly like a bundled one."""

    name: str = Field(min_length=1)
    description: str = ""
    extends: Optional[str] = None
    os: str
    cpu: CPU
    memory_mb: int = Field(gt=0)
    accelerators: List[Accelerator] = Field(default_factory=list)
    runtimes: List[Runtime] = Field(min_length=1, description="in order of preference")
    precisions: List[Precision] = Field(min_length=1, description="everything some listed runtime can run here")
    default_precision: Literal["fp32", "fp16", "int8", "auto"] = "fp32"
    threads: int = Field(gt=0)
    connection: Connection = Field(default_factory=Connection)
    energy: Energy = Field(default_factory=Energy)
    thermal_zones: List[str] = Field(
        default_factory=list,
        description="/sys/class/thermal zone `type` names (e.g. CPU-therm), zone directory names (thermal_zone0) "
        "or absolute paths of files holding a temperature",
    )
    throttle_command: Optional[str] = Field(default=None, description="command reporting firmware throttling, e.g. vcgencmd get_throttled")
    power_modes: List[PowerMode] = Field(default_factory=list)
    power_mode: Optional[str] = Field(default=None, description="the power mode this profile expects (one of power_modes)")
    software: Software = Field(default_factory=Software)
    setup: Setup = Field(default_factory=Setup)
    source_file: Optional[str] = Field(default=None, description="where this profile was loaded from (set by the loader)")
    source_files: List[str] = Field(default_factory=list, description="this file, then each `extends:` ancestor (set by the loader)")

    @field_validator("precisions")
    @classmethod
    def _fp32_first_class(cls, v: List[str]) -> List[str]:
        if "fp32" not in v:
            raise ValueError("must include fp32 (every runtime here can run fp32)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DeviceProfile":
        problems: List[Tuple[Tuple[Union[str, int], ...], str]] = []
        for field in ("runtimes", "precisions", "thermal_zones"):
            dups = _no_duplicates(getattr(self, field))
            if dups:
                problems.append(((field,), f"listed twice: {', '.join(dups)}"))
        if self.default_precision != "auto" and self.default_precision not in self.precisions:
            problems.append((("default_precision",), f"'{self.default_precision}' is not in precisions ({', '.join(self.precisions)})"))
        if self.threads > self.cpu.cores:
            problems.append((("threads",), f"{self.threads} is more than cpu.cores ({self.cpu.cores})"))
        for i, acc in enumerate(self.accelerators):
            for j, rt in enumerate(acc.runtimes):
                if rt not in self.runtimes:
                    problems.append(((("accelerators", i, "runtimes", j)), f"'{rt}' is not in runtimes ({', '.join(self.runtimes)})"))
            for j, prec in enumerate(acc.precisions):
                if prec not in self.precisions:
                    problems.append(((("accelerators", i, "precisions", j)), f"'{prec}' is not in precisions ({', '.join(self.precisions)})"))
        names = [m.name for m in self.power_modes]
        dups = _no_duplicates(names)
        if dups:
            problems.append((("power_modes",), f"mode names listed twice: {', '.join(dups)}"))
        if self.power_mode is not None and self.power_mode not in names:
            near = closest(self.power_mode, names)
            tip = f"did you mean {', '.join(near)}? " if near else ""
            problems.append((("power_mode",), f"'{self.power_mode}' is not one of power_modes; {tip}known: {', '.join(names) or '(none)'}"))
        if problems:
            raise ProfileProblems(problems)
        return self

    def precisions_for(self, runtime: Optional[str] = None) -> List[str]:
        """Precisions `runtime` can run here: TensorRT (precisions_from_accelerator) only what its accelerator executes,
        others the profile's list."""
        rt = runtimes.RUNTIMES.get(runtime) if runtime is not None else None
        if rt is not None and rt.precisions_from_accelerator:
            out: List[str] = []
            for acc in self.accelerators_for(runtime):
                out += [p for p in acc.precisions if p not in out]
            return out
        if runtime is not None and runtime not in self.runtimes:
            return []
        return list(self.precisions)

    def default_precision_for(self, runtime: str) -> str:
        """default_precision is chosen for the first runtime (e.g. FP16 for TensorRT on a Jetson GPU); another runtime
        keeps it only if that runtime's accelerator executes it, else gets fp32 (e.g. ORT on the Nano's A57 CPU)."""
        if self.default_precision == "auto" or runtime == self.runtimes[0]:
            return self.default_precision
        if any(self.default_precision in a.precisions for a in self.accelerators_for(runtime)):
            return self.default_precision
        return "fp32"

    def supports_precision(self, precision: str, runtime: Optional[str] = None) -> bool:
        return precision in self.precisions_for(runtime)

    def accelerators_for(self, runtime: str) -> List[Accelerator]:
        return [a for a in self.accelerators if runtime in a.runtimes]

    @property
    def arch(self) -> str:
        return self.cpu.isa

    def has_feature(self, feature: str) -> bool:
        """True if the CPU has `feature` (canonical or /proc/cpuinfo spelling, e.g. 'vnni' or 'avx512_vnni')."""
        name = FEATURE_ALIASES.get(feature.lower(), feature.lower())
        return name in self.cpu.features

    def power_mode_named(self, name: str) -> PowerMode:
        for mode in self.power_modes:
            if mode.name == name:
                return mode
        raise ProfileError(
            f"profile '{self.name}': no power mode '{name}'",
            hint="known power modes: " + (", ".join(m.name for m in self.power_modes) or "(none)"),
        )


# ---------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one, hiding typos)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False):
    seen: Dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool, type(None))):
            continue  # unhashable keys are reported by the constructor below
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first at line {seen[key]})", key_node.start_mark
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Source(NamedTuple):
    path: Path
    node: Optional[yaml.Node]


def _read_yaml(path: Path) -> Tuple[Dict[str, Any], Optional[yaml.Node]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ProfileError(f"{path}: cannot read profile ({why})", hint="check the path") from exc
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(f"{path}: malformed YAML{where}: {problem}", hint="fix the YAML syntax") from exc
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ProfileError(
            f"{path}: a profile must be a YAML mapping of fields, got {got}",
            hint=f"see {bundled_dir() / 'x86-cpu.yaml'} for the shape",
        )
    for key in LOADER_FIELDS:
        data.pop(key, None)
    return data, node


def _merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Deep-merge dicts; lists and scalars in `override` replace those in `base`."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------- lookup


def bundled_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("edgekit.device_profiles")))


def bundled_names() -> List[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.yaml"))


def _looks_like_path(name_or_path: str) -> bool:
    return name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or "\\" in name_or_path


def _resolve_path(name_or_path: str) -> Path:
    """A path if it looks like one (or exists as a file); otherwise a bundled name (bundled wins for bare names)."""
    if _looks_like_path(name_or_path):
        p = Path(name_or_path).expanduser()
        if not p.is_file():
            what = "is a directory, not a profile file" if p.is_dir() else "profile file not found"
            raise ProfileError(f"{p}: {what}", hint="check the path, or use a bundled name: " + ", ".join(bundled_names()))
        return p
    cand = bundled_dir() / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    if Path(name_or_path).is_file():
        return Path(name_or_path)
    near = closest(name_or_path, bundled_names())
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise ProfileError(
        f"unknown device profile '{name_or_path}'",
        hint=hint + "bundled profiles: " + ", ".join(bundled_names()) + "; or pass a path to your own YAML file",
    )


def _extends_line(path: Path) -> Optional[int]:
    """1-based line of the `extends:` key in a profile file, for error messages."""
    try:
        for n, text in enumerate(path.read_text().splitlines(), 1):
            if text.lstrip().startswith("extends:"):
                return n
    except OSError:
        pass
    return None


def _raw_resolved(name_or_path: str, seen: List[Path]) -> Tuple[Dict[str, Any], List[_Source]]:
    """The merged raw mapping of a profile and its `extends:` chain (this file first)."""
    path = _resolve_path(name_or_path)
    key = path.resolve()
    if key in seen:
        chain = " -> ".join(str(p) for p in seen + [key])
        raise ProfileError(f"{seen[0]}: extends: cycle ({chain})", hint="remove the circular extends")
    data, node = _read_yaml(path)
    sources = [_Source(path, node)]
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str) or not parent.strip():
            raise ProfileError(
                f"{path}: extends: must be a profile name or a path to a YAML file, got {parent!r}",
                hint="e.g. extends: jetson-orin-nano",
            )
        ppath = parent
        if _looks_like_path(parent):
            # a relative path in extends is relative to the file that says it
            p = Path(parent).expanduser()
            ppath = str(p if p.is_absolute() else path.parent / p)
        try:
            base, parent_sources = _raw_resolved(ppath, seen + [key])
        except ProfileError as err:
            if err.message.startswith(str(path)):
                raise
            where = f"{path}" + (f" (extends: on line {_extends_line(path)})" if _extends_line(path) else "")
            raise ProfileError(f"{where}: {err.message}", hint=err.hint) from None
        base.pop("name", None)
        base.pop("description", None)
        data = _merge(base, data)
        sources += parent_sources
    return data, sources


# ---------------------------------------------------------------- error formatting


def _node_at(node: Optional[yaml.Node], loc: Sequence[Union[str, int]]) -> Tuple[Optional[yaml.Node], Optional[yaml.Node], int]:
    """(key node, value node) at `loc` in a composed YAML tree, and how many parts of `loc` matched."""
    key: Optional[yaml.Node] = None
    depth = 0
    for part in loc:
        found = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    found = (k, v)
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            found = (None, node.value[part])
        if found is None:
            break
        (key, node), depth = found, depth + 1
    return key, node, depth


def _where(sources: List[_Source], loc: Sequence[Union[str, int]]) -> str:
    """' (line N)' in the loaded file, or where in an `extends:` ancestor the value was inherited from."""
    if not loc:
        return ""
    for i, src in enumerate(sources):
        key, value, depth = _node_at(src.node, loc)
        if value is not None and depth == len(loc):
            line = (key or value).start_mark.line + 1
            return f" (line {line})" if i == 0 else f" (inherited from {src.path}, line {line})"
    return ""


def _raw_text(sources: List[_Source], loc: Sequence[Union[str, int]]) -> Optional[str]:
    """The scalar exactly as written in the YAML (3.10 stays '3.10', not the float 3.1)."""
    for src in sources:
        _, value, depth = _node_at(src.node, loc)
        if isinstance(value, yaml.ScalarNode) and depth == len(loc):
            return value.value
    return None


def _fields_at(loc: Sequence[Union[str, int]]) -> List[str]:
    """Field names of the model reached by `loc` from DeviceProfile (for 'did you mean' on unknown keys)."""
    model: Any = DeviceProfile
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        ann = field.annotation
        while typing.get_origin(ann) in (list, Union):  # List[X] and Optional[X] -> X
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if not args:
                break
            ann = args[0]
        model = ann
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f for f in model.model_fields if f not in LOADER_FIELDS]
    return []


def _problem(err: Dict[str, Any], sources: List[_Source]) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        loc = err["loc"]
        known = _fields_at(loc[:-1])
        near = closest(str(loc[-1]), known) if known else []
        tip = f"; did you mean {', '.join(near)}?" if near else ""
        return f"unknown field{tip}" + (f" (known: {', '.join(known)})" if known and not near else "")
    if kind == "missing":
        return "required field is missing"
    if kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool):
        raw = _raw_text(sources, err["loc"]) or str(value)
        return f"{msg}, got the number {raw}; write it in quotes: '{raw}'"
    if kind.endswith("_type") or kind.startswith(("int_", "float_", "bool_")):
        return f"{msg}, got {type(value).__name__} {value!r}"
    if kind == "literal_error":
        return f"{msg}, got {value!r}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


def _format_validation(path: Path, exc: ValidationError, sources: Optional[List[_Source]] = None) -> str:
    """One line per problem: `<file>: <field.path>: <problem>` (plus where in the YAML it is)."""
    sources = sources or [_Source(path, None)]
    lines = []
    for err in exc.errors():
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, ProfileProblems):
            for sub_loc, msg in ctx_error.problems:
                loc = tuple(err["loc"]) + tuple(sub_loc)
                lines.append(f"{path}: {_dotted(loc)}: {msg}{_where(sources, loc)}")
            continue
        loc = tuple(err["loc"])
        lines.append(f"{path}: {_dotted(loc)}: {_problem(err, sources)}{_where(sources, loc)}")
    return "\n".join(lines)


# ---------------------------------------------------------------- public API


def load_profile(name_or_path: Union[str, Path]) -> DeviceProfile:
    """Load a bundled profile by name or a user's YAML by path, applying `extends:`; errors name file and field."""
    data, sources = _raw_resolved(str(name_or_path), [])
    path = sources[0].path
    data["source_file"] = str(path)
    data["source_files"] = [str(s.path) for s in sources]
    try:
        # strict: YAML gives real types, so "4" for an int or 3.10 for a version string is a mistake to report
        return DeviceProfile.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ProfileError(
            _format_validation(path, exc, sources),
            hint=f"fix the fields above; see {bundled_dir() / 'x86-cpu.yaml'} for the shape",
        ) from exc


def load_bundled() -> List[DeviceProfile]:
    """Every bundled profile, resolved (raises on the first broken one)."""
    return [load_profile(n) for n in bundled_names()]


def profile_as_dict(profile: DeviceProfile) -> Dict[str, Any]:
    return profile.model_dump(mode="json")


def profile_as_json(profile: DeviceProfile) -> str:
    return json.dumps(profile_as_dict(profile), indent=2)
