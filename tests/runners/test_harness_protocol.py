"""The host side of the harness contract: one wire schema, one exit-code mapping shared by every runner."""

from __future__ import annotations

import json

from edgekit.core.errors import RunnerError
from edgekit.core.runner_interface import HarnessSpec
from edgekit.runners.harness import schema
from edgekit.runners.harness_protocol import harness_error, stream_line


def test_host_spec_and_harness_schema_have_the_same_fields_and_defaults():
    assert set(HarnessSpec.model_fields) == set(schema.SPEC_FIELDS)
    for name, field in HarnessSpec.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        if name in schema.REQUIRED_FIELDS:
            assert field.is_required(), name
        else:
            assert default == schema.SPEC_FIELDS[name][1], name
    # what the host sends is what the harness accepts: every field of a dumped spec is known to the schema
    doc = json.loads(HarnessSpec(model_path="m.onnx", model_format="onnx", runtime="onnxruntime").model_dump_json())
    assert set(doc) == set(schema.SPEC_FIELDS)


def test_stream_lines():
    assert stream_line(schema.PROGRESS_PREFIX + '{"phase": "timed", "runs": 3}') == ("progress", {"phase": "timed", "runs": 3})
    assert stream_line(schema.ERROR_PREFIX + '{"kind": "spec"}') == ("error", {"kind": "spec"})
    assert stream_line(schema.ERROR_PREFIX + "{not json") == (None, None)
    assert stream_line("a runtime's own log line") == (None, None)


def test_exit_codes_map_to_typed_errors_with_hints():
    rm = harness_error(schema.EXIT_RUNTIME_MISSING, "python3 harness.pyz s.json", "tail",
                       {"kind": "runtime_missing", "message": "onnxruntime is not importable", "hint": "pip install onnxruntime"},
                       host="pi@board")
    assert isinstance(rm, RunnerError) and rm.kind == "runtime_missing" and rm.remote_exit_code == 3
    assert "runtime missing on the device: onnxruntime is not importable" in rm.message and rm.hint == "pip install onnxruntime"
    assert rm.host == "pi@board" and "python3 harness.pyz s.json" in rm.message
    spec = harness_error(schema.EXIT_SPEC, "c", "", {"kind": "spec", "message": "spec field 'runtime' is 'x'"})
    assert "rejected its run spec: spec field 'runtime' is 'x'" in spec.message and spec.hint
    load = harness_error(schema.EXIT_MODEL_LOAD, "c", "", None, where="here")
    assert load.message.startswith("the model failed to load here") and load.kind == "error"
    oom = harness_error(137, "c", "", None, phase="remote benchmark")
    assert "remote benchmark was killed (probably out of memory)" in oom.message and "dmesg" in oom.hint
    sig = harness_error(-15, "c", "", None)
    assert "killed by signal 15" in sig.message
    other = harness_error(1, "c", "", None)
    assert "exited with code 1 without an error report" in other.message
