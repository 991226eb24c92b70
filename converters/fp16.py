"""fp16: convert an ONNX model's float32 weights and compute to float16 (inputs/outputs stay float32).

Meant for runtimes with fast FP16 (GPU/TensorRT, ARM cores with fp16 arithmetic). On x86 CPUs ONNX Runtime
inserts casts around ops without fp16 kernels, so it runs but is rarely faster; the step says so in a note.
The produced model is validated (onnx.checker + ORT session + one inference) before it becomes the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from pydantic import Field

from edgekit.core.artifact import Artifact, load_artifact
from edgekit.core.errors import StepError, require
from edgekit.core.steps import Step, StepConfig, StepContext

STEP = "fp16"


class Fp16Config(StepConfig):
    """Options of the FP16 conversion."""

    keep_io_types: bool = True  # float32 inputs/outputs, so callers feed the same data as for FP32
    op_block_list: Optional[List[str]] = None  # ops kept in float32 (None = ORT's default list)
    node_block_list: List[str] = Field(default_factory=list)
    eval_samples: int = Field(default=20, gt=0)
    latency_runs: int = Field(default=10, ge=1)
    precision: Literal["fp16"] = "fp16"
    max_drop: Optional[float] = Field(default=None, ge=0.0, lt=1.0, description="accuracy budget (--max-drop) the pipeline's check applies; default: lossless (task score 0.999)")


class Fp16Step(Step):
    """ONNX FP32 -> ONNX FP16 with float32 IO, validated and measured."""

    name = STEP
    summary = "FP16 weights and compute (float32 IO) via onnxruntime's float16 converter"
    accepts = ("onnx",)
    produces = "onnx"
    Config = Fp16Config
    requires = (("onnxruntime", "quantize"), ("onnx", "simplify"))

    def run(self, artifact: Artifact, config: StepConfig, ctx: StepContext) -> Artifact:
        cfg = config if isinstance(config, Fp16Config) else Fp16Config.model_validate(config.model_dump())
        onnx = require("onnx", "simplify", "FP16 conversion")
        require("onnxruntime", "quantize", "FP16 conversion")
        from onnxruntime.transformers.float16 import convert_float_to_float16

        from edgekit.converters import quantize_ort as Q
        from edgekit.core.fsutil import atomic_copy

        if artifact.format != "onnx":
            raise StepError(STEP, f"expects an ONNX model, got format '{artifact.format}'", hint="run the export step first")
        src = Path(artifact.path)
        work = Path(ctx.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        threads = ctx.profile.threads
        model = onnx.load(str(src))
        kwargs: Dict[str, Any] = {"keep_io_types": cfg.keep_io_types, "node_block_list": list(cfg.node_block_list)}
        if cfg.op_block_list is not None:
            kwargs["op_block_list"] = list(cfg.op_block_list)
        try:
            converted = convert_float_to_float16(model, **kwargs)
        except Exception as exc:  # the converter raises ValueError/TypeError for graphs it cannot handle
            raise StepError(STEP, "float16 conversion failed", tool_message=f"{type(exc).__name__}: {exc}",
                            hint="block the failing op type with op_block_list") from exc
        if not _is_sorted(converted.graph):
            # onnxruntime's converter appends the input Casts (keep_io_types) after their consumers; the checker
            # rejects that ("Nodes in a graph must be topologically sorted"), so restore a topological order.
            _toposort(converted.graph)
            ctx.note(f"re-sorted the converted graph topologically (onnxruntime's float16 converter appends input Casts last)")
        tmp = work / "candidate.fp16.onnx"
        onnx.save(converted, str(tmp))
        eval_feeds = ctx.eval_data(cfg.eval_samples) if ctx.eval_data is not None else None
        sample = eval_feeds[0] if eval_feeds else None
        Q.validate_or_raise(tmp, STEP, sample, threads)  # deletes tmp and raises if invalid

        if ctx.profile.cpu.isa == "x86_64" and not any(a.type == "gpu" for a in ctx.profile.accelerators):
            ctx.note(f"x86 CPUs have no fast FP16 arithmetic; ONNX Runtime casts around ops without fp16 kernels, "
                     "so expect smaller files but not lower latency here")
        record = {"name": "fp16", "config": cfg.model_dump(exclude={"fidelity"}), "excluded_nodes": list(cfg.node_block_list),
                  "size_bytes": tmp.stat().st_size, "zipped_bytes": Q.zipped_size(tmp),
                  "parameters": Q.parameter_count(tmp), "latency_ms": Q.latency_ms(tmp, sample, threads, cfg.latency_runs)}
        fp32 = {"name": "fp32", "size_bytes": src.stat().st_size, "zipped_bytes": Q.zipped_size(src),
                "parameters": Q.parameter_count(src), "latency_ms": Q.latency_ms(src, sample, threads, cfg.latency_runs)}
        if eval_feeds:
            ref = Q.predict(src, eval_feeds, threads)
            new = Q.predict(tmp, eval_feeds, threads)
            if ctx.task_metric is not None:
                record["score"], record["metric"] = float(ctx.task_metric(ref, new)), ctx.task_metric_name
            else:
                record["score"], record["metric"] = Q.cosine_score(ref, new), "output cosine (min over samples and outputs)"
            fp32["score"] = 1.0
        final = work / (src.stem + ".fp16.onnx")
        atomic_copy(tmp, final)
        tmp.unlink(missing_ok=True)
        ctx.report.update({"variants": [record], "chosen": "fp16", "fp32": fp32,
                           "size": {"before_bytes": fp32["size_bytes"], "after_bytes": record["size_bytes"],
                                    "before_zipped": fp32["zipped_bytes"], "after_zipped": record["zipped_bytes"],
                                    "parameters": fp32["parameters"]}})
        return load_artifact(final, precision="fp16", metadata={"fp16": {"keep_io_types": cfg.keep_io_types}})


def _is_sorted(graph) -> bool:
    """True if every node input is a graph input, an initializer or an earlier node's output."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    for node in graph.node:
        if any(i not in known for i in node.input):
            return False
        known.update(node.output)
    return True


def _toposort(graph) -> None:
    """Reorder graph.node in place (Kahn's algorithm, stable); names from outer scopes count as available."""
    produced = {o for n in graph.node for o in n.output}
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in known or i not in produced for i in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise StepError(STEP, "the converted graph has a cycle and cannot be ordered", node=rest[0].name, op=rest[0].op_type)
        pending = rest
    nodes = [type(n)() for n in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)
