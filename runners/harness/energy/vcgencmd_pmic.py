"""Raspberry Pi 5 PMIC ADC through `vcgencmd pmic_read_adc`."""

import re
import subprocess
import sys
import threading
import time

from ..common import run_cmd, which
from . import EnergyUnavailable, Source, die_with_parent, stop_child


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


# The sampler child: runs `vcgencmd pmic_read_adc` every interval and prints each reply followed by an end line, so
# the fork+exec of vcgencmd (~23 ms per read on a Pi 5) happens outside the timed process. Python >= 3.6, stdlib.
_SAMPLER = r"""
import subprocess, sys, time
cmd, interval = sys.argv[1], float(sys.argv[2])
nxt = time.perf_counter()
while True:
    try:
        p = subprocess.Popen([cmd, "pmic_read_adc"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.communicate()[0].decode("utf-8", "replace")
        rc = p.returncode
    except OSError as exc:
        out, rc = str(exc), 127
    sys.stdout.write(out.rstrip("\n") + "\nEDGEKIT-PMIC-END %d\n" % rc)
    sys.stdout.flush()
    nxt += interval
    delay = nxt - time.perf_counter()
    if delay < 0:
        nxt = time.perf_counter()
    else:
        time.sleep(delay)
"""
END = "EDGEKIT-PMIC-END"
START_TIMEOUT_S = 30


class VcgencmdPmicSource(Source):
    """Raspberry Pi 5 PMIC ADC via `vcgencmd pmic_read_adc` (~23 ms per read, so at most ~10 Hz).

    Sampled by a separate sampler process (options.sampler "process", the default): the timed process only reads
    finished replies from a pipe. options.sampler "thread" spawns vcgencmd from a thread of the timed process (the
    old way, kept to measure what it costs: benchmarks/sensor_overhead.py)."""

    name = "vcgencmd_pmic"
    min_interval_s = 0.1

    def __init__(self, rails, options, interval_ms=100):
        self.command = options.get("command") or which("vcgencmd")
        if not self.command:
            raise EnergyUnavailable("vcgencmd not found on PATH (not a Raspberry Pi OS image)")
        self.rails = list(rails)
        self.sampler = str(options.get("sampler", "process"))
        if self.sampler not in ("process", "thread"):
            raise EnergyUnavailable("energy_options.sampler '%s' is not 'process' or 'thread'" % self.sampler)
        self.push = self.sampler == "process"
        self.interval_s = max(interval_ms / 1000.0, self.min_interval_s)
        self.proc = None
        self._stopping = False
        self.notes = ["vcgencmd sampled %s" % ("by a separate process (outside the timed process)"
                                               if self.push else "from a thread of the timed process")]
        if self.read() is None:
            raise EnergyUnavailable("`vcgencmd pmic_read_adc` gave no rail with both current and voltage "
                                    "(Raspberry Pi 4 and older have no PMIC current sensing)")

    def _select(self, rails):
        if not rails:
            return None
        if self.rails:
            if any(r not in rails for r in self.rails):
                return None
            return sum(rails[r] for r in self.rails), list(self.rails)
        return sum(rails.values()), sorted(rails)

    def read(self):
        rc, out, _err = run_cmd([self.command, "pmic_read_adc"], timeout=2.0)
        if rc != 0:
            return None
        return self._select(parse_vcgencmd_pmic(out))

    def start(self, sink):
        argv = [sys.executable, "-c", _SAMPLER, self.command, repr(self.interval_s)]
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         universal_newlines=True, bufsize=1, preexec_fn=die_with_parent)
        except OSError as exc:
            raise EnergyUnavailable("cannot start the vcgencmd sampler (%s): %s" % (sys.executable, exc))
        self._first = threading.Event()
        thread = threading.Thread(target=self._reader, args=(sink,))
        thread.daemon = True
        thread.start()
        self._thread = thread
        # sampling before start() returns, as a pull source: the idle window must not begin while the sampler's
        # Python is still starting (seconds under an emulator)
        if not self._first.wait(START_TIMEOUT_S):
            self.stop()
            raise EnergyUnavailable("the vcgencmd sampler (%s) delivered no reading within %d s"
                                    % (sys.executable, START_TIMEOUT_S))

    def _reader(self, sink):
        block = []
        for line in iter(self.proc.stdout.readline, ""):
            if not line.startswith(END):
                block.append(line)
                continue
            t = time.perf_counter()
            self._first.set()
            text, block = "".join(block), []
            if line.split()[1:2] != ["0"]:
                sink.fail("`%s pmic_read_adc` failed: %s" % (self.command, text.strip()[-200:] or line.strip()))
                continue
            got = self._select(parse_vcgencmd_pmic(text))
            if got is None:
                sink.fail("`vcgencmd pmic_read_adc` gave no usable rail (%s)" % (", ".join(self.rails) or "none paired"))
                continue
            sink.add(t, got[0], got[1])
        rc = self.proc.wait()
        self._first.set()  # (ended: start() must not wait for a reading that cannot come; the failure is recorded)
        if rc not in (0, None) and not self._stopping:
            err = self.proc.stderr.read().strip()[-300:] if self.proc.stderr else ""
            sink.fail("the vcgencmd sampler exited with code %s: %s" % (rc, err or "(no stderr)"))

    def stop(self):
        self._stopping = True
        stop_child(self.proc)


def open_source(interval_ms, rails, options):
    return VcgencmdPmicSource(rails, options, interval_ms)
