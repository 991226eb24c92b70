"""trtexec parser on every real capture (TensorRT 8.2.3 .. 10.16.1); expected values read from the files by hand."""

from pathlib import Path

import pytest

from edgekit.converters.trtexec_parse import (
    engine_mismatch_message,
    failing_node,
    latency_stats,
    parse_trtexec,
    version_from_tag,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _parse(name):
    return parse_trtexec((FIX / name).read_text(encoding="utf-8"))


def test_trt823_load_engine():
    s = _parse("trtexec_trt8.2.3_loadEngine_full.txt")
    assert s.trt_version == "8.2.3" and s.trt_version_tag == "8203"
    assert s.passed is True
    assert s.gpu == "NVIDIA GeForce GTX 1070" and s.compute_capability == "6.1"
    assert s.precision == "FP32"
    assert s.loaded_engine == "./model-FP32.plan"
    assert s.build_time_s is None  # engine loaded, not built
    assert s.engine_load_s == pytest.approx(0.529544)
    assert s.throughput_qps == pytest.approx(6199.99)
    assert s.queries == 18603 and s.walltime_s == pytest.approx(3.00049)
    assert s.latency.min_ms == pytest.approx(0.156128)
    assert s.latency.max_ms == pytest.approx(0.428467)
    assert s.latency.mean_ms == pytest.approx(0.159595)
    assert s.latency.median_ms == pytest.approx(0.15918)
    assert s.latency.percentiles_ms == {"99": pytest.approx(0.164795)}
    assert s.end_to_end.mean_ms == pytest.approx(0.284975)  # only 8.2 prints End-to-End Host Latency here
    assert s.gpu_compute.median_ms == pytest.approx(0.152588)
    assert s.gpu_compute.p(99) == pytest.approx(0.156616)
    assert s.h2d.mean_ms == pytest.approx(0.00406377)
    assert s.d2h.max_ms == pytest.approx(0.00506592)
    assert s.enqueue.p(99) == pytest.approx(0.0866699)
    assert s.total_gpu_compute_s == pytest.approx(2.8484)
    assert s.cuda_graph is False and s.data_transfers is True
    assert s.errors == []


def test_trt841_load_engine():
    s = _parse("trtexec_trt8.4.1_loadEngine_full.txt")
    assert s.trt_version == "8.4.1"
    assert s.gpu == "NVIDIA GeForce GTX 1070"
    assert s.deserialize_s == pytest.approx(0.421986)
    assert s.throughput_qps == pytest.approx(5888.57)
    assert s.latency.median_ms == pytest.approx(0.161438)
    assert s.latency.p(90) is None and s.latency.p(99) == pytest.approx(0.178589)
    assert s.end_to_end is None
    assert s.gpu_compute.mean_ms == pytest.approx(0.15449)
    assert s.total_gpu_compute_s == pytest.approx(2.72968)


def test_trt860_excerpt_has_three_percentiles_and_cv():
    s = _parse("trtexec_trt8.6.0_loadEngine_verbose_excerpt.txt")
    assert s.trt_version == "8.6.0"
    assert s.gpu is None  # the excerpt has no device block
    assert s.throughput_qps == pytest.approx(21009.2)
    assert s.latency.percentiles_ms == {
        "90": pytest.approx(0.0532227),
        "95": pytest.approx(0.053772),
        "99": pytest.approx(0.0630798),
    }
    assert s.gpu_compute.p(95) == pytest.approx(0.045105)
    assert s.gpu_compute_cv_percent == pytest.approx(44.3558)
    st = latency_stats(s, "gpu_compute")
    assert st["std_ms"] == pytest.approx(0.0451127 * 0.443558)
    assert st["p90_ms"] == pytest.approx(0.0449219)


def test_trt10161_onnx_build_and_run():
    s = _parse("trtexec_trt10.16.1_onnx_build_and_run_full.txt")
    assert s.trt_version == "10.16.1" and s.trt_version_tag == "101601"
    assert s.gpu == "NVIDIA H100 PCIe" and s.compute_capability == "9.0"
    assert s.onnx_path.endswith("model-trained.onnx")
    assert s.build_time_s == pytest.approx(8.09138)
    assert s.engine_generation_s == pytest.approx(7.41113)
    assert s.engine_size_mib == pytest.approx(12.5744)
    assert s.throughput_qps == pytest.approx(15374.3)
    assert s.latency.mean_ms == pytest.approx(0.0441053)
    assert s.latency.p(95) == pytest.approx(0.0458984)
    assert s.gpu_compute.min_ms == pytest.approx(0.0331421)
    assert s.gpu_compute.p(99) == pytest.approx(0.041748)
    assert s.gpu_compute_cv_percent == pytest.approx(6.58751)
    assert s.passed is True


def test_trt10161_cuda_graph_no_transfers():
    s = _parse("trtexec_trt10.16.1_loadEngine_cudagraph_verbose_full.txt")
    assert s.cuda_graph is True and s.data_transfers is False
    assert s.h2d.mean_ms == 0 and s.d2h.p(99) == 0
    assert s.throughput_qps == pytest.approx(24896.9)
    assert s.latency.median_ms == pytest.approx(0.0388184)
    assert s.deserialize_s == pytest.approx(0.0245724)
    st = latency_stats(s)
    assert st["p99_ms"] == pytest.approx(0.0390625) and st["std_ms"] is None


@pytest.mark.parametrize("tag,version", [("8203", "8.2.3"), ("8401", "8.4.1"), ("8600", "8.6.0"), ("101601", "10.16.1"), ("100300", "10.3.0")])
def test_version_tags(tag, version):
    assert version_from_tag(tag) == version


def test_failed_run_collects_errors_and_flags_engine_mismatch():
    # Error lines in the shape TensorRT prints them; the banner and prefix format come from the captures above.
    text = (
        "&&&& RUNNING TensorRT.trtexec [TensorRT v8401] # trtexec --loadEngine=m.engine\n"
        "[06/15/2022-05:43:36] [E] Error[1]: [stdArchiveReader.cpp::StdArchiveReader::40] Error Code 1: Serialization "
        "(Serialization assertion stdVersionRead == serializationVersion failed.Version tag does not match. Note: Current "
        "Version: 213, Serialized Engine Version: 232)\n"
        "[06/15/2022-05:43:36] [E] Engine deserialization failed\n"
        "&&&& FAILED TensorRT.trtexec [TensorRT v8401] # trtexec --loadEngine=m.engine\n"
    )
    s = parse_trtexec(text)
    assert s.passed is False
    assert len(s.errors) == 2 and "Engine deserialization failed" in s.errors[1]
    assert "Version tag does not match" in engine_mismatch_message(text)
    assert engine_mismatch_message((FIX / "trtexec_trt8.4.1_loadEngine_full.txt").read_text()) is None


def test_failing_node_from_onnx_parser_error():
    text = (
        "[E] [TRT] ModelImporter.cpp:773: While parsing node number 7 [NonMaxSuppression -> \"boxes\"]:\n"
        "[E] [TRT] ModelImporter.cpp:776: input: \"x\"\n"
        "[E] [TRT] ModelImporter.cpp:779: --- End node ---\n"
        "[E] [TRT] ModelImporter.cpp:180: No importer registered for op: NonMaxSuppression\n"
    )
    assert failing_node(text)["op"] == "NonMaxSuppression"
