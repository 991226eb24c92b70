"""`--probe`: what `edgekit doctor` needs to know about the device (runtimes, sensors, thermal, disk)."""

import glob
import os
import sys

from . import adapters, energy
from .common import read_text
from .device import cpu_flags, device_info, thermal_snapshot
from .energy import EnergyUnavailable, open_energy_source
from .schema import HARNESS_VERSION


def _runtime_versions():
    """Each adapter's own probe (versions, providers, helper tools), plus numpy."""
    out = {}
    for name in adapters.names():
        out.update(adapters.adapter(name).probe())
    out["numpy"] = adapters.module_version("numpy")
    return out


def _energy_probe():
    out = {}
    for name in energy.names():
        if name == "none":
            continue
        try:
            src = open_energy_source(name, 100, [], {})
            r = src.read() if not src.push else None
            out[name] = {"readable": True, "reason": None}
            if r is not None:
                out[name]["sample_w"] = r[0]
                out[name]["rails"] = r[1]
            src.stop()
        except EnergyUnavailable as exc:
            out[name] = {"readable": False, "reason": str(exc)}
    return out


def probe(workdir=None):
    """Everything `edgekit doctor` wants to know about this device, as a dict."""
    info = device_info()
    info["cpu_flags"] = cpu_flags()  # probe only: benchmark results keep the compact device record
    thermal = thermal_snapshot()
    zones = {}
    for z in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        zones[os.path.basename(z)] = read_text(os.path.join(z, "type"))
    wd = workdir or os.getcwd()
    try:
        st = os.statvfs(wd)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    info.update({
        "harness_version": HARNESS_VERSION,
        "python_executable": sys.executable,
        "runtimes": _runtime_versions(),
        "energy": _energy_probe(),
        "thermal_zones": zones,
        "temps_c": thermal["temps_c"],
        "cpu_freq_mhz": thermal["cpu_freq_mhz"],
        "governor": thermal["governor"],
        "throttled_raw": thermal["throttled_raw"],
        "workdir": wd,
        "free_disk_bytes": free,
    })
    return info
