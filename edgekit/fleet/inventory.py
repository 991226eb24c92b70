"""fleet.yaml and sweep.yaml: pydantic schemas, loading with errors that name the file and the field."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.core.errors import EdgekitError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PRECISIONS = ("fp32", "fp16", "int8")


class FleetError(EdgekitError):
    """A fleet or sweep file that cannot be used as written."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BoardLimits(_M):
    """Per-board limits: how long one benchmark may take before the board counts as hung."""

    cell_timeout_s: float = Field(900.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)


class Board(_M):
    """One device on the shelf: where it is (ssh host or adb serial) and which profile describes it."""

    name: str
    host: Optional[str] = None
    serial: Optional[str] = None
    profile: str
    python: Optional[str] = None
    workdir: Optional[str] = None
    labels: Dict[str, str] = Field(default_factory=dict)
    limits: BoardLimits = Field(default_factory=BoardLimits)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 64 characters)")
        return v

    @model_validator(mode="after")
    def _where(self) -> "Board":
        if bool(self.host) == bool(self.serial):
            raise ValueError("give exactly one of `host:` (ssh alias or user@host[:port]) or `serial:` (adb)")
        return self

    @property
    def identity(self) -> str:
        """What the board lock is keyed by: the same physical board under two names still shares one lock."""
        return f"adb:{self.serial}" if self.serial else f"ssh:{self.host}"


class Fleet(_M):
    boards: List[Board] = Field(min_length=1)
    source_file: Optional[str] = None

    @model_validator(mode="after")
    def _unique(self) -> "Fleet":
        seen = set()
        for i, b in enumerate(self.boards):
            if b.name in seen:
                raise ValueError(f"boards[{i}].name: '{b.name}' is used twice; board names must be unique")
            seen.add(b.name)
        return self


class BenchSettings(_M):
    """The harness settings of every benchmark cell (short by default: a sweep is a survey)."""

    warmup_runs: int = Field(5, ge=0)
    warmup_seconds: float = Field(0.5, ge=0)
    min_runs: int = Field(20, ge=1)
    min_seconds: float = Field(2.0, ge=0)
    max_seconds: float = Field(60.0, gt=0)
    threads: Optional[int] = Field(None, ge=1)


class Retries(_M):
    """A lost board: how many connection attempts per cell, with exponential backoff between them."""

    attempts: int = Field(3, ge=1, le=20)
    backoff_s: float = Field(1.0, ge=0)
    lock_timeout_s: float = Field(3600.0, ge=0)


class Budgets(_M):
    """What a recommended variant must meet (max_drop is the accuracy budget, the others are optional ceilings)."""

    latency_ms: Optional[float] = Field(None, gt=0)
    energy_mj: Optional[float] = Field(None, gt=0)
    size_mb: Optional[float] = Field(None, gt=0)


class SweepSpec(_M):
    models: List[str] = Field(min_length=1)
    fleet: Optional[Union[str, Fleet]] = None
    precisions: Union[List[str], str] = Field(default_factory=lambda: ["fp32"])
    runtimes: Optional[List[str]] = None
    max_drop: Optional[Union[str, float]] = None
    budgets: Budgets = Field(default_factory=Budgets)
    bench: BenchSettings = Field(default_factory=BenchSettings)
    retries: Retries = Field(default_factory=Retries)
    conversion_workers: Optional[int] = Field(None, ge=1)
    shapes: Dict[str, List[int]] = Field(default_factory=dict)

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, v):
        if isinstance(v, str):
            if v != "auto":
                v = [v]
            else:
                return v
        bad = [p for p in v if p not in PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision {bad[0]!r}; use a list of {', '.join(PRECISIONS)} or `auto`")
        if not v:
            raise ValueError("name at least one precision, or `auto`")
        return list(dict.fromkeys(v))

    @field_validator("max_drop")
    @classmethod
    def _drop(cls, v):
        if v is None:
            return v
        text = str(v).strip()
        try:
            f = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"{v!r}: expected a fraction (0.01) or a percentage (1%)") from None
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{v!r} must be between 0 and 100%")
        return f

    @property
    def max_drop_fraction(self) -> float:
        return 0.01 if self.max_drop is None else float(self.max_drop)


def _loc(err: Dict[str, Any]) -> str:
    out = ""
    for part in err["loc"]:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("list[", "str", "Fleet", "union[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _read(path: Path, what: str) -> Dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FleetError(f"{what} {path} not found", hint="check the path (relative paths in a sweep file are relative to that file)") from None
    except OSError as exc:
        raise FleetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FleetError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})", hint="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise FleetError(f"{path}: expected a mapping at the top level, got {type(data).__name__}", hint=f"see the {what} example in the README")
    return data


def _validate(model, data: Dict[str, Any], path: Path, what: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise FleetError(f"{path}: {_loc(err)}: {msg}{more}", hint=f"fix that field; see the {what} example in the README") from None


def load_fleet(path: Union[str, Path]) -> Fleet:
    """Read fleet.yaml; every board's profile must load (bundled name or a path relative to the fleet file)."""
    path = Path(path)
    fleet = _validate(Fleet, _read(path, "fleet file"), path, "fleet.yaml")
    boards = []
    for i, b in enumerate(fleet.boards):
        boards.append(b.model_copy(update={"profile": _profile_ref(b.profile, path.parent, f"{path}: boards[{i}].profile")}))
    return fleet.model_copy(update={"boards": boards, "source_file": str(path.resolve())})


def _profile_ref(ref: str, base: Path, where: str) -> str:
    """A profile name stays a name; a path becomes absolute (relative to the file naming it); both must load."""
    from edgekit.core.profiles import load_profile

    cand = base / ref
    if ("/" in ref or ref.endswith((".yaml", ".yml"))) and cand.exists():
        ref = str(cand.resolve())
    try:
        load_profile(ref)
    except EdgekitError as exc:
        raise FleetError(f"{where}: {exc.message}", hint=exc.hint) from None
    return ref


def load_sweep(path: Union[str, Path]) -> SweepSpec:
    """Read sweep.yaml and the fleet it names; the result carries the loaded Fleet."""
    path = Path(path)
    data = _read(path, "sweep file")
    spec = _validate(SweepSpec, data, path, "sweep.yaml")
    if spec.fleet is None:
        raise FleetError(f"{path}: fleet: missing; name the fleet file (fleet: fleet.yaml) or give `boards:` inline", hint="see the sweep.yaml example in the README")
    fleet = spec.fleet
    if isinstance(fleet, str):
        fleet = load_fleet(path.parent / fleet)
    return spec.model_copy(update={"fleet": fleet})


def profile_key(ref: str) -> str:
    """A short stable identity of a profile reference (bundled name, or a file by its content)."""
    p = Path(ref)
    if p.is_file():
        return f"{p.stem}-{hashlib.sha256(p.read_bytes()).hexdigest()[:8]}"
    return ref
