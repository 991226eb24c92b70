"""AdbRunner: deploy an artifact to an Android device over adb; run the harness there (a Python such as Termux)
or the edgekit demo app (`am start` with intent extras, JSON pulled back). Same result schema either way."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgekit.core.artifact import Artifact
from edgekit.core.errors import ConnectionFailed, EdgekitError, RunnerError
from edgekit.core.profiles import DeviceProfile
from edgekit.core.results import BenchmarkResult
from edgekit.core.runner_interface import HarnessSpec, Runner
from edgekit.runners.harness_protocol import KILLED_CODES, CommandKilled, harness_error, parse_result
from edgekit.runners.transport import (
    DeviceCommandMissing,
    DeviceOffline,
    DeviceUnauthorized,
    FileItem,
    HarnessStderr,
    ShaCache,
    disk_full,
    harness_command,
    parse_probe,
    pushable_files,
    quote_argv,
)

DEFAULT_WORKDIR = "/data/local/tmp/edgekit"
APP_PACKAGE = "dev.edgekit.demo"
APP_ACTIVITY = APP_PACKAGE + "/.MainActivity"
# the harness adapter modules that serve each runtime; the harness path needs one of them and numpy
RUNTIME_MODULES = {"tflite": ("ai_edge_litert", "tflite_runtime"), "onnxruntime": ("onnxruntime",), "openvino": ("openvino",)}


class AdbNotFound(EdgekitError):
    """No adb client on this computer."""


def find_adb(explicit: Optional[str] = None) -> str:
    """The adb client: explicit path, $ADB, then PATH; a clear install hint otherwise."""
    cand = explicit or os.environ.get("ADB")
    if cand:
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
        found = shutil.which(cand)
        if found:
            return found
        raise AdbNotFound(f"adb client '{cand}' (from {'the adb= argument' if explicit else '$ADB'}) is not an executable file",
                          hint="point $ADB at the adb binary, or unset it to use the adb on PATH")
    found = shutil.which("adb")
    if not found:
        raise AdbNotFound("adb was not found on PATH",
                          hint="install it: `apt-get install adb` (Debian/Ubuntu), or Android SDK platform-tools "
                          "(add platform-tools to PATH, or set $ADB to the adb binary)")
    return found


def parse_devices(text: str) -> Dict[str, str]:
    """`adb devices` output -> {serial: state} (device, offline, unauthorized, ...)."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def parse_df_available_kb(text: str) -> Optional[int]:
    """Available KiB from `df -k DIR` (GNU coreutils and toybox print the same columns)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    fields = " ".join(lines[1:]).split()  # a long device name may wrap onto its own line
    try:
        return int(fields[3])
    except (IndexError, ValueError):
        return None


class AdbRunner(Runner):
    """Runs the edgekit harness (or the demo app) on a device reached with adb; every shell command is quoted."""

    name = "adb"

    def __init__(
        self,
        profile: DeviceProfile,
        serial: Optional[str] = None,
        *,
        adb: Optional[str] = None,
        workdir: Optional[str] = None,
        python: Optional[str] = None,
        command_timeout: float = 900.0,
        connect_timeout: float = 10.0,
        on_progress: Optional[Callable[[Dict[str, Any]], None]] = None,
        on_upload: Optional[Callable[[int, int], None]] = None,
        app_apk: Optional[os.PathLike | str] = None,
        apk_builder: Optional[Callable[[Path], Path]] = None,
        mode: str = "auto",
        sysfs_root: str = "/",
        **_ignored: Any,  # SSH-only options (known_hosts, ...) that the CLI collects for every runner
    ):
        self.profile = profile
        self.adb = find_adb(adb)
        self.serial_request = serial or os.environ.get("ANDROID_SERIAL") or profile.connection.serial
        self.serial: Optional[str] = None
        self.workdir = workdir or profile.connection.workdir or DEFAULT_WORKDIR
        if not self.workdir.startswith("/"):
            raise RunnerError(f"adb work directory '{self.workdir}' must be an absolute path on the device",
                              hint="use e.g. /data/local/tmp/edgekit (set connection.workdir or --remote-workdir)")
        self.python = python or profile.connection.python or "python3"
        self.command_timeout = float(command_timeout)
        self.connect_timeout = float(connect_timeout)
        self.on_progress = on_progress
        self.on_upload = on_upload
        self.app_apk = Path(app_apk) if app_apk else None
        self.apk_builder = apk_builder  # model file -> APK with it embedded (the deploy workflow passes edgekit app build)
        if mode not in ("auto", "harness", "app"):
            raise RunnerError(f"adb run mode '{mode}' is not one of auto, harness, app")
        self.mode = mode
        self.sysfs_root = sysfs_root  # where /sys is read from on the device (tests point it at a captured tree)
        self.bytes_uploaded = 0
        self.uploads_skipped = 0
        self.commands_run = 0
        self.harness_remote: Optional[str] = None
        self._probe: Optional[Dict[str, Any]] = None
        self._shas = ShaCache()
        self.notes: List[str] = []
        self._pushed: Dict[str, Path] = {}  # device path -> local file, so the app path can embed the model

    # ------------------------------------------------------------------ adb plumbing

    @property
    def display(self) -> str:
        return f"adb:{self.serial or self.serial_request or '(the only device)'}"

    @property
    def target(self) -> str:
        return self.display

    def _adb(self, args: List[str], timeout: Optional[float] = None, serial: bool = True) -> subprocess.CompletedProcess:
        argv = [self.adb] + (["-s", self.serial] if serial and self.serial else []) + args
        try:
            return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout or self.command_timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise AdbNotFound(f"adb client {self.adb} disappeared", hint="reinstall adb (apt-get install adb)") from exc

    def _device_error(self, text: str, phase: str) -> Optional[RunnerError]:
        """adb's own failures (not the device command's) as typed errors."""
        low = text.lower()
        if "unauthorized" in low:
            return DeviceUnauthorized(
                f"device refuses this computer during {phase} (unauthorized)", host=self.display,
                hint="unlock the phone and accept the 'Allow USB debugging?' prompt (tick 'Always allow'), then re-run")
        if "offline" in low or "device still connecting" in low:
            return DeviceOffline(f"device is offline during {phase}", host=self.display,
                                 hint="reconnect the cable / `adb reconnect`, and check the phone is awake and unlocked")
        if re.search(r"device '.*' not found|no devices/emulators found|error: closed|connection reset|failed to connect", low):
            return DeviceOffline(f"device is not reachable during {phase}: {text.strip().splitlines()[-1] if text.strip() else ''}",
                                 host=self.display, hint="check `adb devices`; for a network device run `adb connect HOST:PORT`")
        return None

    def shell(self, command: str, phase: str, timeout: Optional[float] = None) -> Tuple[int, str, str]:
        """Run a shell command line on the device; returns (exit code, stdout, stderr). adb failures are typed."""
        self.commands_run += 1
        try:
            cp = self._adb(["shell", command], timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CommandKilled(f"the device command did not finish within {timeout or self.command_timeout:g} s during {phase}",
                                host=self.display, command=command, hint="raise the timeout, or check the device") from exc
        if cp.returncode == 255 or (cp.returncode != 0 and cp.stderr.startswith(("error:", "adb: error"))):
            err = self._device_error(cp.stderr + cp.stdout, phase)
            if err is not None:
                raise err
        return cp.returncode, cp.stdout, cp.stderr

    def exec(self, argv: List[str], timeout: float = 600.0) -> Tuple[int, str, str]:
        """Run one program on the device (no shell features; every argument quoted). TimeoutError past `timeout`."""
        try:
            return self.shell(quote_argv(argv), f"'{argv[0]}'", timeout=timeout)
        except CommandKilled as exc:
            raise TimeoutError(f"{argv[0]} did not finish within {timeout:.0f} s on {self.display}") from exc

    def has_command(self, name: str) -> bool:
        rc, out, _ = self.shell(f"command -v {shlex.quote(name)}", f"looking for {name}", timeout=30)
        return rc == 0 and bool(out.strip())

    # ------------------------------------------------------------------ connection

    def connect(self) -> None:
        """Pick the device (serial, $ANDROID_SERIAL, the profile's, or the only one), check its state, make the work dir."""
        if self.serial is not None:
            return
        want = self.serial_request
        if want and re.fullmatch(r"[^\s:]+:\d+", want):
            self._adb(["connect", want], timeout=self.connect_timeout, serial=False)  # a network device; state checked below
        cp = self._adb(["devices"], timeout=self.connect_timeout, serial=False)
        if cp.returncode != 0:
            raise ConnectionFailed(f"`adb devices` failed: {(cp.stderr or cp.stdout).strip()}", host=self.display,
                                   hint="restart the adb server: `adb kill-server && adb start-server`")
        devices = parse_devices(cp.stdout)
        if want is None:
            ready = [s for s, st in devices.items()]
            if len(ready) != 1:
                raise ConnectionFailed(
                    f"adb sees {len(ready)} devices ({', '.join(ready) or 'none'}); edgekit needs to know which one",
                    host="adb", hint="pass --serial SERIAL (or set ANDROID_SERIAL, or connection.serial in the profile)")
            want = ready[0]
        state = devices.get(want)
        if state is None:
            raise ConnectionFailed(f"device {want} is not attached (adb sees: {', '.join(devices) or 'no devices'})",
                                   host=f"adb:{want}", hint="check the cable / `adb connect HOST:PORT`, and `adb devices`")
        self.serial = want
        if state == "unauthorized":
            raise self._device_error("unauthorized", "connect")  # type: ignore[misc]
        if state == "offline":
            raise self._device_error("offline", "connect")  # type: ignore[misc]
        if state not in ("device", "recovery"):
            raise DeviceOffline(f"device is in state '{state}', not ready for commands", host=self.display,
                                hint="wait for it to boot, or `adb reconnect`")
        rc, _, err = self.shell(f"mkdir -p {shlex.quote(posixpath.join(self.workdir, 'runs'))}", "connect", timeout=30)
        if rc != 0:
            if "No space left" in err:
                raise disk_full(self.display, "connect", self.workdir, "mkdir", rc, err)
            raise RunnerError(f"cannot create the work directory {self.workdir} on the device", host=self.display,
                              exit_code=rc, stderr_tail=err, hint="choose a writable directory (/data/local/tmp/... on Android) with --remote-workdir")

    def close(self) -> None:
        """Nothing stays open: each adb command is its own process (the adb server is shared, so it is left running)."""
        self.serial = None

    # ------------------------------------------------------------------ files

    def _abs(self, rel: str) -> str:
        return posixpath.join(self.workdir, rel)

    def push_files(self, files: List[Path], kind: str = "models", key: Optional[str] = None) -> List[str]:
        """Place local files in one device directory (named by content); send only what is not there with that sha256."""
        if self.serial is None:
            self.connect()
        items = self._shas.items(files, kind, key, self.display)
        # one shell round trip: make the dirs, drop stale .part files, hash what is there, report free space
        dirs = sorted({posixpath.dirname(self._abs(it.rel)) for it in items})
        parts = [f"mkdir -p {' '.join(shlex.quote(d) for d in dirs)} || exit 1"]
        for d in dirs:
            parts.append(f"find {shlex.quote(d)} -maxdepth 1 -name '.*.part' -mmin +10 -exec rm -f {{}} + 2>/dev/null")
        for it in items:
            p = shlex.quote(self._abs(it.rel))
            parts.append(f'if [ -f {p} ] && [ "$(wc -c < {p})" -eq {it.size} ]; then sha256sum {p}; fi')
        parts.append(f"echo EDGEKIT-DF; df -k {shlex.quote(self.workdir)}")
        rc, out, err = self.shell("; ".join(parts), "upload check", timeout=300)
        if rc != 0 and "EDGEKIT-DF" not in out:
            if "No space left" in err:
                raise disk_full(self.display, "upload check", self.workdir, None, rc, err)
            raise RunnerError("the upload check failed on the device", host=self.display, exit_code=rc, stderr_tail=err,
                              hint="check that sh, sha256sum and df exist on the device and the work directory is writable")
        head, _, df_text = out.partition("EDGEKIT-DF")
        have = {}
        for line in head.splitlines():
            bits = line.split()
            if len(bits) >= 2:
                have[bits[1]] = bits[0]
        missing = [it for it in items if have.get(self._abs(it.rel)) != it.sha256]
        self.uploads_skipped += len(items) - len(missing)
        if missing:
            total = sum(it.size for it in missing)
            free_kb = parse_df_available_kb(df_text)
            if free_kb is not None and total > free_kb * 1024:
                raise disk_full(self.display, "upload", self.workdir, None, None,
                                f"need {total} bytes, {free_kb * 1024} free in {self.workdir}")
            self._upload(missing, total)
        return [self._abs(it.rel) for it in items]

    def _upload(self, missing: List[FileItem], total: int) -> None:
        """adb push to `.part` names, then a device-side sha256 check and rename (a bad copy is deleted)."""
        done = 0
        for it in missing:
            tmp = self._abs(it.tmp)
            cp = self._adb(["push", str(it.local), tmp], timeout=self.command_timeout)
            if cp.returncode != 0:
                text = cp.stderr + cp.stdout
                self.shell(f"rm -f {shlex.quote(tmp)}", "cleanup", timeout=30)
                if "No space left" in text or "no space" in text.lower():
                    raise disk_full(self.display, f"upload of {it.local.name}", self.workdir, f"adb push {it.local} {tmp}", cp.returncode, text)
                err = self._device_error(text, f"upload of {it.local.name}")
                raise err or RunnerError(f"adb push of {it.local} failed", host=self.display, command=f"adb push {it.local} {tmp}",
                                         exit_code=cp.returncode, stderr_tail=text, hint="check permissions of the work directory")
            done += it.size
            self.bytes_uploaded += it.size
            if self.on_upload is not None:
                self.on_upload(done, total)
        checks = []
        for it in missing:
            tmp, final = shlex.quote(self._abs(it.tmp)), shlex.quote(self._abs(it.rel))
            checks.append(f'got=$(sha256sum {tmp} | cut -d" " -f1); if [ "$got" = {it.sha256} ]; then mv -f {tmp} {final} && '
                          f'echo "ok {it.rel}"; else rm -f {tmp}; echo "bad {it.rel} $got"; fi')
        rc, out, err = self.shell("; ".join(checks), "upload verification", timeout=300)
        bad = [ln for ln in out.splitlines() if ln.startswith("bad ")]
        ok = {ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("ok ")}
        if bad or len(ok) != len(missing):
            raise RunnerError("uploaded file(s) failed sha256 verification on the device: " + "; ".join(bad or [err.strip()]),
                              host=self.display, exit_code=rc, hint="the transfer was corrupted; re-run (the bad copy was deleted)")

    def push(self, artifact: Artifact) -> str:
        """Upload every file of the artifact into one directory; skip what is already there."""
        paths = self.push_files(pushable_files(artifact, self.display))
        self._pushed[paths[0]] = Path(artifact.path)
        return paths[0]

    def pull(self, remote_path: str, local_path: Path) -> None:
        """Copy a file from the device to `local_path` atomically."""
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = local_path.with_name("." + local_path.name + ".part")
        cp = self._adb(["pull", remote_path, str(tmp)])
        if cp.returncode != 0:
            tmp.unlink(missing_ok=True)
            text = cp.stderr + cp.stdout
            raise self._device_error(text, f"download of {remote_path}") or RunnerError(
                f"cannot download {remote_path}: {text.strip()}", host=self.display, hint="check the path on the device and free space here")
        os.replace(tmp, local_path)

    # ------------------------------------------------------------------ device facts

    def battery(self) -> Dict[str, Any]:
        """Battery power now: /sys/class/power_supply/battery current_now x voltage_now, else `dumpsys battery` fields."""
        from edgekit.core.registry import harness_module

        h = harness_module("energy.android_battery")
        base = posixpath.join(self.sysfs_root, "sys/class/power_supply/battery")
        rc, out, _ = self.shell(f"cat {base}/current_now {base}/voltage_now 2>/dev/null", "battery", timeout=30)
        vals = out.split()
        if rc == 0 and len(vals) == 2:
            try:
                watts, notes = h.android_battery_power(vals[0], vals[1])
                return {"available": True, "source": base, "power_w": watts, "notes": notes}
            except ValueError:
                pass
        if self.has_command("dumpsys"):
            rc, out, _ = self.shell("dumpsys battery", "battery", timeout=30)
            fields = h.parse_dumpsys_battery(out)
            return {"available": False, "source": "dumpsys battery", "fields": fields,
                    "reason": "dumpsys battery has level/voltage/temperature but no current: power cannot be measured from it"}
        return {"available": False, "reason": f"no {base}/current_now and no dumpsys on the device"}

    def thermal(self) -> Dict[str, float]:
        """Every thermal zone's temperature in °C, keyed by its type (millidegrees or degrees as the kernel reports)."""
        zones = shlex.quote(posixpath.join(self.sysfs_root, "sys/class/thermal"))
        rc, out, _ = self.shell(f'for z in {zones}/thermal_zone*; do [ -r "$z/temp" ] && '
                                'echo "$(cat "$z/type" 2>/dev/null) $(cat "$z/temp" 2>/dev/null)"; done; true', "thermal", timeout=30)
        temps: Dict[str, float] = {}
        for line in out.splitlines():
            bits = line.rsplit(" ", 1)
            if len(bits) == 2:
                try:
                    v = float(bits[1])
                except ValueError:
                    continue
                temps[bits[0] or "zone"] = v / 1000.0 if abs(v) > 200 else v
        return temps

    def _getprop(self) -> Dict[str, str]:
        if not self.has_command("getprop"):
            return {}
        _, out, _ = self.shell("getprop ro.product.model; getprop ro.build.version.release; getprop ro.build.version.sdk; getprop ro.product.cpu.abi",
                               "getprop", timeout=30)
        vals = (out.splitlines() + [""] * 4)[:4]
        return dict(zip(("model", "android_release", "sdk", "abi"), vals))

    def _device_python(self) -> Optional[str]:
        rc, out, _ = self.shell(f"{shlex.quote(self.python)} -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])' 2>/dev/null",
                                "python check", timeout=60)
        return out.strip() if rc == 0 and out.strip() else None

    # ------------------------------------------------------------------ harness path

    def _ensure_harness(self) -> None:
        from edgekit.core.registry import harness_path

        if self.harness_remote is None:
            self.harness_remote = self.push_files([Path(harness_path())], "harness")[0]

    def _run_stream(self, command: str, phase: str, spec_remote: Optional[str]) -> Tuple[int, str, str, Optional[Dict[str, Any]]]:
        """Run the harness command with `adb shell`, streaming its stderr protocol; stop it past the timeout."""
        parser = HarnessStderr(self.on_progress)
        self.commands_run += 1
        argv = [self.adb, "-s", self.serial, "shell", command]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        out_chunks: List[bytes] = []
        reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
        reader.start()
        timer_fired = []

        def on_timeout() -> None:
            timer_fired.append(True)
            if parser.pid:
                self.shell(f"kill -KILL {parser.pid} 2>/dev/null; true", "stopping the harness", timeout=30)
            proc.kill()

        timer = threading.Timer(self.command_timeout, on_timeout)
        timer.start()
        try:
            for raw in proc.stderr:
                parser.line(raw.decode(errors="replace").rstrip("\r\n"))
            rc = proc.wait()
            reader.join(10)
        except KeyboardInterrupt:
            if parser.pid:
                self.shell(f"kill -TERM {parser.pid} 2>/dev/null; true", "stopping the harness", timeout=30)
            proc.kill()
            raise
        finally:
            timer.cancel()
            if spec_remote and timer_fired:
                self.shell(f"rm -f {shlex.quote(spec_remote)}", "cleanup", timeout=30)
        if timer_fired:
            raise CommandKilled(f"the device {phase} did not finish within {self.command_timeout:g} s and was stopped",
                                host=self.display, command=command, stderr_tail=parser.text,
                                hint="raise the command timeout, or lower min_seconds/max_seconds in the run spec")
        out = b"".join(out_chunks).decode(errors="replace")
        if rc == 255 or (rc != 0 and parser.text.startswith("error:")):
            err = self._device_error(parser.text, phase)
            if err is not None:
                raise err
        return rc, out, parser.text, parser.error

    def _harness_error(self, rc: int, command: str, stderr: str, info: Optional[Dict[str, Any]], phase: str) -> RunnerError:
        """harness_protocol's one mapping, with a full disk told apart (a phone's /data fills up)."""
        if rc not in KILLED_CODES and rc != -1 and "No space left on device" in stderr:
            return disk_full(self.display, phase, self.workdir, command, rc, stderr)
        return harness_error(rc, command, stderr, info, phase=f"device {phase}", host=self.display, python=self.python)

    def probe(self) -> Dict[str, Any]:
        """The harness probe where the device has Python, else what a plain Android shell tells; plus adb facts."""
        if self._probe is not None:
            return self._probe
        if self.serial is None:
            self.connect()
        py = self._device_python()
        data: Dict[str, Any]
        if py:
            self._ensure_harness()
            command = harness_command(self.workdir, shlex.quote(self.python), self.harness_remote, "--probe " + shlex.quote(self.workdir))
            rc, out, stderr, info = self._run_stream(command, "probe", None)
            if rc != 0:
                raise self._harness_error(rc, command, stderr, info, "probe")
            data = parse_probe(out, display=self.display, command=command, rc=rc, stderr=stderr)
        else:
            _, out, _ = self.shell("uname -n; uname -m; uname -r; uname -s", "probe", timeout=30)
            vals = (out.splitlines() + [""] * 4)[:4]
            data = {"hostname": vals[0], "arch": vals[1], "kernel": vals[2], "os": vals[3], "python": None, "runtimes": {}}
        props = self._getprop()
        data["adb"] = {
            "target": self.target, "serial": self.serial, "workdir": self.workdir, "python": self.python, "python_version": py,
            "getprop": props, "commands": {c: self.has_command(c) for c in ("pm", "am", "dumpsys", "getprop", "sha256sum")},
            "battery": self.battery(), "thermal_c": self.thermal(),
        }
        self._probe = data
        return data

    def harness_usable(self, runtime: str) -> Tuple[bool, str]:
        """Whether the harness can run `runtime` on the device: a Python with numpy and one of the runtime's modules."""
        p = self.probe()
        if not p["adb"]["python_version"]:
            return False, f"no '{self.python}' on the device"
        rts = p.get("runtimes") or {}
        if not rts.get("numpy", {}).get("available"):
            return False, f"the device's {self.python} has no numpy"
        mods = RUNTIME_MODULES.get(runtime, (runtime,))
        if not any(rts.get(m, {}).get("available") for m in mods):
            return False, f"the device's {self.python} has no {' or '.join(mods)}"
        return True, "python " + p["adb"]["python_version"]

    def run_harness(self, spec: HarnessSpec) -> BenchmarkResult:
        """Run the benchmark with the harness where the device's Python can (Termux), else with the demo app."""
        if self.serial is None:
            self.connect()
        mode = self.mode
        why = None
        if mode == "auto":
            ok, why = self.harness_usable(spec.runtime)
            mode = "harness" if ok else "app"
            if not ok:
                self.notes.append(f"harness path not possible ({why}); using the edgekit demo app")
                if self.on_progress is not None:
                    self.on_progress({"phase": "adb", "message": self.notes[-1]})
        if mode == "app":
            return self.run_app(spec, why_not_harness=None if self.mode == "app" else why)
        self._ensure_harness()
        spec_remote = posixpath.join(self.workdir, "runs", f"spec-{uuid.uuid4().hex}.json")
        with tempfile.TemporaryDirectory(prefix="edgekit-adb-") as td:
            local = Path(td) / "spec.json"
            local.write_text(spec.model_dump_json(indent=None))
            cp = self._adb(["push", str(local), spec_remote])
            if cp.returncode != 0:
                text = cp.stderr + cp.stdout
                if "No space left" in text:
                    raise disk_full(self.display, "spec upload", self.workdir, "adb push", cp.returncode, text)
                raise self._device_error(text, "spec upload") or RunnerError(
                    f"cannot write {spec_remote}: {text.strip()}", host=self.display, hint="check the work directory's permissions")
        command = harness_command(self.workdir, shlex.quote(self.python), self.harness_remote, shlex.quote(spec_remote), spec_remote)
        rc, out, stderr, info = self._run_stream(command, "benchmark", spec_remote)
        if rc != 0:
            raise self._harness_error(rc, command, stderr, info, "benchmark")
        return parse_result(out, command, rc, stderr, runner="adb", host=self.serial, shown_host=self.display)

    # ------------------------------------------------------------------ demo app path

    def run_app(self, spec: HarnessSpec, model_local: Optional[Path] = None, why_not_harness: Optional[str] = None) -> BenchmarkResult:
        """Install the demo app with the model, start its benchmark with `am start` extras, wait, pull its JSON result."""
        missing = [c for c in ("pm", "am") if not self.has_command(c)]
        if missing:
            names = " and ".join(f"`{c}`" for c in missing) + (" commands" if len(missing) > 1 else " command")
            before = f"the harness cannot run ({why_not_harness}), and " if why_not_harness else ""
            raise DeviceCommandMissing(
                f"{before}the edgekit demo app cannot run either: the device has no {names} (needed to install and start "
                "the app; this adbd is not a full Android system)",
                host=self.display, command=" ; ".join(f"command -v {c}" for c in missing),
                hint="use a real Android device or emulator for the app path, or install a Python with numpy and the runtime "
                "on the device (Termux: pkg install python; pip install numpy ai-edge-litert) so the harness runs instead")
        if spec.runtime != "tflite":
            raise RunnerError(f"the demo app runs .tflite models with LiteRT; this run asks for {spec.runtime}",
                              host=self.display, hint="deploy with --runtime tflite for the app path")
        apk = self.app_apk
        model_local = model_local or self._pushed.get(spec.model_path)
        if apk is None:
            if model_local is None or self.apk_builder is None:
                raise RunnerError("the demo app path needs an APK with the model embedded", host=self.display,
                                  hint="build it with `edgekit app build --model M.tflite --out demo.apk` and pass app_apk=")
            apk = self.apk_builder(model_local)
        cp = self._adb(["install", "-r", "-t", str(apk)])
        if cp.returncode != 0:
            raise RunnerError(f"adb install {apk} failed: {(cp.stderr + cp.stdout).strip()[-300:]}", host=self.display,
                              command=f"adb install -r -t {apk}", exit_code=cp.returncode,
                              hint="allow installs over USB in the developer options, and check free space")
        result_path = f"/sdcard/Android/data/{APP_PACKAGE}/files/result.json"
        self.shell(f"rm -f {shlex.quote(result_path)}", "app result cleanup", timeout=30)
        extras = ["--ez", "benchmark", "true", "--ei", "warmup_runs", str(spec.warmup_runs), "--ei", "min_runs", str(spec.min_runs),
                  "--ef", "min_seconds", str(spec.min_seconds), "--ef", "max_seconds", str(spec.max_seconds),
                  "--ei", "threads", str(spec.threads), "--es", "engine", "litert-wasm"]
        start = quote_argv(["am", "start", "-W", "-S", "-n", APP_ACTIVITY] + extras)
        temps_before = self.thermal()
        rc, out, err = self.shell(start, "app start", timeout=60)
        if rc != 0 or "Error" in out:
            raise RunnerError("`am start` of the demo app failed", host=self.display, command=start, exit_code=rc,
                              stderr_tail=err + out, hint="check `adb logcat -s edgekit` on the device")
        deadline = time.monotonic() + spec.max_seconds + spec.warmup_seconds + 120
        while time.monotonic() < deadline:
            rc, _, _ = self.shell(f"test -s {shlex.quote(result_path)}", "waiting for the app", timeout=30)
            if rc == 0:
                break
            time.sleep(2)
        else:
            raise CommandKilled(f"the demo app wrote no result to {result_path} in time", host=self.display, command=start,
                                hint="look at the app's screen and `adb logcat -s edgekit`")
        with tempfile.TemporaryDirectory(prefix="edgekit-adb-") as td:
            local = Path(td) / "result.json"
            self.pull(result_path, local)
            text = local.read_text()
        try:
            failed = json.loads(text).get("error")
        except (ValueError, AttributeError):
            failed = None
        if failed:
            raise RunnerError(f"the demo app failed: {failed}", host=self.display, command=start,
                              hint="see the app's screen and `adb logcat -s edgekit`")
        result = parse_result(text, start, 0, "", runner="adb", host=self.serial, shown_host=self.display)
        thermal = result.thermal.model_copy(update={"before": result.thermal.before.model_copy(update={"temps_c": temps_before}),
                                                    "after": result.thermal.after.model_copy(update={"temps_c": self.thermal()})})
        return result.model_copy(update={"thermal": thermal})


__all__ = ["AdbRunner", "AdbNotFound", "find_adb", "parse_devices", "parse_df_available_kb"]
