"""Options and printing shared by the commands."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from typing import Any, Dict, Optional

import click

from edgekit.core.errors import UsageError


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def profile_option(required: bool = True, default: Optional[str] = None):
    # Click >= 8.3 treats an explicit default=None as a value, so a required option given default=None is never
    # "missing" (the command then ran with profile None: "unknown device profile 'None'"); pass a default only when
    # there is one.
    extra = {} if default is None else {"default": default}
    return click.option(
        "--profile", "-p", "profile", required=required and default is None,
        help="Device profile: a bundled name (edgekit profiles list) or a path to your own YAML.", **extra,
    )


def ssh_options(f):
    """--host and the SSH connection options, collected into kwargs host= and ssh={...}."""

    @click.option("--host", default=None, help="Run on this device over SSH: user@host[:port] or an ~/.ssh/config alias.")
    @click.option("--accept-new-host-key", is_flag=True, help="Trust and record an unknown host key (like OpenSSH accept-new). A changed key is always refused.")
    @click.option("--known-hosts", type=click.Path(dir_okay=False), default=None, help="known_hosts file (default ~/.ssh/known_hosts).")
    @click.option("--identity-file", "-i", type=click.Path(dir_okay=False), default=None, help="Private key file.")
    @click.option("--ssh-config", type=click.Path(dir_okay=False), default=None, help="ssh config file (default ~/.ssh/config).")
    @click.option("--remote-workdir", default=None, help="Work directory on the device (default ~/.cache/edgekit there).")
    @click.option("--remote-python", default=None, help="Python on the device (default: the profile's, usually python3).")
    @click.option("--connect-timeout", type=float, default=None, help="SSH connect timeout in seconds (default: ssh config ConnectTimeout, else 10).")
    @click.option("--serial", default=None, help="Run on this Android device over adb (an `adb devices` serial, or HOST:PORT); default $ANDROID_SERIAL, the profile's, or the only device.")
    @functools.wraps(f)
    def wrapper(*args, host, accept_new_host_key, known_hosts, identity_file, ssh_config, remote_workdir, remote_python, connect_timeout, serial, **kwargs):
        ssh: Dict[str, Any] = {"accept_new_host_key": accept_new_host_key}
        if serial:
            ssh["serial"] = serial
        if connect_timeout is not None:
            ssh["connect_timeout"] = connect_timeout
        if remote_python:
            ssh["python"] = remote_python
        if known_hosts:
            ssh["known_hosts"] = known_hosts
        if identity_file:
            ssh["identity_file"] = identity_file
        if ssh_config:
            ssh["ssh_config"] = ssh_config
        if remote_workdir:
            ssh["workdir"] = remote_workdir
        return f(*args, host=host, ssh=ssh, **kwargs)

    return wrapper


def bench_options(f):
    @click.option("--warmup-runs", type=int, default=10, show_default=True, help="Warm-up inferences (and at least --warmup-seconds).")
    @click.option("--warmup-seconds", type=float, default=1.0, show_default=True)
    @click.option("--min-runs", type=int, default=50, show_default=True, help="Timed inferences: at least this many AND at least --min-seconds.")
    @click.option("--min-seconds", type=float, default=5.0, show_default=True)
    @click.option("--max-seconds", type=float, default=120.0, show_default=True, help="Stop the timed phase here even if --min-runs is not reached (reported).")
    @click.option("--threads", type=int, default=None, help="Inference threads (default: the profile's).")
    @functools.wraps(f)
    def wrapper(*args, warmup_runs, warmup_seconds, min_runs, min_seconds, max_seconds, threads, **kwargs):
        for name, v in (("--warmup-runs", warmup_runs), ("--min-runs", min_runs)):
            if v < 0:
                raise UsageError(f"{name} must be >= 0, got {v}")
        if min_runs < 1:
            raise UsageError("--min-runs must be at least 1")
        for name, v in (("--warmup-seconds", warmup_seconds), ("--min-seconds", min_seconds)):
            if v < 0:
                raise UsageError(f"{name} must be >= 0, got {v:g}")
        if max_seconds <= 0:
            raise UsageError(f"--max-seconds must be > 0, got {max_seconds:g}")
        if threads is not None and threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}", hint="omit it to use the profile's thread count")
        bench = {
            "warmup_runs": warmup_runs,
            "warmup_seconds": warmup_seconds,
            "min_runs": min_runs,
            "min_seconds": min_seconds,
            "max_seconds": max_seconds,
            "threads": threads,
        }
        return f(*args, bench=bench, **kwargs)

    return wrapper


def shape_option(f):
    return click.option("--shape", "shapes", multiple=True, metavar="NAME=1x3x640x640", help="Concrete shape for an input with symbolic dims (repeatable).")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")(f)


# Under --json the process's stdout (fd 1) is pointed at stderr for the whole command, so that nothing a library
# prints (NNCF's progress bars, C++ runtime logs) can reach it; the JSON goes to the real stdout kept here.
_JSON_OUT = None


@contextlib.contextmanager
def stdout_reserved_for_json():
    """Send everything written to stdout (Python or C level) to stderr; print_json writes to the real stdout."""
    global _JSON_OUT
    real_stdout = sys.stdout
    try:
        fd_level = real_stdout.fileno() == 1
    except (AttributeError, ValueError, OSError):
        fd_level = False  # stdout is a Python object (an embedding app, pytest's capture): redirect it alone
    real_stdout.flush()
    saved_fd = None
    if fd_level:
        saved_fd = os.dup(1)
        os.dup2(2, 1)
        _JSON_OUT = os.fdopen(os.dup(saved_fd), "w", encoding="utf-8")
    else:
        _JSON_OUT = real_stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
            if fd_level:
                _JSON_OUT.close()
        finally:
            _JSON_OUT = None
            if saved_fd is not None:
                os.dup2(saved_fd, 1)
                os.close(saved_fd)
            sys.stdout = real_stdout


def print_json(data: Any) -> None:
    """The command's one JSON document, on the real stdout (see stdout_reserved_for_json)."""
    text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str)
    if _JSON_OUT is not None:
        _JSON_OUT.write(text + "\n")
        _JSON_OUT.flush()
    else:
        click.echo(text)


def progress_printer(enabled: bool):
    """Progress lines on stderr (never on stdout, which may carry --json); `with` it for the live status line on a
    terminal (edgekit.cli.live.LiveProgress)."""
    from edgekit.cli.live import LiveProgress

    return LiveProgress(enabled, console(stderr=True) if enabled else None)


def parse_percent(value: Optional[str], option: str, upper: float = 1.0) -> Optional[float]:
    """'0.5%' -> 0.005, '0.005' -> 0.005; must lie in [0, upper)."""
    if value is None:
        return None
    text = value.strip()
    try:
        v = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"{option} '{value}': expected a fraction (0.005) or a percentage (0.5%)") from None
    if not text.endswith("%") and v >= 1.0:
        # '5' meant as 5 % would be read as 500 %: a CI gate that never fails, or a budget refused as over 100 %
        raise UsageError(f"{option} '{value}': a number without % is a fraction ({value} = {v:.0%}); "
                         f"for {value} percent write {text}%")
    if not 0.0 <= v < upper:
        raise UsageError(f"{option} '{value}' must be between 0 and {upper:.0%}")
    return v


def parse_max_drop(value: Optional[str]) -> Optional[float]:
    """'0.5%' -> 0.005, '0.005' -> 0.005."""
    return parse_percent(value, "--max-drop")


def parse_duration(value: Optional[str], option: str = "--train-budget") -> Optional[float]:
    """'5m' -> 300.0, '90s' / '90' -> 90.0, '1h' -> 3600.0."""
    if value is None:
        return None
    text = value.strip().lower()
    unit = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:], None)
    try:
        v = float(text[:-1] if unit else text) * (unit or 1.0)
    except ValueError:
        raise UsageError(f"{option} '{value}': expected a duration such as 300, 90s, 5m or 1h") from None
    if v <= 0:
        raise UsageError(f"{option} '{value}' must be a positive duration")
    return v


def is_tty() -> bool:
    return sys.stdout.isatty()
