"""Memory guards: an input too large for the fidelity check or the device is refused with the numbers, up front."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper


def _relu(path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_fidelity_feeds_larger_than_the_host_are_refused_before_allocating(tmp_path, cli):
    # 1x3x100000x100000 float32 = 120 GB per feed: more than any machine this runs on has free, whatever its size
    r = cli("deploy", _relu(tmp_path / "relu.onnx"), "-p", "x86-cpu", "-q", "--no-bench", "--cache-dir", str(tmp_path / "c"),
            "--shape", "x=1x3x100000x100000")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: checking fidelity needs about 1200.0 GB")  # 8 samples + a float64 draft of one: 10 x 120 GB
    assert "120.0 GB each [x=1x3x100000x100000]" in r.stderr and "available" in r.stderr
    assert "--fidelity-samples" in r.stderr and "--shape" in r.stderr
    assert not (tmp_path / "c").exists(), "refused before any conversion"


def test_benchmark_input_larger_than_the_profiles_device_is_refused_before_converting(tmp_path, cli):
    (tmp_path / "tiny-board.yaml").write_text("name: tiny-board\ndescription: a 64 MB board\nextends: x86-cpu\nmemory_mb: 64\n")
    # one feed of 1x3x4000x2000 float32 = 96 MB: fits this host for the check, not the board's 64 MB
    r = cli("deploy", _relu(tmp_path / "relu.onnx"), "-p", str(tmp_path / "tiny-board.yaml"), "-q", "--cache-dir", str(tmp_path / "c"),
            "--shape", "x=1x3x4000x2000", "--fidelity-samples", "1")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: benchmarking needs about 0.1 GB"), r.stderr
    assert "tiny-board: memory_mb 64" in r.stderr and "--shape" in r.stderr
    assert not (tmp_path / "c").exists()


def test_estimate_counts_every_input_and_dtype():
    from edgekit.core.resources import feed_bytes
    from edgekit.core.runner_interface import InputSpec

    specs = [InputSpec(name="a", shape=[2, 3], dtype="float32"), InputSpec(name="b", shape=[5], dtype="int64"), InputSpec(name="s", shape=[], dtype="float16")]
    assert feed_bytes(specs) == 2 * 3 * 4 + 5 * 8 + 2
