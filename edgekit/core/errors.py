"""Every user-facing failure is an EdgekitError carrying what happened, where, and what to do next."""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Sequence


class EdgekitError(Exception):
    """Base class: the CLI prints `str(err)` without a traceback and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class EdgekitNote(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one `note:` line."""


class UsageError(EdgekitError):
    """Bad command-line input that is not about a particular file."""

    exit_code = 2


class ModelLoadError(EdgekitError):
    """A model file is missing, unreadable, truncated or of an unknown format."""


class ProfileError(EdgekitError):
    """A device profile is unknown, malformed or fails validation."""


class PlanError(EdgekitError):
    """The requested combination of model, profile, runtime and precision cannot be planned."""


class MissingDependencyError(EdgekitError):
    """An optional dependency is not installed; the hint names the extra that provides it."""

    def __init__(self, module: str, extra: str, what: str):
        super().__init__(
            f"{what} needs the Python package '{module}', which is not installed in this environment.",
            hint=f"pip install 'edgekit[{extra}]'",
        )
        self.module = module
        self.extra = extra


class StepError(EdgekitError):
    """A conversion step failed; names the step, the node/op if known and the tool's own message."""

    def __init__(
        self,
        step: str,
        message: str,
        hint: Optional[str] = None,
        node: Optional[str] = None,
        op: Optional[str] = None,
        tool_message: Optional[str] = None,
    ):
        parts = [f"step '{step}' failed: {message}"]
        if node or op:
            parts.append(f"  at node {node or '?'} (op {op or '?'})")
        if tool_message:
            tail = tool_message.strip().splitlines()[-15:]
            parts.append("  tool said:\n" + "\n".join("    " + line for line in tail))
        super().__init__("\n".join(parts), hint=hint)
        self.step = step
        self.node = node
        self.op = op
        self.tool_message = tool_message


class StepSkipped(Exception):
    """Raised by a step that cannot apply; the pipeline records 'skipped: <reason>' and passes the input on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NoVariantError(EdgekitError):
    """A variant search measured every candidate and none met the budget; `variants` holds their rows (report.json
    form) so the caller can keep them: minutes or hours of measurements are not lost with the error."""

    def __init__(self, message: str, hint: Optional[str] = None, variants: Optional[List[Dict[str, Any]]] = None,
                 search: Optional[Dict[str, Any]] = None):
        super().__init__(message, hint=hint)
        self.variants = list(variants or [])
        self.search = dict(search or {})


class FidelityError(EdgekitError):
    """A produced artifact's outputs differ from its source beyond the step's tolerance."""


class ArtifactRunError(EdgekitError):
    """The host's runtime refused to load or run an artifact (e.g. OpenVINO's CPU plug-in and a dynamic-rank If)."""


class CalibrationError(EdgekitError):
    """Calibration or evaluation data is missing or does not match the model's inputs."""


class OutputError(EdgekitError):
    """The output directory or cache cannot be written."""


class RunnerError(EdgekitError):
    """A benchmark run failed on the device; carries the command, exit code and stderr tail."""

    def __init__(
        self,
        message: str,
        hint: Optional[str] = None,
        host: Optional[str] = None,
        command: Optional[str] = None,
        exit_code: Optional[int] = None,
        stderr_tail: Optional[str] = None,
    ):
        parts = [message if not host else f"{host}: {message}"]
        if command:
            parts.append(f"  command: {command}")
        if exit_code is not None:
            parts.append(f"  exit code: {exit_code}")
        if stderr_tail:
            tail = stderr_tail.strip().splitlines()[-20:]
            parts.append("  stderr (last lines):\n" + "\n".join("    " + line for line in tail))
        super().__init__("\n".join(parts), hint=hint)
        self.host = host
        self.command = command
        self.remote_exit_code = exit_code
        self.stderr_tail = stderr_tail


class ConnectionFailed(RunnerError):
    """The device could not be reached or authenticated."""


class HostKeyError(RunnerError):
    """The device's SSH host key is unknown or has changed."""


def require(module: str, extra: str, what: str):
    """Import an optional dependency or raise MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # only a missing module, not a broken one, maps to the extra
        if exc.name and module.split(".")[0] != exc.name.split(".")[0]:
            raise
        raise MissingDependencyError(module, extra, what) from exc


def closest(name: str, choices: Sequence[str], n: int = 3) -> list[str]:
    """Names from `choices` closest to `name`, for 'did you mean' suggestions."""
    import difflib

    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.4)
