"""Jetson INA3221 power monitor in sysfs (JetPack <= 4 iio, JetPack 5+ hwmon)."""

import glob
import os
import re

from ..common import read_number, read_text
from . import EnergyUnavailable, Source, select_power_mw


class Ina3221Source(Source):
    """Jetson INA3221 sysfs: JetPack <= 4 iio (mW) or JetPack 5+ hwmon (mV x mA); root overridable."""

    name = "ina3221"

    def __init__(self, rails, options):
        root = options.get("sysfs_root", "/")
        self.rails = list(rails)
        self.channels = []  # (rail, kind, path_a, path_b)
        iio = sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221x/*/iio:device*")))
        for dev in iio:
            for name_file in sorted(glob.glob(os.path.join(dev, "rail_name_*"))):
                k = name_file.rsplit("_", 1)[-1]
                rail = read_text(name_file)
                pw = os.path.join(dev, "in_power%s_input" % k)
                if rail and os.path.exists(pw):
                    self.channels.append((rail, "mw", pw, None))
        hw = sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")))
        for dev in hw:
            for label_file in sorted(glob.glob(os.path.join(dev, "in*_label"))):
                k = re.match(r"in(\d+)_label", os.path.basename(label_file)).group(1)
                if k == "7":  # channel 7 is the sum of shunt voltages, not a rail
                    continue
                rail = read_text(label_file)
                v = os.path.join(dev, "in%s_input" % k)
                c = os.path.join(dev, "curr%s_input" % k)
                if rail and os.path.exists(v) and os.path.exists(c):
                    self.channels.append((rail, "mv_ma", v, c))
        if not self.channels:
            raise EnergyUnavailable("no INA3221 rails under %s (looked for ina3221x iio:device*/rail_name_* and "
                                    "ina3221/*/hwmon/hwmon*/in*_label)"
                                    % os.path.join(root, "sys/bus/i2c/drivers"))
        if self.read() is None:
            raise EnergyUnavailable("INA3221 rails found but not readable (%s); permissions?"
                                    % ", ".join(c[2] for c in self.channels[:3]))

    def read_rails(self):
        rails = {}
        for rail, kind, a, b in self.channels:
            va = read_number(a)
            if va is None:
                continue
            if kind == "mw":
                rails[rail] = va
            else:
                vb = read_number(b)
                if vb is None:
                    continue
                rails[rail] = va * vb / 1000.0  # mV * mA = uW -> mW
        return rails

    def read(self):
        rails = self.read_rails()
        mw, used = select_power_mw(rails, self.rails)
        if mw is None:
            return None
        return mw / 1000.0, used


def open_source(interval_ms, rails, options):
    return Ina3221Source(rails, options)
