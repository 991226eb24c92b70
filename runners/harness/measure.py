"""One benchmark run as the spec describes it: load, first inference, warm-up, energy over the timed window,
thermal and memory; returns the result document (validated on the host as edgekit's BenchmarkResult)."""

import json
import os
import time

from . import adapters
from .bench import latency_stats, timed_loop, warm_up
from .common import emit_progress, model_size_bytes, numpy
from .device import EMULATED_NOTE, device_info, peak_rss, rss_mb, thermal_snapshot, throttled_during
from .energy import EnergyCollector, EnergyUnavailable, open_energy_source, summarize_energy
from .errors import HarnessError, InferenceFailed, ModelLoadFailed, RuntimeMissing
from .evaluate import run_evaluation
from .schema import HARNESS_VERSION, SCHEMA_VERSION
from .spec import make_inputs


def _load(spec):
    """Import the runtime (timed apart), then open the session. Returns (session, import_ms, load_ms, rss before/after)."""
    if not os.path.exists(spec["model_path"]):
        raise ModelLoadFailed("model file not found: %s" % spec["model_path"],
                              hint="push the artifact to the device first")
    options = dict(spec["runtime_options"])
    if spec["inputs"]:
        options.setdefault("input_shapes", dict((i["name"], i["shape"]) for i in spec["inputs"]))
    emit_progress("load", state="start", runtime=spec["runtime"])
    rss_before = rss_mb()
    t_imp = time.perf_counter()
    try:  # imported separately so load_ms is session creation only
        adapters.adapter(spec["runtime"]).import_runtime()
    except RuntimeMissing:
        pass  # open_session raises it again, with the install hint
    import_ms = (time.perf_counter() - t_imp) * 1000.0
    t_load = time.perf_counter()
    session = adapters.open_session(spec["runtime"], spec["model_path"], spec["threads"], options)
    load_ms = (time.perf_counter() - t_load) * 1000.0
    emit_progress("load", state="done", load_ms=round(load_ms, 3))
    return session, import_ms, load_ms, rss_before, rss_mb()


def _first_inference(session, feeds, spec):
    """Bind the feeds once and time the first call of the same callable the timed loop uses."""
    try:
        step = session.bind(feeds)
        t = time.perf_counter()
        step()
        return step, (time.perf_counter() - t) * 1000.0
    except HarnessError:
        raise
    except Exception as exc:  # runtime-specific exception types; reported with the runtime's message
        raise InferenceFailed("%s inference failed on %s: %s" % (spec["runtime"], spec["model_path"],
                                                                   str(exc).strip()[:2000]))


def _start_energy(spec):
    """(collector or None, energy record if unavailable). The collector's sensor is already sampling."""
    try:
        source = open_energy_source(spec["energy_source"], spec["energy_interval_ms"], spec["energy_rails"],
                                    spec["energy_options"])
    except EnergyUnavailable as exc:
        return None, {"available": False, "reason": str(exc), "source": spec["energy_source"]}
    collector = EnergyCollector(source, spec["energy_interval_ms"])
    try:
        collector.start()
    except EnergyUnavailable as exc:
        collector.stop()
        return None, {"available": False, "reason": str(exc), "source": source.name}
    return collector, None


def _idle_and_timed(step, spec, collector):
    """Idle baseline (if measuring energy), then the timed loop; returns samples, window, capped, energy or None."""
    source = collector.source if collector is not None else None
    counter = source is not None and source.counter
    idle_t0 = idle_t1 = idle_c0 = idle_c1 = None
    if collector is not None:
        time.sleep(min(collector.interval_s, 1.0))  # let a push source deliver its first line
        emit_progress("idle", seconds=spec["idle_seconds"])
        idle_t0 = time.perf_counter()
        idle_c0 = source.counters() if counter else None
        time.sleep(spec["idle_seconds"])
        idle_c1 = source.counters() if counter else None
        idle_t1 = time.perf_counter()
    emit_progress("timed", runs=0, elapsed_s=0.0)
    c0 = source.counters() if counter else None
    try:
        samples, t0, t1, capped = timed_loop(step, spec["min_runs"], spec["min_seconds"], spec["max_seconds"])
    except HarnessError:
        raise
    except Exception as exc:  # runtime-specific exception types; reported with the runtime's message
        raise InferenceFailed("%s inference failed during timed runs: %s" % (spec["runtime"], str(exc)[:2000]))
    c1 = source.counters() if counter else None
    duration, runs = t1 - t0, len(samples)
    emit_progress("timed", runs=runs, elapsed_s=round(duration, 3), state="done")
    if collector is None:
        return samples, t0, t1, capped, None
    if source.push:  # the line stamped just before t1 may still be in the pipe
        time.sleep(min(collector.interval_s, 1.0) * 0.2)
    collector.stop()
    idle_w = collector.window(idle_t0, idle_t1)
    timed_w = collector.window(t0, t1)
    if collector.errors and not timed_w:
        energy = {"available": False, "source": source.name, "reason": "; ".join(collector.errors)}
    elif counter:
        energy = summarize_energy(idle_w, timed_w, duration, runs, source.name, [z[0] for z in source.zones],
                                  idle_energy_j=source.energy_j(idle_c0, idle_c1),
                                  timed_energy_j=source.energy_j(c0, c1), idle_s=idle_t1 - idle_t0)
    else:
        energy = summarize_energy(idle_w, timed_w, duration, runs, source.name, collector.rails)
    if energy.get("available"):  # the power trace from idle start to timed end, times relative to the timed start
        energy["trace"] = collector.trace(idle_t0, t1, t0)
        energy["idle_window"] = [round(idle_t0 - t0, 4), round(idle_t1 - t0, 4)]
    return samples, t0, t1, capped, energy


def _thermal_notes(before, after, warnings):
    """(throttled, notes) from the thermal snapshots; a throttling event goes to warnings."""
    notes = []
    throttled = throttled_during(before["throttled_raw"], after["throttled_raw"])
    if throttled is None:
        notes.append("throttling cannot be read on this device (no vcgencmd get_throttled)")
    if throttled:
        warnings.append("the device reported throttling during the run (%s)" % after["throttled_raw"])
    if not before["governor"]:
        notes.append("CPU governor/frequency not readable (no /sys/devices/system/cpu/cpu*/cpufreq)")
    if not before["temps_c"]:
        notes.append("no readable thermal zone (/sys/class/thermal)")
    if before["governor"] and before["governor"] not in ("performance",):
        notes.append("CPU governor is '%s' (not 'performance'): clocks may change during the run" % before["governor"])
    return throttled, notes


def run_benchmark(spec):
    """Run one spec; return the BenchmarkResult dict. Raises HarnessError subclasses."""
    numpy()
    warnings = []
    thermal_before = thermal_snapshot(spec["thermal_zones"])
    dev = device_info()
    session, import_ms, load_ms, rss_before, rss_after = _load(spec)
    feeds, input_records = make_inputs(spec, session.input_details)
    step, first_ms = _first_inference(session, feeds, spec)
    warnings.extend(session.warnings)  # after bind(): it may say what the timed call could not do
    emit_progress("warmup", state="start")
    w_runs, warmup_s, w_capped = warm_up(step, spec["warmup_runs"], spec["warmup_seconds"], spec["max_seconds"])
    if w_capped:
        warnings.append("warm-up stopped at max_seconds=%s after %d runs" % (spec["max_seconds"], w_runs))
    emit_progress("warmup", runs=w_runs, elapsed_s=round(warmup_s, 3))

    # Energy: idle baseline first, then the collector keeps running over the timed window.
    collector, energy = _start_energy(spec)
    try:  # the sensor (e.g. a tegrastats child) is always stopped, also on errors and SIGTERM
        samples, t0, t1, capped, measured = _idle_and_timed(step, spec, collector)
    finally:
        if collector is not None:
            collector.stop()
    energy = measured if measured is not None else energy
    duration, runs = t1 - t0, len(samples)
    if capped:
        warnings.append("timed runs stopped at max_seconds=%s after %d runs (min_runs=%d, min_seconds=%s not both "
                        "met)" % (spec["max_seconds"], runs, spec["min_runs"], spec["min_seconds"]))
    if collector is not None:
        warnings.extend("energy: " + n for n in (getattr(collector.source, "notes", ()) or ()))
        if energy.get("available") and energy.get("samples", 0) < 5 and not collector.source.counter:
            warnings.append("energy: only %d power samples in the timed window; raise min_seconds for a stable "
                            "average" % energy["samples"])
    thermal_after = thermal_snapshot(spec["thermal_zones"])
    peak, mem_source = peak_rss()
    throttled, notes = _thermal_notes(thermal_before, thermal_after, warnings)
    evaluation = run_evaluation(session, spec) if spec["eval_inputs_file"] else None  # after timing: never inside it
    runtime_options = dict(session.options)
    runtime_options["import_ms"] = round(import_ms, 3)
    runtime_options["harness_version"] = HARNESS_VERSION
    session.close()
    samples_ms = [s * 1000.0 for s in samples]
    if dev.get("emulated"):
        warnings.insert(0, "%s: %s; every timing here is the emulator's, not the device's" % (EMULATED_NOTE, dev["emulation"]))
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runner": "local",
        "host": None,
        "model": {"path": spec["model_path"], "format": spec["model_format"], "sha256": spec["sha256"],
                  "size_bytes": model_size_bytes(spec["model_path"], spec["model_format"]),
                  "precision": spec["precision"]},
        "runtime": {"name": spec["runtime"], "version": session.version, "threads": spec["threads"],
                    "providers": list(session.providers), "options": json.loads(json.dumps(runtime_options, default=str))},
        "device": dev,
        "inputs": input_records,
        "timing": {"load_ms": load_ms, "first_inference_ms": first_ms, "warmup_runs": w_runs, "warmup_s": warmup_s,
                   "runs": runs, "duration_s": duration, "samples_ms": samples_ms, "stats": latency_stats(samples_ms),
                   "throughput_ips": runs / duration if duration > 0 else 0.0,
                   "timed_region": session.options.get("timed_region"),
                   "note": EMULATED_NOTE if dev.get("emulated") else None},
        "memory": {"peak_rss_mb": peak, "rss_before_load_mb": rss_before, "rss_after_load_mb": rss_after,
                   "source": mem_source},
        "energy": energy if energy is not None else {"available": False, "reason": "energy not measured"},
        "thermal": {"before": thermal_before, "after": thermal_after, "throttled": throttled, "notes": notes},
        "warnings": warnings,
        "evaluation": evaluation,
    }
