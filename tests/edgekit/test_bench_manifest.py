"""`edgekit bench` on deploy's own output feeds what deploy fed (shapes from manifest.json); --shape still wins."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

QUICK = ["--min-seconds", "0.05", "--min-runs", "2", "--warmup-runs", "0", "--warmup-seconds", "0"]


def _relu(path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dyn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.mark.parametrize("runtime,name", [("openvino", "model.xml"), ("onnxruntime", "relu.onnx")])
def test_bench_on_deploy_output_uses_the_manifest_shapes(tmp_path, cli, runtime, name):
    m = _relu(tmp_path / "relu.onnx")
    out = tmp_path / "out"
    r = cli("deploy", m, "-p", "x86-cpu", "--runtime", runtime, "--no-bench", "--shape", "x=1x3x24x40", "--cache-dir", str(tmp_path / "c"), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    plain = cli("bench", m, "-p", "x86-cpu", *QUICK)
    assert plain.returncode != 0 and "symbolic dims" in plain.stderr  # the source alone does not say which shape
    b = cli("bench", str(out / name), "-p", "x86-cpu", "--json", *QUICK)
    assert b.returncode == 0, b.stderr[-2000:]
    res = json.loads(b.stdout)
    assert [i["shape"] for i in res["inputs"]] == [[1, 3, 24, 40]]
    again = cli("bench", str(out / name), "-p", "x86-cpu", "--json", "--shape", "x=1x3x8x8", *QUICK)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [i["shape"] for i in json.loads(again.stdout)["inputs"]] == [[1, 3, 8, 8]]


def test_a_file_that_differs_from_the_manifest_is_not_matched(tmp_path, cli):
    m = _relu(tmp_path / "relu.onnx")
    out = tmp_path / "out"
    assert cli("deploy", m, "-p", "x86-cpu", "--runtime", "onnxruntime", "--no-bench", "--shape", "x=1x3x24x40", "--cache-dir", str(tmp_path / "c"), "--out", str(out)).returncode == 0
    other = out / "relu.onnx"
    _relu(other.with_name("tmp.onnx"))
    g = onnx.load(str(other.with_name("tmp.onnx")))
    g.graph.name = "changed"
    onnx.save(g, str(other))  # same name, other bytes: the manifest's shapes do not apply
    r = cli("bench", str(other), "-p", "x86-cpu", *QUICK)
    assert r.returncode != 0 and "symbolic dims" in r.stderr


def test_api_bench_on_deploy_output_feeds_what_deploy_fed(tmp_path, cli):
    """The Python API follows the same rule as the CLI (one helper, edgekit.workflows.bench.inputs_for)."""
    from edgekit import api
    from edgekit.core.errors import EdgekitError

    m = _relu(tmp_path / "relu.onnx")
    out = tmp_path / "out"
    assert cli("deploy", m, "-p", "x86-cpu", "--runtime", "onnxruntime", "--no-bench", "--shape", "x=1x3x24x40", "--cache-dir", str(tmp_path / "c"), "--out", str(out)).returncode == 0
    quick = {"min_seconds": 0.05, "min_runs": 2, "warmup_runs": 0, "warmup_seconds": 0}
    with pytest.raises(EdgekitError, match="symbolic dims"):
        api.bench(m, "x86-cpu", bench=quick, history="off")
    res = api.bench(str(out / "relu.onnx"), "x86-cpu", bench=quick, history="off")
    assert [i["shape"] for i in res.inputs] == [[1, 3, 24, 40]]
    res = api.bench(str(out / "relu.onnx"), "x86-cpu", bench=quick, history="off", shapes={"x": [1, 3, 8, 8]})
    assert [i["shape"] for i in res.inputs] == [[1, 3, 8, 8]]
