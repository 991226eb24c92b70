"""The host side of the harness contract, shared by every runner: stderr stream lines, the one mapping from
harness exit codes / EDGEKIT-ERROR reports to typed host errors, and result parsing.

Reads only the wire schema (edgekit.runners.harness.schema: plain data); never imports device code."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

from edgekit.core.errors import RunnerError
from edgekit.core.results import BenchmarkResult
from edgekit.runners.harness.schema import (ERROR_PREFIX, EXIT_INTERRUPTED, EXIT_MODEL_LOAD, EXIT_RUNTIME_MISSING,
                                            EXIT_SPEC, PROGRESS_PREFIX)

# a process killed by SIGKILL (the OOM killer's signal): 128 + 9 through a shell, -9 from Popen
KILLED_CODES = (137, -9)


class CommandKilled(RunnerError):
    """The device-side command was killed (SIGKILL, usually the out-of-memory killer) or timed out and was stopped."""


def stream_line(line: str) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """("progress" | "error", its JSON) for a harness stderr line; (None, None) for any other (or garbled) line."""
    for kind, prefix in (("progress", PROGRESS_PREFIX), ("error", ERROR_PREFIX)):
        if line.startswith(prefix):
            try:
                return kind, json.loads(line[len(prefix):])
            except ValueError:
                return None, None
    return None, None


def harness_error(rc: int, command: str, stderr_tail: str, info: Optional[Dict[str, Any]], *, phase: str = "benchmark",
                  host: Optional[str] = None, python: str = "python3", where: str = "on the device") -> RunnerError:
    """A typed RunnerError for a failed harness run: the harness's own report (kind/message/hint) when it gave one,
    else what its exit code means. `where` says where it ran ("on the device", "here")."""
    info = info or {}
    kind, message, hint = info.get("kind"), info.get("message"), info.get("hint")
    kw = dict(host=host, command=command, exit_code=rc, stderr_tail=stderr_tail)
    if rc in KILLED_CODES or rc == -1:
        err = CommandKilled(
            f"the {phase} was killed (probably out of memory)" if rc != -1 else f"the {phase} was terminated by a signal",
            hint="the device ran out of memory or something killed the process: check `dmesg | grep -i oom` on the device, "
            "use a smaller model or input, or close other programs", **kw)
    elif rc < 0:
        err = RunnerError(f"the {phase} was killed by signal {-rc}", hint=hint or "see the stderr lines above", **kw)
    elif rc == 127 and not info:
        err = RunnerError(f"Python interpreter '{python}' not found {where}", **kw,
                          hint="install Python 3.6+ on the device, or set connection.python in the device profile")
    elif rc == EXIT_RUNTIME_MISSING:
        err = RunnerError(f"runtime missing {where}: {message or 'the harness could not import the runtime'}",
                          hint=hint or f"install it {where}, e.g. `{python} -m pip install onnxruntime`", **kw)
    elif rc == EXIT_SPEC:
        err = RunnerError(f"the harness rejected its run spec: {message or 'bad spec'}",
                          hint=hint or "the benchmark spec or its inputs do not match the model; see the message above", **kw)
    elif rc == EXIT_MODEL_LOAD:
        err = RunnerError(f"the model failed to load {where}: {message or ''}".rstrip(": "),
                          hint=hint or "check the model file (re-export it, or verify its sha256) and that the runtime "
                          "version supports this model/opset", **kw)
    elif rc == EXIT_INTERRUPTED:
        err = RunnerError(f"the {phase} was interrupted" + (f": {message}" if message else ""), hint=hint, **kw)
    elif info:
        err = RunnerError(f"the {phase} failed ({kind or 'error'}): {message or ''}".rstrip(": "),
                          hint=hint or "see the stderr lines above", **kw)
    else:
        err = RunnerError(f"the harness exited with code {rc} without an error report", hint="see the stderr lines above", **kw)
    err.kind = kind or "error"  # type: ignore[attr-defined]
    return err


def parse_result(stdout: str, command: str, exit_code: int, stderr_tail: str, runner: str,
                 host: Optional[str], shown_host: Optional[str] = None) -> BenchmarkResult:
    """Validate the harness's stdout JSON (its last line) as a BenchmarkResult and stamp runner/host.
    `shown_host` names the host in error messages."""
    text = stdout.strip()
    try:
        doc = json.loads(text.splitlines()[-1] if text else "")
    except ValueError as exc:
        raise RunnerError(
            f"the harness printed no JSON result ({exc})", host=shown_host, command=command,
            exit_code=exit_code, stderr_tail=stderr_tail + ("\nstdout: " + text[-2000:] if text else ""),
            hint="the harness and this edgekit may be out of sync; reinstall edgekit and re-run",
        ) from exc
    doc["runner"] = runner
    doc["host"] = host
    try:
        return BenchmarkResult.model_validate(doc)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise RunnerError(
            f"the harness result does not match the BenchmarkResult schema: {str(exc)[:300]}",
            host=shown_host, command=command, exit_code=exit_code, stderr_tail=stderr_tail,
            hint="the harness and edgekit versions differ; reinstall edgekit and re-run",
        ) from exc
