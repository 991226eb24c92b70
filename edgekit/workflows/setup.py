"""`edgekit setup`: a venv on the device (under the remote work dir) with the runtimes and numpy the profile pins.

The pins live in the profile (`setup.pins`). Without a wheelhouse, pip on the device fetches them; with
`wheelhouse=DIR`, pip on this machine downloads the wheels for the device's platform and Python into DIR,
they are uploaded, and pip on the device installs them with --no-index. The venv is complete only once its
marker (venv/edgekit-setup.json) is written; a venv without it is a half-finished set-up and is rebuilt.
The SSH runner uses `<workdir>/venv/bin/python` automatically when that marker exists.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edgekit.core.errors import EdgekitError, UsageError
from edgekit.core.profiles import DeviceProfile, load_profile

VENV_DIR = "venv"
MARKER = "edgekit-setup.json"
PY36_PIP = "pip==21.3.1"  # the venv's own pip 18 on Python 3.6 cannot see manylinux2014 wheels
MIN_FREE_BYTES = 400 * 1024 * 1024
# pip distribution name -> module that must import for the runtime to count as installed
IMPORTS = {"numpy": "numpy", "onnxruntime": "onnxruntime", "onnxruntime-gpu": "onnxruntime", "ai-edge-litert": "ai_edge_litert.interpreter",
           "tflite-runtime": "tflite_runtime.interpreter", "openvino": "openvino"}


class SetupError(EdgekitError):
    """`edgekit setup` could not prepare the device (no pip, no space, no wheel for its Python/arch, ...)."""


# Device-side helper (Python 3.6 syntax, stdlib only): inspect / reset / verify+mark the venv in the work dir.
SETUP_TOOL = r'''
import sys, os, json, platform, shutil, time
req = json.loads(sys.stdin.read())
wd = os.path.realpath(os.path.expanduser(req["workdir"]))
venv = os.path.join(wd, "venv")
marker = os.path.join(venv, "edgekit-setup.json")
out = {"python": list(sys.version_info[:3]), "machine": platform.machine(), "libc": list(platform.libc_ver()),
       "executable": sys.executable, "workdir": wd}
act = req["action"]
if act == "inspect":
    try:
        import venv as _v
        out["has_venv"] = True
    except ImportError:
        out["has_venv"] = False
    try:
        import ensurepip
        out["has_ensurepip"] = True
    except ImportError:
        out["has_ensurepip"] = False
    os.makedirs(wd, exist_ok=True)
    st = os.statvfs(wd)
    out["free_bytes"] = st.f_bavail * st.f_frsize
    out["venv_exists"] = os.path.isdir(venv)
    if os.path.isfile(marker):
        with open(marker) as f:
            out["marker"] = json.load(f)
elif act == "reset":
    if os.path.isdir(venv):
        shutil.rmtree(venv)
    out["reset"] = True
elif act == "verify":
    try:
        from importlib import metadata as md
        version = md.version
    except ImportError:
        import pkg_resources
        version = lambda n: pkg_resources.get_distribution(n).version
    import importlib
    installed, problems = {}, {}
    for dist, mod in req["imports"]:
        try:
            installed[dist] = version(dist)
            importlib.import_module(mod)
        except Exception as exc:
            problems[dist] = "%s: %s" % (exc.__class__.__name__, exc)
    out["installed"] = installed
    out["problems"] = problems
    if not problems and req.get("mark"):
        rec = dict(req["mark"], installed=installed, python=out["python"], machine=out["machine"],
                   at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        tmp = marker + ".part"
        with open(tmp, "w") as f:
            json.dump(rec, f, indent=1, sort_keys=True)
        os.rename(tmp, marker)
        out["marker"] = rec
print(json.dumps(out))
'''


def _dist_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _platform_tags(machine: str, libc: List[str]) -> List[str]:
    """manylinux tags a glibc device accepts, newest first (pip download needs them spelled out)."""
    if not libc or libc[0] != "glibc":
        raise SetupError(f"the device's C library is {libc[0] if libc and libc[0] else 'unknown'}, not glibc: PyPI's manylinux wheels do not run there",
                         hint="install the runtimes with the device's own package manager, or use a glibc-based OS image")
    major, minor = (int(x) for x in libc[1].split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{machine}"]


class _Remote:
    """The SSH runner plus the setup helper; every command quoted, every failure a SetupError naming the host."""

    def __init__(self, runner, say):
        self.runner, self.say = runner, say

    @property
    def host(self) -> str:
        return self.runner.display

    def tool(self, python: str, request: Dict[str, Any]) -> Dict[str, Any]:
        cmd = f"{shlex.quote(python)} -c {shlex.quote(SETUP_TOOL)}"
        rc, out, err = self.runner._exec(cmd, "setup " + request["action"], stdin=json.dumps(request).encode(), timeout=600)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SetupError(f"{self.host}: the setup helper ({request['action']}) failed under {python} (exit {rc}): {_tail(err or out)}",
                             hint="check that python3 works on the device (ssh HOST python3 -V)") from None

    def run(self, argv: List[str], phase: str, timeout: float = 3600) -> tuple:
        command = " ".join(shlex.quote(a) for a in argv)
        rc, out, err = self.runner._exec(command, phase, timeout=timeout)
        return rc, out, err, command


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def _pip_failure(host: str, where: str, text: str, pyver: str, machine: str) -> SetupError:
    """Turn pip's stderr into one clear error."""
    m = re.search(r"No matching distribution found for (\S+)", text)
    if m:
        return SetupError(f"{host}: no wheel of {m.group(1)} exists for Python {pyver} on {machine} ({where})",
                          hint="pin a version that ships a wheel for this Python/arch in the profile's setup.pins "
                          "(check with: pip download --only-binary=:all: --platform manylinux2014_" + machine + f" --python-version {pyver} PKG)")
    if "No space left on device" in text or "Errno 28" in text:
        return SetupError(f"{host}: no space left on the device while installing ({where})",
                          hint="free space on the device (df -h), or choose --remote-workdir on a larger disk; re-run setup to repair the venv")
    if re.search(r"Temporary failure in name resolution|Failed to establish a new connection|Network is unreachable|"
                 r"Could not fetch URL|ConnectTimeout|Max retries exceeded|No route to host", text):
        return SetupError(f"{host}: pip on the device cannot reach the package index ({where})",
                          hint="prepare the wheels here and upload them: edgekit setup ... --wheelhouse DIR")
    return SetupError(f"{host}: pip failed ({where}): {_tail(text, 4)}", hint="re-run setup (a half-finished venv is rebuilt); EDGEKIT_DEBUG=1 shows more")


def download_wheelhouse(pins: List[str], dest: Path, pyver: str, machine: str, libc: List[str], say=lambda m: None) -> List[Path]:
    """pip download (here) the wheels for the device's platform and Python, dependencies included."""
    dest.mkdir(parents=True, exist_ok=True)
    major, minor = pyver.split(".")[:2]
    abi = f"cp{major}{minor}" + ("m" if (int(major), int(minor)) < (3, 8) else "")
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", f"{major}.{minor}", "--abi", abi, "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for tag in _platform_tags(machine, libc):
        argv += ["--platform", tag]
    argv += ["--platform", "any"]
    argv += pins
    say(f"pip download for Python {major}.{minor} on {machine} into {dest}")
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise _pip_failure("here", f"pip download into {dest}", proc.stderr + proc.stdout, f"{major}.{minor}", machine)
    files = []
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*(?:Saved|File was already downloaded)\s+(\S+\.whl)\s*$", line)
        if m:
            p = Path(m.group(1))
            files.append(p if p.is_absolute() else (dest / p.name))
    files = sorted({f.resolve() for f in files if f.is_file()})
    if not files:
        raise SetupError(f"pip download put no wheels into {dest}", hint="run the same pip download by hand to see why")
    return files


def setup(
    profile: str | DeviceProfile,
    host: str,
    *,
    ssh: Optional[Dict[str, Any]] = None,
    wheelhouse: Optional[str | Path] = None,
    progress: Callable[[str], None] = lambda m: None,
) -> Dict[str, Any]:
    """Create or repair `<workdir>/venv` on the device with the profile's pinned packages; return what was installed."""
    from edgekit.workflows.deploy import make_runner

    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    pins = list(prof.setup.pins)
    if not pins:
        raise SetupError(f"profile '{prof.name}' names no packages for setup (setup.pins is empty)",
                         hint="add `setup: {pins: [numpy==..., onnxruntime==...]}` to the profile YAML, or use a device profile that has them")
    if not host:
        raise UsageError("edgekit setup needs --host (the device to set up)", hint="e.g. edgekit setup --host pi@raspberrypi.local --profile raspberry-pi-5")
    ssh = dict(ssh or {})
    ssh["use_setup_venv"] = False  # setup drives the system Python; the venv is what it builds
    t0 = time.monotonic()
    runner = make_runner(prof, host, ssh)
    try:
        runner.connect()
        remote = _Remote(runner, progress)
        python = runner.python
        workdir = runner.workdir
        info = remote.tool(python, {"action": "inspect", "workdir": workdir})
        pyver = ".".join(str(x) for x in info["python"][:2])
        machine = info["machine"]
        progress(f"device: {machine}, Python {'.'.join(map(str, info['python']))} at {info['executable']}, work dir {workdir}")
        venv = posixpath.join(workdir, VENV_DIR)
        vpy = posixpath.join(venv, "bin", "python")
        want = {"pins": pins, "wheelhouse": bool(wheelhouse)}
        marker = info.get("marker")
        if marker and marker.get("pins") == pins:
            check = remote.tool(vpy, {"action": "verify", "workdir": workdir, "imports": _imports(pins)})
            if not check.get("problems"):
                progress(f"{venv} already has {', '.join(pins)}")
                return _result(runner, prof, venv, vpy, marker, repaired=False, unchanged=True, t0=t0)
            progress(f"{venv} is set up but broken ({'; '.join(f'{k}: {v}' for k, v in check['problems'].items())}): rebuilding")
        repaired = bool(info.get("venv_exists")) and not marker
        if info.get("venv_exists"):
            progress(f"removing the half-finished venv {venv} (an interrupted setup)" if repaired else f"rebuilding {venv} for new pins")
            remote.tool(python, {"action": "reset", "workdir": workdir})
        if info["free_bytes"] < MIN_FREE_BYTES:
            raise SetupError(f"{runner.display}: only {info['free_bytes'] // 2**20} MiB free in {workdir}; setup needs about {MIN_FREE_BYTES // 2**20} MiB",
                             hint="free space on the device (df -h), or pass --remote-workdir on a larger disk")
        if not info["has_venv"]:
            raise SetupError(f"{runner.display}: {python} has no venv module", hint="install it on the device: sudo apt install python3-venv")

        files: List[Path] = []
        if wheelhouse:
            extra = [PY36_PIP] if tuple(info["python"][:2]) < (3, 7) else []
            if not info["has_ensurepip"]:
                extra = extra or ["pip"]
            files = download_wheelhouse(pins + extra, Path(wheelhouse), pyver, machine, info["libc"], progress)
            total = sum(f.stat().st_size for f in files)
            if info["free_bytes"] < 3 * total + MIN_FREE_BYTES // 4:
                raise SetupError(f"{runner.display}: {info['free_bytes'] // 2**20} MiB free in {workdir}, the wheels alone are {total // 2**20} MiB",
                                 hint="free space on the device (df -h), or pass --remote-workdir on a larger disk")
            progress(f"uploading {len(files)} wheels ({total / 2**20:.1f} MiB)")
            key = hashlib.sha256("\n".join(sorted(f.name for f in files)).encode()).hexdigest()[:16]
            remote_files = runner.push_files(files, kind="wheelhouse", key=key)
            remote_dir = posixpath.dirname(remote_files[0])
        elif not info["has_ensurepip"]:
            raise SetupError(f"{runner.display}: no pip on the device ({python} cannot bootstrap pip into a venv: ensurepip is missing)",
                             hint="install it on the device (sudo apt install python3-venv python3-pip), or pass --wheelhouse DIR: edgekit then brings pip along")

        progress(f"creating {venv}")
        argv = [python, "-m", "venv"] + ([] if info["has_ensurepip"] else ["--without-pip"]) + [venv]
        rc, out, err, cmd = remote.run(argv, "setup venv", timeout=900)
        if rc != 0:
            if "ensurepip" in err:
                raise SetupError(f"{runner.display}: no pip on the device: `{cmd}` failed ({_tail(err, 2)})",
                                 hint="install it on the device (sudo apt install python3-venv), or pass --wheelhouse DIR")
            raise _pip_failure(runner.display, "python -m venv", err + out, pyver, machine)
        pip = [vpy, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        # --no-compile on the installs below: byte-compiling every module of sympy & co. takes minutes on a slow
        # board (and under qemu); Python compiles what is really imported on first use.
        if wheelhouse:
            if not info["has_ensurepip"]:
                pipwhl = next((posixpath.join(remote_dir, f.name) for f in files if f.name.startswith("pip-")), None)
                rc, out, err, _ = remote.run([vpy, posixpath.join(pipwhl, "pip"), "install", "--no-index", pipwhl], "setup pip", timeout=900)
                if rc != 0:
                    raise _pip_failure(runner.display, "bootstrapping pip from the wheelhouse", err + out, pyver, machine)
            elif tuple(info["python"][:2]) < (3, 7):
                rc, out, err, _ = remote.run(pip + ["install", "--no-index", "--find-links", remote_dir, PY36_PIP], "setup pip", timeout=900)
                if rc != 0:
                    raise _pip_failure(runner.display, f"pip install {PY36_PIP}", err + out, pyver, machine)
            progress(f"installing {', '.join(pins)} from the uploaded wheelhouse (offline)")
            rc, out, err, _ = remote.run(pip + ["install", "--no-compile", "--no-index", "--find-links", remote_dir] + pins, "setup install")
        else:
            if tuple(info["python"][:2]) < (3, 7):
                rc, out, err, _ = remote.run(pip + ["install", PY36_PIP], "setup pip", timeout=900)
                if rc != 0:
                    raise _pip_failure(runner.display, f"pip install {PY36_PIP}", err + out, pyver, machine)
            progress(f"pip install {' '.join(pins)} on the device")
            rc, out, err, _ = remote.run(pip + ["install", "--no-compile"] + pins, "setup install")
        if rc != 0:
            raise _pip_failure(runner.display, "pip install " + " ".join(pins), err + out, pyver, machine)
        progress("checking that each package imports on the device")
        check = remote.tool(vpy, {"action": "verify", "workdir": workdir, "imports": _imports(pins), "mark": want})
        if check.get("problems"):
            bad = "; ".join(f"{k}: {v}" for k, v in check["problems"].items())
            raise SetupError(f"{runner.display}: installed, but does not import under {vpy}: {bad}",
                             hint="pin another version in the profile's setup.pins (this one does not work on this device); the venv is left unmarked, so deploy will not use it")
        return _result(runner, prof, venv, vpy, check["marker"], repaired=repaired, unchanged=False, t0=t0)
    finally:
        runner.close()


def _imports(pins: List[str]) -> List[List[str]]:
    return [[_dist_name(p), IMPORTS.get(_dist_name(p), _dist_name(p).replace("-", "_"))] for p in pins]


def _result(runner, prof, venv, vpy, marker, *, repaired, unchanged, t0) -> Dict[str, Any]:
    return {
        "host": runner.display, "profile": prof.name, "venv": venv, "python": vpy,
        "pins": marker.get("pins"), "installed": marker.get("installed", {}), "device_python": ".".join(map(str, marker.get("python", []))),
        "machine": marker.get("machine"), "wheelhouse": marker.get("wheelhouse", False), "set_up_at": marker.get("at"),
        "repaired": repaired, "unchanged": unchanged, "seconds": round(time.monotonic() - t0, 1),
    }


__all__ = ["setup", "SetupError", "download_wheelhouse", "SETUP_TOOL"]
