"""Raspberry Pi 5 PMIC ADC through `vcgencmd pmic_read_adc`."""

import re

from ..common import run_cmd, which
from . import EnergyUnavailable, Source


def parse_vcgencmd_pmic(text):
    """Pi 5 `vcgencmd pmic_read_adc` -> {rail: watts} for rails with both _A and _V, paired by name; nan skipped."""
    amps, volts = {}, {}
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z0-9_]+)_([AV])\s+\w+\(\d+\)=([-+0-9.eEnaN]+)[AV]\s*$", line)
        if not m:
            continue
        try:
            val = float(m.group(3))
        except ValueError:
            continue
        if val != val:  # nan
            continue
        (amps if m.group(2) == "A" else volts)[m.group(1)] = val
    return dict((r, amps[r] * volts[r]) for r in amps if r in volts)


class VcgencmdPmicSource(Source):
    """Raspberry Pi 5 PMIC ADC via `vcgencmd pmic_read_adc` (~23 ms per read, so at most ~10 Hz)."""

    name = "vcgencmd_pmic"
    min_interval_s = 0.1

    def __init__(self, rails, options):
        self.command = options.get("command") or which("vcgencmd")
        if not self.command:
            raise EnergyUnavailable("vcgencmd not found on PATH (not a Raspberry Pi OS image)")
        self.rails = list(rails)
        if self.read() is None:
            raise EnergyUnavailable("`vcgencmd pmic_read_adc` gave no rail with both current and voltage "
                                    "(Raspberry Pi 4 and older have no PMIC current sensing)")

    def read(self):
        rc, out, _err = run_cmd([self.command, "pmic_read_adc"], timeout=2.0)
        if rc != 0:
            return None
        rails = parse_vcgencmd_pmic(out)
        if not rails:
            return None
        if self.rails:
            if any(r not in rails for r in self.rails):
                return None
            return sum(rails[r] for r in self.rails), list(self.rails)
        return sum(rails.values()), sorted(rails)


def open_source(interval_ms, rails, options):
    return VcgencmdPmicSource(rails, options)
