"""Parse trtexec's text output (TensorRT 8.2 through 10.x) into typed numbers; pure, no TensorRT needed."""

from __future__ import annotations

import re
from typing import Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field


class StatLine(BaseModel):
    """One 'min = .. ms, max = .., mean = .., median = .., percentile(P%) = ..' summary line, in ms."""

    model_config = ConfigDict(extra="forbid")
    min_ms: float
    max_ms: float
    mean_ms: float
    median_ms: float
    percentiles_ms: Dict[str, float] = Field(default_factory=dict)  # "90", "95", "99" -> ms

    def p(self, q: int) -> Optional[float]:
        return self.percentiles_ms.get(str(q))


class TrtexecSummary(BaseModel):
    """Everything edgekit reads from one trtexec run; fields absent from the log stay None."""

    model_config = ConfigDict(extra="forbid")
    trt_version: Optional[str] = None  # "8.2.3", "10.16.1"
    trt_version_tag: Optional[str] = None  # "8203", "101601" from the banner
    command: Optional[str] = None
    passed: Optional[bool] = None  # None when no &&&& PASSED/FAILED line was seen
    gpu: Optional[str] = None
    compute_capability: Optional[str] = None
    precision: Optional[str] = None  # the "Precision:" build option, e.g. "FP32", "FP32+FP16"
    onnx_path: Optional[str] = None
    saved_engine: Optional[str] = None
    loaded_engine: Optional[str] = None
    build_time_s: Optional[float] = None  # "Engine built in X sec."
    engine_generation_s: Optional[float] = None  # "[TRT] Engine generation completed in X seconds."
    engine_size_mib: Optional[float] = None
    deserialize_s: Optional[float] = None
    engine_load_s: Optional[float] = None  # "Engine loaded in X sec." (file read; 8.x)
    queries: Optional[int] = None
    walltime_s: Optional[float] = None
    throughput_qps: Optional[float] = None
    latency: Optional[StatLine] = None  # host latency = H2D + GPU compute + D2H
    end_to_end: Optional[StatLine] = None
    enqueue: Optional[StatLine] = None
    h2d: Optional[StatLine] = None
    gpu_compute: Optional[StatLine] = None
    d2h: Optional[StatLine] = None
    total_gpu_compute_s: Optional[float] = None
    gpu_compute_cv_percent: Optional[float] = None
    cuda_graph: Optional[bool] = None
    data_transfers: Optional[bool] = None
    errors: List[str] = Field(default_factory=list)  # lines tagged [E]


_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_PREFIX = r"^(?:\[[^\]]*\]\s*)?\[(?P<lvl>[IWEVF])\]\s?"
_STAT_NAMES = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
_STAT_RE = re.compile(r"^(" + "|".join(re.escape(k) for k in _STAT_NAMES) + r"): (min = .*)$")
_BANNER_RE = re.compile(r"^&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec \[TensorRT v(\d+)\](?: \[[^\]]*\])? # (.*)$")


def _stat(text: str) -> Optional[StatLine]:
    vals: Dict[str, float] = {}
    pct: Dict[str, float] = {}
    for key, val in re.findall(r"(min|max|mean|median|percentile\(\d+(?:\.\d+)?%\)) = " + _NUM + r" ms", text):
        if key.startswith("percentile"):
            q = key[len("percentile(") : -2]
            pct[q[:-2] if q.endswith(".0") else q] = float(val)
        else:
            vals[key] = float(val)
    if not {"min", "max", "mean", "median"} <= set(vals):
        return None
    return StatLine(min_ms=vals["min"], max_ms=vals["max"], mean_ms=vals["mean"], median_ms=vals["median"], percentiles_ms=pct)


def version_from_tag(tag: str) -> str:
    """'8203' -> '8.2.3', '101601' -> '10.16.1' (TensorRT's banner encodes major*1000+minor*100+patch)."""
    n = int(tag)
    if n >= 100000:  # 10.x and later: MMmmpp
        major, rest = divmod(n, 10000)
        minor, patch = divmod(rest, 100)
    else:  # 8.x: M*1000 + m*100 + p
        major, rest = divmod(n, 1000)
        minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def parse_trtexec(text: str) -> TrtexecSummary:
    """Read one trtexec log (stdout+stderr as printed) into a TrtexecSummary."""
    s: Dict[str, object] = {"errors": []}
    for raw in text.splitlines():
        line = raw.rstrip()
        m = _BANNER_RE.match(line)
        if m:
            state, tag, cmd = m.groups()
            s["trt_version_tag"] = tag
            s.setdefault("trt_version", version_from_tag(tag))
            s["command"] = cmd
            if state != "RUNNING":
                s["passed"] = state == "PASSED"
            continue
        pm = re.match(_PREFIX, line)
        if not pm:
            continue
        lvl = pm.group("lvl")
        body = line[pm.end() :]
        if lvl == "E":
            s["errors"].append(body.strip())  # type: ignore[union-attr]
            continue
        st = _STAT_RE.match(body)
        if st:
            parsed = _stat(st.group(2))
            if parsed is not None:
                s[_STAT_NAMES[st.group(1)]] = parsed
            continue
        for pattern, key, conv in _SCALARS:
            mm = re.match(pattern, body)
            if mm:
                s[key] = conv(mm.group(1))
                break
    return TrtexecSummary.model_validate(s)


def _enabled(v: str) -> bool:
    return v.strip().lower().startswith("enabled")


_SCALARS = [
    (r"^TensorRT version: (\d+\.\d+\.\d+)", "trt_version", str),
    (r"^Selected Device: (.+)$", "gpu", str.strip),
    (r"^Compute Capability: (\S+)", "compute_capability", str),
    (r"^Precision: (.+)$", "precision", str.strip),
    (r"^Model: (\S.*)$", "onnx_path", str.strip),
    (r"^Save engine: (\S.*)$", "saved_engine", str.strip),
    (r"^Load engine: (\S.*)$", "loaded_engine", str.strip),
    (r"^Engine built in " + _NUM + " sec", "build_time_s", float),
    (r"^\[TRT\] Engine generation completed in " + _NUM + " seconds", "engine_generation_s", float),
    (r"^Created engine with size: " + _NUM + " MiB", "engine_size_mib", float),
    (r"^Engine deserialized in " + _NUM + " sec", "deserialize_s", float),
    (r"^Engine loaded in " + _NUM + " sec", "engine_load_s", float),
    (r"^Timing trace has (\d+) queries", "queries", int),
    (r"^Total Host Walltime: " + _NUM + " s", "walltime_s", float),
    (r"^Throughput: " + _NUM + " qps", "throughput_qps", float),
    (r"^Total GPU Compute Time: " + _NUM + " s", "total_gpu_compute_s", float),
    (r"^\* GPU compute time is unstable, with coefficient of variance = " + _NUM + "%", "gpu_compute_cv_percent", float),
    (r"^CUDA Graph: (\w+)", "cuda_graph", _enabled),
    (r"^Data transfers: (\w+)", "data_transfers", _enabled),
]


def latency_stats(summary: TrtexecSummary, which: str = "latency") -> Optional[Dict[str, Optional[float]]]:
    """Fields of results.LatencyStats from one stat line; p90/std are None when this trtexec did not print them."""
    stat: Optional[StatLine] = getattr(summary, which)
    if stat is None:
        return None
    std = None
    if which == "gpu_compute" and summary.gpu_compute_cv_percent is not None:
        std = stat.mean_ms * summary.gpu_compute_cv_percent / 100.0  # trtexec prints CV = std / mean
    return {
        "mean_ms": stat.mean_ms,
        "median_ms": stat.median_ms,
        "p90_ms": stat.p(90),
        "p95_ms": stat.p(95),
        "p99_ms": stat.p(99),
        "min_ms": stat.min_ms,
        "max_ms": stat.max_ms,
        "std_ms": std,
    }


# Messages TensorRT prints when an engine file does not match the runtime (seen across 8.x-10.x).
_ENGINE_MISMATCH_PATTERNS = (
    r"engine plan file is not compatible",
    r"Version tag does not match",
    r"serialized with a different version",
    r"engine plan file is generated on an incompatible device",
    r"Platform specific tag mismatch",
    r"magicTag",
)


def engine_mismatch_message(text: str) -> Optional[str]:
    """The line in a trtexec log saying an engine was built by another TensorRT version or GPU, if any."""
    for line in text.splitlines():
        if any(re.search(p, line, re.IGNORECASE) for p in _ENGINE_MISMATCH_PATTERNS):
            return line.strip()
    return None


def failing_node(text: str) -> Dict[str, Optional[str]]:
    """Node name and op type from an ONNX-parser error in a trtexec log (e.g. 'Failed to parse onnx file')."""
    node = op = None
    m = re.search(r'While parsing node number (\d+) \[(\w+)(?: -> "([^"]*)")?\]', text)
    if m:
        return {"node": m.group(3) or f"#{m.group(1)}", "op": m.group(2)}
    m = re.search(r"In node (\d+) \(([^)]*)\)", text)  # "In node 3 (importFoo): UNSUPPORTED_NODE: ..."
    if m:
        node = m.group(1)
    m = re.search(r"\[ONNX\] Node name: (\S+)", text) or re.search(r"node_name: ?(\S+)|Node \(([^)]+)\)", text)
    if m:
        node = next(g for g in m.groups() if g)
    m = re.search(r"No importer registered for op: (\w+)", text) or re.search(r"op_type: ?(\w+)|Op type: (\w+)|\[ONNX\] Op: (\w+)", text)
    if m:
        op = next(g for g in m.groups() if g)
    return {"node": node, "op": op}
