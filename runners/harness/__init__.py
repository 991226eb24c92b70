"""edgekit's on-device harness, shipped to devices as one zipapp (`python3 harness.pyz SPEC.json`).

Runs ON THE DEVICE: standard library + numpy + the runtime only, Python >= 3.6 (Jetson Nano / JetPack 4); it never
imports edgekit. Modules: schema (the wire contract the host reads too), spec (validation, inputs), adapters/ (one
per runtime), energy/ (one per sensor), bench (the one timing loop), measure (one benchmark run), device (thermal,
memory, identity), probe (`--probe`), __main__ (CLI, exit codes). Relative imports only, so the same files work as
`edgekit.runners.harness` on the host (fidelity opens sessions through adapters) and as `harness` in the zipapp
built by edgekit.runners.harness_pyz. This __init__ imports nothing: reading schema does not load device code.

Measurement rules (documented here because users trust these numbers):
  * load_ms: session creation only (runtime import time is reported in runtime.options.import_ms).
  * first_inference_ms: the first call of the same bound inference callable the timed loop uses.
  * warm-up runs until BOTH warmup_runs and warmup_seconds are satisfied.
  * timed runs until BOTH min_runs and min_seconds are satisfied, capped at max_seconds (warning if cut short).
  * each sample is the wall time (time.perf_counter) of one bare runtime call, inputs bound once beforehand
    (ORT: sess.run; OpenVINO: InferRequest.infer; TFLite: invoke; TensorRT: H2D copy + execute + D2H + sync).
  * stats via numpy: mean, median, p90/p99 by linear interpolation between closest ranks (numpy's default
    percentile method), min, max, std with ddof=1 (sample std; 0 for a single run).
  * throughput_ips = runs / timed duration (first timed call start to last timed call end).
  * peak RSS: max of getrusage(RUSAGE_SELF).ru_maxrss and /proc/self/status VmHWM (whole process: interpreter,
    numpy and runtime included). RSS before/after load from /proc/self/status VmRSS.
  * energy: sampled in a background thread; the idle baseline is measured first (idle_seconds, no inference),
    then power is averaged over exactly the timed window. Never estimated: if no sensor, available=false + reason.
"""
