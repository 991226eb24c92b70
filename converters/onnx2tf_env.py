"""The isolated, pinned Python env that runs onnx2tf: its pins clash with edgekit's stack, so it lives apart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from edgekit.core.errors import EdgekitError
from edgekit.core.fsutil import atomic_write_text

ONNX2TF_VERSION = "1.29.16"  # 1.29.17..1.29.24 fail on PP-OCRv4 det (p2o.Add.4: "Output tensors of a Functional model must be the output of a TensorFlow Layer"); 1.29.16 converts it
# onnx2tf 1.29.x hard-pins its own stack (numpy 1.26.4, tensorflow 2.19.0, tf-keras 2.19.0, onnx 1.19.0,
# onnxruntime 1.23.0, protobuf 4.25.5, onnx-graphsurgeon 0.5.8, simple-onnx-processing-tools (sng4onnx),
# psutil 5.9.5, ai-edge-litert 2.1.0, onnxsim 0.4.36); pinning onnx2tf pins them all.
PINS: List[str] = [f"onnx2tf=={ONNX2TF_VERSION}"]
ENV_VAR = "EDGEKIT_ONNX2TF_ENV"
REPORTED = ("onnx2tf", "tensorflow", "tf-keras", "numpy", "onnx", "onnxruntime", "protobuf", "ai-edge-litert", "onnxsim")
READY = "ready.json"
APPROX = "~2.6 GB and ~4 minutes"
CREATING = "creating the onnx2tf tool env"  # said even by a quiet variant build: minutes and GBs the user must see


class ToolEnvError(EdgekitError):
    """The onnx2tf tool environment is missing, broken, or could not be created."""


class ToolEnvStatus(BaseModel):
    """What `edgekit doctor` shows about the onnx2tf env."""

    model_config = ConfigDict(extra="forbid")
    path: str
    source: str  # "env-var" (EDGEKIT_ONNX2TF_ENV) or "cache" (created by edgekit)
    exists: bool
    ready: bool
    python: Optional[str] = None
    versions: Dict[str, str] = Field(default_factory=dict)
    size_bytes: Optional[int] = None
    detail: str = ""


def default_root() -> Path:
    """<user cache dir>/edgekit/tools/onnx2tf-<version>."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgekit")) / "tools" / f"onnx2tf-{ONNX2TF_VERSION}"


def _python_in(root: Path) -> Path:
    for cand in (root / "venv" / "bin" / "python", root / "bin" / "python", root / "venv" / "Scripts" / "python.exe"):
        if cand.exists():
            return cand
    return root / "venv" / "bin" / "python"


def _chosen_root() -> tuple[Path, str]:
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser(), "env-var"
    return default_root(), "cache"


def _probe_versions(python: Path, timeout: float = 60.0) -> Dict[str, str]:
    """Installed versions inside the env (read from package metadata; importing tensorflow would take ~7 s)."""
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for d in {list(REPORTED)!r}:\n"
        "    try:\n        out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError:\n        pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolEnvError(f"cannot run the onnx2tf env's Python {python}: {exc}", hint=f"delete it and let edgekit recreate it, or unset {ENV_VAR}") from exc
    if proc.returncode != 0:
        raise ToolEnvError(f"the onnx2tf env's Python {python} failed: {proc.stderr.strip()[-500:]}", hint="delete the env directory; edgekit recreates it on next use")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _dir_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                continue
    return total


def status(measure_size: bool = True) -> ToolEnvStatus:
    """Does the env exist, is it complete, which versions does it hold, how big is it (for `edgekit doctor`)."""
    root, source = _chosen_root()
    python = _python_in(root)
    st = ToolEnvStatus(path=str(root), source=source, exists=root.exists(), ready=False)
    if not root.exists():
        st.detail = f"not created yet; edgekit creates it on first TFLite conversion ({APPROX}), or set {ENV_VAR} to an existing env"
        return st
    st.python = str(python)
    marker = root / READY
    try:
        if source == "cache" and marker.exists():
            st.versions = json.loads(marker.read_text())["versions"]
            st.ready = st.versions.get("onnx2tf") == ONNX2TF_VERSION
        elif python.exists():
            st.versions = _probe_versions(python)
            st.ready = "onnx2tf" in st.versions
    except (ToolEnvError, ValueError, KeyError, OSError) as exc:
        st.detail = f"unreadable: {exc}"
    if not st.ready and not st.detail:
        st.detail = "incomplete (creation interrupted?); it is recreated on next use" if source == "cache" else "onnx2tf is not installed in it"
    elif st.ready:
        st.detail = f"onnx2tf {st.versions.get('onnx2tf')}, tensorflow {st.versions.get('tensorflow')}"
    if measure_size:
        st.size_bytes = _dir_size(root)
    return st


class _Lock:
    """Exclusive lock file so two edgekit processes never build the same env at once."""

    def __init__(self, path: Path, wait_s: float):
        self.path = path
        self.wait_s = wait_s
        self.fd: Optional[int] = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(str(self.path), os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise ToolEnvError(
                        f"another edgekit process has been creating the onnx2tf env for over {self.wait_s:.0f} s (lock {self.path})",
                        hint="wait for it to finish, or remove the lock file if no edgekit process is running",
                    ) from None
                time.sleep(2.0)

    def __exit__(self, *exc):
        import fcntl

        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def ensure_env(progress: Optional[Callable[[str], None]] = None, timeout_s: float = 1800.0) -> Path:
    """Path of a Python that has onnx2tf; creates the pinned env on first use (atomic: a ready marker is written last)."""
    root, source = _chosen_root()
    if source == "env-var":
        python = _python_in(root)
        if not python.exists():
            raise ToolEnvError(f"{ENV_VAR}={root}: no Python found there (looked for venv/bin/python and bin/python)", hint=f"point {ENV_VAR} at a venv that has onnx2tf=={ONNX2TF_VERSION}, or unset it")
        versions = _probe_versions(python)
        if "onnx2tf" not in versions:
            raise ToolEnvError(f"{ENV_VAR}={root}: onnx2tf is not installed in that env", hint=f"{python} -m pip install 'onnx2tf=={ONNX2TF_VERSION}'")
        return python
    marker = root / READY
    if marker.exists():
        return _python_in(root)
    with _Lock(root.parent / f"onnx2tf-{ONNX2TF_VERSION}.lock", wait_s=timeout_s):
        if marker.exists():  # another process finished while we waited
            return _python_in(root)
        python = _python_in(root)
        if python.exists():
            # A previous run may have installed everything and died before the marker: adopt it if complete.
            try:
                versions = _probe_versions(python)
            except ToolEnvError:
                versions = {}
            if versions.get("onnx2tf") == ONNX2TF_VERSION and "tensorflow" in versions:
                _write_marker(root, versions)
                return python
        if root.exists():
            shutil.rmtree(root)
        _create(root, progress, timeout_s)
        python = _python_in(root)
        versions = _probe_versions(python)
        if versions.get("onnx2tf") != ONNX2TF_VERSION:
            raise ToolEnvError(f"onnx2tf env at {root} was installed but holds onnx2tf {versions.get('onnx2tf')}", hint="delete it and retry")
        _write_marker(root, versions)
        return python


def _write_marker(root: Path, versions: Dict[str, str]) -> None:
    atomic_write_text(root / READY, json.dumps({"versions": versions, "pins": PINS, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))


def _create(root: Path, progress: Optional[Callable[[str], None]], timeout_s: float) -> None:
    if progress:
        progress(f"{CREATING} at {root} (one time, {APPROX})")
    root.mkdir(parents=True, exist_ok=True)
    log = root / "install.log"
    steps = [
        [sys.executable, "-m", "venv", str(root / "venv")],
        [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *PINS],
    ]
    deadline = time.monotonic() + timeout_s
    with open(log, "w") as out:
        for argv in steps:
            try:
                proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise ToolEnvError(f"creating the onnx2tf env timed out after {timeout_s:.0f} s ({' '.join(argv[:4])} ...); log: {log}", hint="check network access to PyPI; it is retried on next use") from None
            if proc.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-12:]
                raise ToolEnvError(
                    f"creating the onnx2tf env failed (exit {proc.returncode}) running: {' '.join(argv)}\n  " + "\n  ".join(tail),
                    hint=f"full log: {log}; fix the cause (PyPI access, disk space) and retry, or set {ENV_VAR} to an existing env",
                )


# Settings that make the conversion independent of the host CPU's ISA. TensorFlow 2.19's oneDNN kernels pick
# code paths by CPU: on a Cascade Lake Xeon under KVM PP-OCR det died with SIGILL ("could not create a primitive
# descriptor for a convolution forward propagation primitive") and TF_ENABLE_ONEDNN_OPTS=0 made the same
# conversion succeed (NOTES.md). ONEDNN_MAX_CPU_ISA (DNNL_ in older oneDNN) caps what oneDNN still runs at AVX2,
# which every x86-64-v3 CPU has; TensorFlow's Eigen kernels then do the work on every machine alike.
ISA_INDEPENDENT_ENV: Dict[str, str] = {
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "CUDA_VISIBLE_DEVICES": "-1",
}


def tool_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment onnx2tf runs in: the caller's, minus PYTHONPATH, plus the ISA-independent settings."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONPATH", None)  # never let edgekit's own site-packages leak into the pinned env
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(ISA_INDEPENDENT_ENV)  # forced: a user's TF_ENABLE_ONEDNN_OPTS=1 would bring the crash back
    return env


def killed_by(returncode: Optional[int]) -> Optional[str]:
    """'SIGILL (signal 4)' when a subprocess died from a signal (negative return code), else None."""
    import signal

    if returncode is None or returncode >= 0:
        return None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "signal"
    return f"{name} (signal {-returncode})"


SIGNAL_HINTS = {
    "SIGILL": "an instruction this CPU does not have, usually in TensorFlow's oneDNN/XLA kernels",
    "SIGKILL": "often the kernel's out-of-memory killer (check `dmesg`)",
    "SIGSEGV": "a crash inside TensorFlow or onnx2tf",
    "SIGBUS": "a crash inside TensorFlow or onnx2tf (or a full /dev/shm)",
}


# Outputs of `-oiqt` that edgekit never uses, each a full calibrated conversion (PP-OCR det: ~30 s each for the
# full-integer model, ~60 s each for the two int16-activation ones, on one core). onnx2tf has no flag to leave them
# out, so the driver below makes TFLite's converter refuse them with a RuntimeError, which onnx2tf catches for each
# of these outputs ("... tflite output failed") and goes on; the outputs before them are the same bytes either way.
# The float16 model (~9 s for PP-OCR det) is not guarded by onnx2tf, so for it the converter returns no bytes and
# onnx2tf writes an empty file, which the caller removes (edgekit.converters.tflite).
SKIPPABLE = ("int16", "full_integer", "float16")
_DRIVER = r"""
import os, sys
skip = set(filter(None, os.environ.get("EDGEKIT_ONNX2TF_SKIP", "").split(",")))
if skip:
    import tensorflow as tf
    from tensorflow.lite.python import lite as _lite
    def guarded(original):
        def convert(self):
            if "float16" in skip and tf.float16 in list(self.target_spec.supported_types or ()):
                return b""
            ops = set(self.target_spec.supported_ops or ())
            if "int16" in skip and tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 in ops:
                raise RuntimeError("edgekit: int16-activation model not wanted, not built")
            if "full_integer" in skip and self.inference_input_type in (tf.int8, tf.uint8):
                raise RuntimeError("edgekit: full-integer (int8 IO) model not wanted, not built")
            return original(self)
        return convert
    # onnx2tf quantizes through from_saved_model (TFLiteSavedModelConverterV2) and from_concrete_functions
    for _cls in (_lite.TFLiteConverterV2, _lite.TFLiteSavedModelConverterV2, _lite.TFLiteKerasModelConverterV2):
        _cls.convert = guarded(_cls.convert)
sys.argv[0] = "onnx2tf"
from onnx2tf import main
main()
"""


def run_onnx2tf(python: Path, args: List[str], cwd: Path, timeout_s: float, skip: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """Run onnx2tf with ARGS in `cwd` with a timeout (TimeoutExpired is left to the caller to report); `skip` names
    -oiqt outputs (SKIPPABLE) not to build."""
    bad = [s for s in skip if s not in SKIPPABLE]
    if bad:
        raise ValueError(f"cannot skip {bad}; known: {SKIPPABLE}")
    env = tool_environment()
    env["EDGEKIT_ONNX2TF_SKIP"] = ",".join(skip)
    return subprocess.run([str(python), "-c", _DRIVER, *args], cwd=str(cwd), capture_output=True, text=True, timeout=timeout_s, env=env)
