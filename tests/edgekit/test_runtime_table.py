"""One runtime table: a fifth runtime is one table entry plus one harness adapter file, and then it is planned,
benchmarked on the device (the harness zipapp) and probed with nothing else touched.

The fifth runtime here is ONNX's own reference evaluator (`onnx.reference`, pure numpy): a real runtime that
computes PP-OCRv4 det, slowly, so the test runs the detector at 32x32."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.core import registry, runtimes
from edgekit.core.artifact import load_artifact
from edgekit.core.errors import PlanError
from edgekit.core.plan import PlanOptions, make_plan
from edgekit.core.profiles import load_profile
from edgekit.runners import harness_pyz
from edgekit.runners.harness import adapters

DET = Path(importlib.util.find_spec("rapidocr_onnxruntime").origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"

# The ONE device-side file a new runtime needs (Python 3.6, stdlib + numpy + the runtime).
ADAPTER = '''"""ONNX reference evaluator adapter (runtime "onnxref"): onnx.reference, pure numpy."""

import sys

from . import Session, module_version, norm_dtype
from ..errors import ModelLoadFailed, RuntimeMissing

INSTALL_HINT = "pip install onnx"


def import_runtime():
    try:
        import onnx
        from onnx.reference import ReferenceEvaluator
    except ImportError as exc:
        raise RuntimeMissing("onnx.reference is not importable with %s (%s)" % (sys.executable, exc), hint=INSTALL_HINT)
    return onnx, ReferenceEvaluator


class OnnxRefSession(Session):
    runtime = "onnxref"

    def __init__(self, model_path, threads, options):
        Session.__init__(self)
        onnx, evaluator = import_runtime()
        try:
            model = onnx.load(model_path)
            self.ev = evaluator(model)
        except Exception as exc:
            raise ModelLoadFailed("onnx.reference cannot load %s: %s" % (model_path, exc))
        inits = set(t.name for t in model.graph.initializer)
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]
            dtype = norm_dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
            self.input_names.append(vi.name)
            self.input_details.append({"name": vi.name, "shape": dims, "dtype": dtype})
        self.output_names = [o.name for o in model.graph.output]
        self.version = onnx.__version__
        self.providers = ["onnx.reference"]
        self.options = {"threads": 1}

    def run(self, feeds):
        return list(self.ev.run(None, feeds))


SESSION = OnnxRefSession


def probe():
    return {"onnxref": module_version("onnx")}
'''

ONNXREF = runtimes.Runtime(  # the ONE table entry
    name="onnxref", formats=("onnx",), precisions=("fp32",), extra=None, modules=("onnx",),
    harness_adapter="onnxref", probe_keys=("onnxref",), install_hints={"onnxref": "pip install onnx"},
)


@pytest.fixture
def onnxref(tmp_path, monkeypatch):
    """Install the entry and the adapter file for this test only (in-process and in the zipapp)."""
    extra_dir = tmp_path / "adapters"
    extra_dir.mkdir()
    (extra_dir / "onnxref.py").write_text(ADAPTER)
    monkeypatch.setitem(runtimes.RUNTIMES, "onnxref", ONNXREF)
    monkeypatch.setattr(adapters, "__path__", list(adapters.__path__) + [str(extra_dir)])  # host side
    pyz = harness_pyz.harness_pyz(tmp_path / "pyz", extra={"harness/adapters/onnxref.py": ADAPTER.encode()})
    monkeypatch.setattr(registry, "harness_path", lambda: pyz)  # device side: the zipapp the runners push
    yield
    sys.modules.pop("edgekit.runners.harness.adapters.onnxref", None)


@pytest.fixture
def board(tmp_path):
    p = tmp_path / "fake-board.yaml"
    p.write_text("name: fake-board\nextends: x86-cpu\nruntimes: [onnxref]\nprecisions: [fp32, int8]\n")
    return p


def test_without_the_entry_a_profile_naming_it_is_refused(board):
    from edgekit.core.errors import ProfileError

    with pytest.raises(ProfileError, match="onnxref"):
        load_profile(board)


def test_a_fifth_runtime_is_planned_benchmarked_and_probed(onnxref, board, tmp_path):
    from edgekit.cli.doctor import _mismatches
    from edgekit.workflows.deploy import benchmark, make_runner

    profile = load_profile(board)  # the profile schema accepts it: it reads the table
    art = load_artifact(DET)
    plan = make_plan(art, "det", profile, PlanOptions(simplify=False))
    assert plan.runtime == "onnxref" and plan.precision == "fp32" and plan.steps == []
    with pytest.raises(PlanError, match="edgekit builds fp32 for onnxref, not int8"):
        make_plan(art, "det", profile, PlanOptions(precision="int8"))

    # host side: the fidelity path opens the runtime through its adapter, and it computes the real model
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    ref = adapters.open_session("onnxruntime", str(DET), 1).run({"x": x})[0]
    got = adapters.open_session(ONNXREF.harness_adapter, str(DET), 1).run({"x": x})[0]
    assert got.shape == (1, 1, 32, 32) and np.allclose(got, ref, atol=1e-5)

    # device side: the local runner runs the zipapp (with the new adapter file) as a device would
    from edgekit.core.runner_interface import InputSpec

    with make_runner(profile) as runner:
        res = benchmark(art, profile, runner, [InputSpec(name="x", shape=[1, 3, 32, 32], dtype="float32")],
                        runtime=plan.runtime,
                        bench={"warmup_runs": 0, "warmup_seconds": 0.0, "min_runs": 2, "min_seconds": 0.0})
        probe = runner.probe()
    assert res.runtime.name == "onnxref" and res.runtime.providers == ["onnx.reference"]
    assert res.timing.runs == 2 and all(s > 0 for s in res.timing.samples_ms)
    assert probe["runtimes"]["onnxref"]["available"] and probe["runtimes"]["onnxref"]["version"] == __import__("onnx").__version__
    assert not [m for m in _mismatches(probe, profile) if "onnxref" in m]  # doctor: usable on this host
