"""Registry: steps and runners looked up by name. The only route from edgekit/ into converters/ and runners/."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, Type

from edgekit.core.errors import EdgekitError, closest

# name -> "module:Class". Modules are imported on first use, so `edgekit --help` stays fast.
STEPS: Dict[str, str] = {
    "export": "edgekit.converters.export:ExportStep",
    "simplify": "edgekit.converters.simplify:SimplifyStep",
    "quantize-ort": "edgekit.converters.quantize_ort:QuantizeOrtStep",
    "fp16": "edgekit.converters.fp16:Fp16Step",
    "prune": "edgekit.converters.prune:PruneStep",
    "lowrank": "edgekit.converters.lowrank:LowRankStep",
    "weight-share": "edgekit.converters.weight_share:WeightShareStep",
    "openvino": "edgekit.converters.openvino:OpenVinoStep",
    "tflite": "edgekit.converters.tflite:TfliteStep",
    "litert-torch": "edgekit.converters.litert_torch:LitertTorchStep",
    "tensorrt": "edgekit.converters.tensorrt:TensorRtStep",
}

RUNNERS: Dict[str, str] = {
    "local": "edgekit.runners.local:LocalRunner",
    "ssh": "edgekit.runners.ssh:SSHRunner",
    "adb": "edgekit.runners.adb:AdbRunner",
}


def _load(table: Dict[str, str], kind: str, name: str):
    if name not in table:
        near = closest(name, table)
        hint = (f"did you mean {', '.join(near)}? " if near else "") + f"known {kind}s: {', '.join(sorted(table))}"
        raise EdgekitError(f"unknown {kind} '{name}'", hint=hint)
    module, _, attr = table[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise EdgekitError(f"{kind} '{name}' is not part of this edgekit installation ({module} is missing)", hint="reinstall edgekit: pip install --force-reinstall edgekit") from exc
    return getattr(mod, attr)


def get_step(name: str) -> Type:
    return _load(STEPS, "step", name)


def get_runner(name: str) -> Type:
    return _load(RUNNERS, "runner", name)


def harness_path() -> Path:
    """The on-device harness as one zipapp (`python3 harness.pyz SPEC.json`), built deterministically from
    edgekit.runners.harness and cached by its sha256 (edgekit.runners.harness_pyz)."""
    return importlib.import_module("edgekit.runners.harness_pyz").harness_pyz()


def harness_module(name: str = "adapters"):
    """A module of the harness package imported in-process on the host: `adapters` (runtime sessions for fidelity
    checks), `bench` (the one timing loop) or `schema` (the wire contract). Never needed to parse a result."""
    return importlib.import_module(f"edgekit.runners.harness.{name}")
