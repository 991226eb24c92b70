"""Device facts: thermal zones, clocks, throttling, CPU/OS/board identity, memory (RSS, peak)."""

import glob
import os
import platform
import re
import socket
import sys

from .common import proc_status_kib, read_number, read_text, run_cmd, which


def thermal_snapshot(zones=None):
    """Temperatures (C), CPU clocks (MHz), governor(s) and Pi throttle state, as far as readable."""
    temps = {}
    wanted = list(zones or [])
    for z in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        ztype = read_text(os.path.join(z, "type"), os.path.basename(z))
        if wanted and ztype not in wanted and z not in wanted and os.path.basename(z) not in wanted:
            continue
        t = read_number(os.path.join(z, "temp"))
        if t is not None:
            key = ztype if ztype not in temps else "%s(%s)" % (ztype, os.path.basename(z))
            temps[key] = t / 1000.0 if abs(t) > 200 else t
    for w in wanted:
        if w.startswith("/") and os.path.isfile(w):
            t = read_number(w)
            if t is not None:
                temps[w] = t / 1000.0 if abs(t) > 200 else t
    freqs = {}
    governors = []
    for cpu in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq"),
                      key=lambda p: int(re.search(r"cpu(\d+)/", p).group(1))):
        name = cpu.split("/")[-2]
        f = read_number(os.path.join(cpu, "scaling_cur_freq"))
        if f is not None:
            freqs[name] = f / 1000.0
        g = read_text(os.path.join(cpu, "scaling_governor"))
        if g and g not in governors:
            governors.append(g)
    snap = {"temps_c": temps, "cpu_freq_mhz": freqs, "governor": ",".join(governors) if governors else None,
            "throttled_raw": None}
    if which("vcgencmd"):
        rc, out, _err = run_cmd(["vcgencmd", "get_throttled"], timeout=2.0)
        if rc == 0 and out.strip():
            snap["throttled_raw"] = out.strip()
    return snap


def throttle_bits(raw):
    """Integer from `throttled=0x50005`, or None."""
    if not raw:
        return None
    m = re.search(r"0x([0-9a-fA-F]+)", raw)
    return int(m.group(1), 16) if m else None


def throttled_during(before_raw, after_raw):
    """Pi get_throttled: current bits 0-3 set after the run, or sticky bits 16-19 newly set during it."""
    b, a = throttle_bits(before_raw), throttle_bits(after_raw)
    if a is None:
        return None
    if a & 0xF:
        return True
    if b is not None and (a & 0xF0000) & ~(b & 0xF0000):
        return True
    return False


def _cpu_model():
    text = read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        for line in text.splitlines():
            if line.lower().startswith(key.lower()) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_mb():
    text = read_text("/proc/meminfo") or ""
    m = re.search(r"MemTotal:\s+(\d+) kB", text)
    return int(m.group(1)) // 1024 if m else None


def _device_model():
    text = read_text("/proc/device-tree/model")
    return text.replace("\x00", "").strip() if text else None


EMULATED_NOTE = "emulated: not representative"
_X86_CPUINFO = re.compile(r"^(vendor_id\s*:\s*(GenuineIntel|AuthenticAMD|HygonGenuine)|flags\s*:.*\bsse2\b)", re.M)


def emulation(machine=None, cpuinfo=None, maps=None):
    """Why this process looks emulated (qemu-user on another CPU), or None.

    Under qemu-user `uname -m` says the guest arch (aarch64) while /proc/cpuinfo still describes the x86
    host; some qemu builds also show their own binary in /proc/self/maps.
    """
    machine = machine if machine is not None else platform.machine()
    cpuinfo = cpuinfo if cpuinfo is not None else (read_text("/proc/cpuinfo") or "")
    maps = maps if maps is not None else (read_text("/proc/self/maps") or "")
    if machine.lower() in ("aarch64", "arm64", "armv7l", "armv8l", "armv6l") or machine.lower().startswith("arm"):
        m = _X86_CPUINFO.search(cpuinfo)
        if m:
            return "uname -m is %s but /proc/cpuinfo describes an x86 CPU (%s)" % (machine, m.group(0)[:40].strip())
    for line in maps.splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "qemu-" in os.path.basename(path):
            return "qemu (%s) is mapped into this process" % path
    return None


def device_info():
    u = platform.uname()
    why = emulation(u.machine)
    return {"hostname": socket.gethostname(), "arch": u.machine, "os": "%s %s" % (u.system, _os_release()),
            "kernel": u.release, "python": platform.python_version(), "cpu_model": _cpu_model(),
            "cores": os.cpu_count(), "memory_mb": _memory_mb(), "device_model": _device_model(),
            "emulated": why is not None, "emulation": why}


def cpu_flags():
    """The CPU's feature flags as /proc/cpuinfo spells them (x86 'flags', ARM 'Features'); None if unknown."""
    text = read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            return sorted(set(line.split(":", 1)[1].split()))
    return None


def _os_release():
    text = read_text("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else platform.release()


def rss_mb():
    kib = proc_status_kib("VmRSS")
    return kib / 1024.0 if kib is not None else None


def peak_rss():
    """(peak MB, source): /proc/self/status VmHWM, else getrusage ru_maxrss.

    VmHWM belongs to this process image. Linux keeps ru_maxrss across execve, so a harness started by a
    large parent (e.g. `edgekit deploy` after loading torch) would report the parent's peak instead.
    """
    hwm = proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024.0, "VmHWM"
    try:
        import resource
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0), "getrusage"  # bytes on macOS
    except (ImportError, OSError):
        return None, "unavailable"
