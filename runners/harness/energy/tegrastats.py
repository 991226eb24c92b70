"""Jetson tegrastats: rail lines parsed as they arrive (JetPack 4 to 7 formats)."""

import os
import re
import subprocess
import threading
import time

from ..common import which
from . import EnergyUnavailable, Source, die_with_parent, select_power_mw, stop_child


_RAIL_RE = re.compile(r"(?:(?<=\s)|^)([A-Za-z][A-Za-z0-9_]*) (\d+(?:\.\d+)?)(mW)?/(\d+(?:\.\d+)?)(mW)?"
                      r"(?:/(\d+(?:\.\d+)?)(mW)?)?(?=\s|$)")


def parse_tegrastats_line(line):
    """Rails of one tegrastats line: {rail: current mW}. First value of `x/y` or `x/y/z` is the current one."""
    rails = {}
    for m in _RAIL_RE.finditer(line):
        name = m.group(1)
        if name == "NC" or name.startswith("NC_"):
            continue
        rails[name] = float(m.group(2))
    return rails


class TegrastatsSource(Source):
    """`tegrastats --interval N` as a subprocess; lines parsed as they arrive."""

    name = "tegrastats"
    push = True

    def __init__(self, interval_ms, rails, options):
        self.command = options.get("command") or which("tegrastats") or (
            "/usr/bin/tegrastats" if os.path.exists("/usr/bin/tegrastats") else None)
        if not self.command:
            raise EnergyUnavailable("tegrastats not found on PATH or /usr/bin (not a Jetson, or L4T tools absent)")
        self.interval_ms = int(interval_ms)
        self.rails = list(rails)
        self.proc = None
        self.notes = []
        self._stopping = False

    def start(self, sink):
        argv = [self.command, "--interval", str(self.interval_ms)]
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         universal_newlines=True, bufsize=1, preexec_fn=die_with_parent)
        except OSError as exc:
            raise EnergyUnavailable("cannot start %s: %s" % (" ".join(argv), exc))
        thread = threading.Thread(target=self._reader, args=(sink,))
        thread.daemon = True
        thread.start()
        self._thread = thread

    def _reader(self, sink):
        for line in iter(self.proc.stdout.readline, ""):
            t = time.perf_counter()
            rails = parse_tegrastats_line(line)
            if not rails:
                sink.fail("tegrastats prints no power rails (%r); on some images the rails need root"
                          % line.strip()[:120])
                continue
            mw, used = select_power_mw(rails, self.rails)
            if mw is None:
                sink.fail("tegrastats has no rail(s) %s (rails: %s)" % (", ".join(used), ", ".join(sorted(rails))))
                continue
            sink.add(t, mw / 1000.0, used)
        rc = self.proc.wait()
        if rc not in (0, None) and not self._stopping:
            err = self.proc.stderr.read().strip()[-300:] if self.proc.stderr else ""
            sink.fail("%s exited with code %s: %s" % (self.command, rc, err or "(no stderr)"))

    def stop(self):
        self._stopping = True
        stop_child(self.proc)


def open_source(interval_ms, rails, options):
    return TegrastatsSource(interval_ms, rails, options)
