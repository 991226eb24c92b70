"""Linux powercap RAPL package energy counters (Intel and AMD), wrap-aware."""

import glob
import os
import re
import time

from ..common import read_number, read_text
from . import EnergyUnavailable, Source


def rapl_delta_uj(start, end, max_range):
    """Energy between two energy_uj counter readings, handling one wrap at max_energy_range_uj."""
    if end >= start:
        return end - start
    return (max_range - start) + end


class RaplSource(Source):
    """Linux powercap RAPL package counters (Intel and AMD): energy_uj deltas, wrap-aware."""

    name = "rapl"
    counter = True

    def __init__(self, rails, options):
        root = os.path.join(options.get("sysfs_root", "/"), "sys/class/powercap")
        if not os.path.isdir(root):
            raise EnergyUnavailable("%s absent: kernel without powercap (RAPL) support" % root)
        zones = sorted(p for p in glob.glob(os.path.join(root, "intel-rapl:*"))
                       if re.match(r"intel-rapl:\d+$", os.path.basename(p)))
        if not zones:
            raise EnergyUnavailable("%s has no intel-rapl:N package zones (no RAPL driver for this CPU)" % root)
        self.zones = []
        for z in zones:
            name = read_text(os.path.join(z, "name"), os.path.basename(z))
            if rails and name not in rails:
                continue
            path = os.path.join(z, "energy_uj")
            if not os.access(path, os.R_OK) or read_number(path) is None:
                raise EnergyUnavailable("%s is not readable (root only since Linux 5.10)" % path)
            self.zones.append((name, path, read_number(os.path.join(z, "max_energy_range_uj")) or 2.0 ** 32))
        if not self.zones:
            raise EnergyUnavailable("none of the RAPL zones %s found" % ", ".join(rails))
        self._last = None

    def counters(self):
        return [read_number(p) for _n, p, _m in self.zones]

    def energy_j(self, c0, c1):
        return sum(rapl_delta_uj(a, b, m) for a, b, (_n, _p, m) in zip(c0, c1, self.zones)) / 1e6

    def read(self):
        t = time.perf_counter()
        c = self.counters()
        last, self._last = self._last, (t, c)
        if last is None or t <= last[0]:
            return None
        return self.energy_j(last[1], c) / (t - last[0]), [n for n, _p, _m in self.zones]


def open_source(interval_ms, rails, options):
    return RaplSource(rails, options)
