"""Small helpers every harness module uses: lazy numpy, progress lines, sysfs/proc reads, commands, model files."""

import json
import os
import subprocess
import sys

from .errors import RuntimeMissing
from .schema import PROGRESS_PREFIX


_np = None  # numpy, imported lazily so `--probe` and error reporting work even without it


def numpy():
    """Import numpy once; missing numpy is a missing-runtime error with the pip hint."""
    global _np
    if _np is None:
        try:
            import numpy as np
        except ImportError as exc:
            raise RuntimeMissing("numpy is not importable with %s (%s)" % (sys.executable, exc),
                                 hint="pip install numpy")
        _np = np
    return _np


def emit_progress(phase, **fields):
    """One machine-readable progress line on stderr."""
    doc = {"phase": phase}
    doc.update(fields)
    try:
        sys.stderr.write(PROGRESS_PREFIX + json.dumps(doc) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed by the parent: progress is optional
        pass


def read_text(path, default=None):
    try:
        with open(path, "r") as fh:
            return fh.read().strip()
    except (OSError, IOError, UnicodeDecodeError):
        return default


def read_number(path):
    text = read_text(path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def proc_status_kib(field):
    """A `VmRSS:   1234 kB` style value from /proc/self/status, in KiB (None off Linux)."""
    text = read_text("/proc/self/status")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            try:
                return int(parts[1])
            except (IndexError, ValueError):
                return None
    return None


def which(name):
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def run_cmd(argv, timeout=5.0):
    """Run a short command; return (rc, stdout, stderr) or (None, '', reason) if it cannot run."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)
    except OSError as exc:
        return None, "", str(exc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, "", "timed out after %.0f s" % timeout
    return proc.returncode, out, err


def model_files(model_path, model_format=None):
    """Files that make up the model on disk (OpenVINO: .xml + .bin; a directory: every file in it)."""
    if os.path.isdir(model_path):
        out = []
        for root, _dirs, files in os.walk(model_path):
            for f in files:
                out.append(os.path.join(root, f))
        return sorted(out)
    files = [model_path]
    if model_path.endswith(".xml") or model_format == "openvino":
        bin_path = os.path.splitext(model_path)[0] + ".bin"
        if os.path.isfile(bin_path):
            files.append(bin_path)
    return files


def model_size_bytes(model_path, model_format=None):
    total = 0
    for f in model_files(model_path, model_format):
        try:
            total += os.path.getsize(f)
        except OSError:
            pass
    return total
