"""Android battery fuel gauge (current_now x voltage_now; dumpsys battery as a fallback parser)."""

import os

from ..common import read_number, read_text
from . import EnergyUnavailable, Source


def android_battery_power(current_raw, voltage_raw):
    """(watts, notes) from current_now / voltage_now. Current in uA unless |value| < 10000 (then mA)."""
    notes = []
    cur = abs(float(current_raw))
    if float(current_raw) < 0:
        notes.append("current_now is negative on this device (vendor sign convention); absolute value used")
    if 0 < cur < 10000:
        amps = cur / 1e3
        notes.append("current_now looks like mA (|%d| < 10000), not uA" % cur)
    else:
        amps = cur / 1e6
    volts = float(voltage_raw) / 1e6
    if volts < 1.0:  # some kernels report mV
        volts = float(voltage_raw) / 1e3
        notes.append("voltage_now looks like mV")
    return amps * volts, notes


def parse_dumpsys_battery(text):
    """`dumpsys battery` -> dict of its `key: value` fields (status 2 = charging)."""
    out = {}
    for line in text.splitlines():
        if ":" in line and line.startswith("  "):
            k, _, v = line.strip().partition(":")
            out[k.strip()] = v.strip()
    return out


class AndroidBatterySource(Source):
    """Android battery fuel gauge: current_now x voltage_now (net of charging when USB powers the phone)."""

    name = "android_battery"

    def __init__(self, options):
        root = options.get("sysfs_root", "/")
        base = os.path.join(root, "sys/class/power_supply/battery")
        self.cur = os.path.join(base, "current_now")
        self.volt = os.path.join(base, "voltage_now")
        self.status = os.path.join(base, "status")
        if not os.path.exists(self.cur) or not os.path.exists(self.volt):
            raise EnergyUnavailable("%s has no current_now/voltage_now" % base)
        self.notes = ["sign of current_now differs by vendor; absolute value used"]
        status = read_text(self.status)
        if status == "Charging":
            self.notes.append("battery status is Charging: current_now is net of the charger, so power is "
                              "underestimated; disconnect USB (adb over Wi-Fi) for real figures")
        if self.read() is None:
            raise EnergyUnavailable("%s/current_now is not readable" % base)

    def read(self):
        c = read_number(self.cur)
        v = read_number(self.volt)
        if c is None or v is None:
            return None
        watts, notes = android_battery_power(c, v)
        for n in notes:
            if n not in self.notes:
                self.notes.append(n)
        return watts, ["battery"]


def open_source(interval_ms, rails, options):
    return AndroidBatterySource(options)
