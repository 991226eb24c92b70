"""The wire contract between the host and the harness, in one place both sides read.

Plain data, standard library only, Python >= 3.6: the harness validates its spec against SPEC_FIELDS; the host
(edgekit.core.runner_interface.HarnessSpec) takes its defaults from it, and the host's runners read the exit
codes and stream prefixes from here instead of importing device code. The result document itself is validated
on the host by edgekit.core.results.BenchmarkResult (SCHEMA_VERSION below must match its schema_version).
"""

HARNESS_VERSION = 1
SCHEMA_VERSION = 1

# exit codes of `python3 harness.pyz SPEC.json`
EXIT_OK = 0
EXIT_OTHER = 1
EXIT_SPEC = 2
EXIT_RUNTIME_MISSING = 3
EXIT_MODEL_LOAD = 4
EXIT_INTERRUPTED = 130

# stderr lines: progress as `EDGEKIT-PROGRESS {json}`, a failure as one `EDGEKIT-ERROR {json}` (kind, message, hint)
PROGRESS_PREFIX = "EDGEKIT-PROGRESS "
ERROR_PREFIX = "EDGEKIT-ERROR "

# spec field -> (accepted JSON types, default); None default + listed in REQUIRED_FIELDS = required
SPEC_FIELDS = {
    "model_path": (str, None), "model_format": (str, None), "runtime": (str, None),
    "sha256": ((str, type(None)), None), "precision": ((str, type(None)), None), "threads": (int, 1),
    "inputs": (list, []), "inputs_file": ((str, type(None)), None), "seed": (int, 0),
    "warmup_runs": (int, 10), "warmup_seconds": ((int, float), 1.0), "min_runs": (int, 50),
    "min_seconds": ((int, float), 5.0), "max_seconds": ((int, float), 120.0), "energy_source": (str, "none"),
    "energy_rails": (list, []), "energy_interval_ms": (int, 100), "idle_seconds": ((int, float), 2.0),
    "thermal_zones": (list, []), "runtime_options": (dict, {}),
    "energy_options": (dict, {}),  # sensor overrides (sysfs root, sensor command), e.g. for captured layouts
    # evaluation mode (evaluate.py): held-out feeds in, the runtime's outputs out, both .npz on the device
    "eval_inputs_file": ((str, type(None)), None), "eval_outputs_file": ((str, type(None)), None),
    "eval_reduce": ((list, type(None)), None),  # per output (device order): what to keep of it (reduce.py), None: all
}
REQUIRED_FIELDS = ("model_path", "model_format", "runtime")
INPUT_FIELDS = ("name", "shape", "dtype", "low", "high")
