"""Energy sources: one module per sensor; the module's name is the `energy_source` name in the spec.

A sensor module defines open_source(interval_ms, rails, options) -> Source, or raises EnergyUnavailable with the
precise reason it cannot be read here. Its pure parsers (text -> readings) live beside it and are unit-tested with
real captured output. This package holds what every sensor shares: the Source base, the background collector
that samples over exactly the timed window, rail selection and the energy summary.
"""

import importlib
import pkgutil
import threading
import time

# Jetson input rails: the board's total when present (JetPack 4: POM_5V_IN, JetPack 5+: VDD_IN)
_TOTAL_RAILS = ("POM_5V_IN", "VDD_IN")


def names():
    """Every sensor this harness can read ("none" included): its sensor modules, found in the package or zipapp."""
    return ["none"] + sorted(n for _f, n, _p in pkgutil.iter_modules(__path__) if not n.startswith("_"))


def select_power_mw(rails, wanted=None):
    """Total power (mW) from rails: the requested rails summed, else the input rail, else all rails summed."""
    if not rails:
        return None, []
    if wanted:
        missing = [r for r in wanted if r not in rails]
        if missing:
            return None, missing
        return sum(rails[r] for r in wanted), list(wanted)
    for total in _TOTAL_RAILS:
        if total in rails:
            return rails[total], [total]
    names = sorted(rails)
    return sum(rails[r] for r in names), names


class EnergyUnavailable(Exception):
    """The configured energy source cannot be read here; the message is the precise reason."""


class Source(object):
    """A power source: read() -> (watts, rails dict) for pull sources; push sources feed a collector."""

    name = "?"
    push = False
    counter = False  # True: reads an energy counter (counters(), energy_j()) instead of power samples
    min_interval_s = 0.0
    notes = ()

    def read(self):
        raise NotImplementedError

    def stop(self):
        pass


def die_with_parent():
    """In a sensor child: ask Linux to SIGTERM it when the harness dies, even by SIGKILL (never left running)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, ImportError):
        pass  # not Linux/glibc: the harness's own finally still stops the child


def stop_child(proc):
    """Stop a sensor child process: SIGTERM, then SIGKILL after 3 s; a child that already ended is left alone."""
    import subprocess
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def open_energy_source(name, interval_ms, rails, options):
    """The configured source, or raise EnergyUnavailable with the precise reason."""
    if name == "none":
        raise EnergyUnavailable("no energy source configured (energy_source: none)")
    if name not in names():
        raise EnergyUnavailable("unknown energy source '%s'" % name)
    return importlib.import_module(__name__ + "." + name).open_source(interval_ms, rails, options)


class EnergyCollector(object):
    """Collects (time, watts) samples in a background thread; windows are marked by perf_counter times."""

    def __init__(self, source, interval_ms):
        self.source = source
        self.interval_s = max(interval_ms / 1000.0, source.min_interval_s)
        self.samples = []  # (t, watts)
        self.rails = []
        self.errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def add(self, t, watts, rails):
        with self._lock:
            self.samples.append((t, watts))
            self.rails = rails

    def fail(self, reason):
        with self._lock:
            if reason not in self.errors:
                self.errors.append(reason)

    def start(self):
        if self.source.push:
            self.source.start(self)
            return
        self._thread = threading.Thread(target=self._loop)
        self._thread.daemon = True
        self._thread.start()

    def _loop(self):
        next_t = time.perf_counter()
        while not self._stop.is_set():
            r = self.source.read()
            t = time.perf_counter()
            if r is not None:
                self.add(t, r[0], r[1])
            next_t += self.interval_s
            delay = next_t - time.perf_counter()
            if delay < 0:
                next_t = time.perf_counter()
                delay = 0
            self._stop.wait(delay)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.source.stop()

    def window(self, t0, t1):
        with self._lock:
            return [w for t, w in self.samples if t0 <= t <= t1]

    def trace(self, t_from, t_to, t_zero, max_points=2000):
        """[[t - t_zero, watts], ...] for samples in [t_from, t_to], thinned to at most `max_points` (every k-th) so a
        long run keeps the result small; report.html draws it."""
        with self._lock:
            pts = [(t - t_zero, w) for t, w in self.samples if t_from <= t <= t_to]
        k = max(1, (len(pts) + max_points - 1) // max_points)
        return [[round(t, 4), round(w, 4)] for t, w in pts[::k]]


def summarize_energy(idle_watts, timed_watts, window_s, runs, source_name, rails, idle_energy_j=None,
                     timed_energy_j=None, idle_s=None):
    """Energy record from samples (or counter energies for RAPL). Pure: unit-tested with hand-computed values."""
    out = {"available": True, "reason": None, "source": source_name, "rails": list(rails),
           "samples": len(timed_watts), "idle_samples": len(idle_watts), "window_s": window_s}
    if timed_energy_j is not None:
        avg = timed_energy_j / window_s if window_s > 0 else None
        idle = idle_energy_j / idle_s if (idle_energy_j is not None and idle_s) else None
    else:
        if not timed_watts:
            return {"available": False, "source": source_name, "rails": list(rails), "samples": 0,
                    "idle_samples": len(idle_watts), "window_s": window_s,
                    "reason": "no power sample fell inside the %.3f s timed window; raise min_seconds above the "
                              "sampling interval" % window_s}
        avg = sum(timed_watts) / len(timed_watts)
        idle = sum(idle_watts) / len(idle_watts) if idle_watts else None
    out["avg_power_w"] = avg
    out["idle_power_w"] = idle
    out["sample_rate_hz"] = (len(timed_watts) / window_s) if window_s > 0 else None
    if avg is not None and runs > 0:
        out["energy_per_inference_mj"] = avg * window_s / runs * 1000.0
        if idle is not None:
            out["energy_above_idle_per_inference_mj"] = (avg - idle) * window_s / runs * 1000.0
    return out
