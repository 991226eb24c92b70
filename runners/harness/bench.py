"""The one timing loop: warm-up by count AND time, then timed runs by count AND time (capped), and their stats.

Used by the harness on the device, and in-process on the host by edgekit's compression reports and the
benchmark scripts (through edgekit.core.registry.harness_module("bench")), so every latency edgekit prints is
measured the same way. Standard library + numpy only; Python >= 3.6.
"""

import time

from .common import emit_progress, numpy


def latency_stats(samples_ms):
    """mean, median, p90/p99 (numpy's linear interpolation), min, max, sample std (ddof=1; 0 for one run), in ms."""
    np = numpy()
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"mean_ms": float(a.mean()), "median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "min_ms": float(a.min()), "max_ms": float(a.max()),
            "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def warm_up(step, min_runs, min_seconds, max_seconds):
    """Call `step` until min_runs AND min_seconds are met (stop at max_seconds). Returns (runs, seconds, capped)."""
    start = time.perf_counter()
    runs = 0
    while True:
        now = time.perf_counter()
        if runs >= min_runs and now - start >= min_seconds:
            return runs, time.perf_counter() - start, False
        if now - start >= max_seconds:
            return runs, time.perf_counter() - start, True
        step()
        runs += 1


def timed_loop(step, min_runs, min_seconds, max_seconds, progress_every_s=1.0):
    """Run `step` until min_runs AND min_seconds are met (cap max_seconds). Returns (samples s, t0, t1, capped)."""
    perf = time.perf_counter
    samples = []
    append = samples.append
    n = 0
    t_start = perf()
    next_report = t_start + progress_every_s
    capped = False
    t1 = t_start
    while True:
        t0 = perf()
        step()
        t1 = perf()
        append(t1 - t0)
        n += 1
        elapsed = t1 - t_start
        if n >= min_runs and elapsed >= min_seconds:
            break
        if elapsed >= max_seconds:
            capped = True
            break
        if t1 >= next_report:
            emit_progress("timed", runs=n, elapsed_s=round(elapsed, 3))
            next_report = t1 + progress_every_s
    return samples, t_start, t1, capped


def time_callable(step, warmup_runs=3, warmup_seconds=0.0, min_runs=10, min_seconds=0.5, max_seconds=600.0):
    """Warm up, then time `step` (in-process use): latency_stats in ms plus runs, duration_s and samples_ms."""
    warm_up(step, warmup_runs, warmup_seconds, max_seconds)
    samples, t0, t1, capped = timed_loop(step, min_runs, min_seconds, max_seconds, progress_every_s=float("inf"))
    ms = [s * 1000.0 for s in samples]
    out = latency_stats(ms)
    out.update({"runs": len(ms), "duration_s": t1 - t0, "capped": capped, "samples_ms": ms})
    return out
