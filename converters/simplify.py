"""Simplify step: fold constants and fuse ops with onnxsim; when onnxsim cannot, the step is skipped visibly."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Dict, List, Optional

from pydantic import Field

from edgekit.core.artifact import Artifact, LineageEntry
from edgekit.core.errors import MissingDependencyError, StepSkipped, require
from edgekit.core.steps import Step, StepConfig, StepContext

_PROTOBUF_LIMIT = 2_000_000_000
# Metadata the ONNX reader recomputes for the new file.
_RECOMPUTED_META = {"opset", "producer", "nodes"}


class SimplifyConfig(StepConfig):
    """onnxsim options; test_input_shapes (default: the zoo's default_shapes) let its check run on dynamic inputs."""

    check_n: int = Field(1, ge=0)
    overwrite_input_shapes: Optional[Dict[str, List[int]]] = None
    test_input_shapes: Optional[Dict[str, List[int]]] = None
    skip_shape_inference: bool = False


class SimplifyStep(Step):
    """onnxsim.simplify, keeping the opset; validated with onnx.checker and an ONNX Runtime session."""

    name = "simplify"
    summary = "simplify the ONNX graph with onnxsim (constant folding, op fusion)"
    accepts = ("onnx",)
    produces = "onnx"
    Config = SimplifyConfig
    requires = (("onnxsim", "simplify"), ("onnx", "simplify"), ("onnxruntime", "simplify"))

    def run(self, artifact: Artifact, config: SimplifyConfig, ctx: StepContext) -> Artifact:
        try:
            onnxsim = require("onnxsim", "simplify", "simplifying ONNX models")
        except MissingDependencyError as exc:
            raise StepSkipped(f"onnxsim is not installed ({exc.hint})") from exc
        import onnx

        version = _onnxsim_version()
        model = onnx.load(str(artifact.path))
        nodes_before = len(model.graph.node)
        ops_before = _op_counts(model)
        opset_before = _opset(model)
        test_shapes, why_unchecked = _test_shapes(model, artifact, config)
        check_n = config.check_n if why_unchecked is None else 0
        if why_unchecked is not None and config.check_n > 0:
            ctx.note(f"simplify: onnxsim's own check not run ({why_unchecked}); the pipeline's fidelity check still applies")

        out = io.StringIO()
        try:
            # onnxsim prints "Checking 0/1..." progress to stdout; keep the UI clean and its text for the reason.
            with contextlib.redirect_stdout(out):
                simplified, check_ok = onnxsim.simplify(
                    model,
                    check_n=check_n,
                    overwrite_input_shapes=config.overwrite_input_shapes,
                    test_input_shapes=test_shapes,
                    skip_shape_inference=config.skip_shape_inference,
                    certify=False,
                )
        except Exception as exc:  # onnxsim surfaces onnxruntime/onnx/C++ errors of many types
            raise StepSkipped(f"onnxsim {version} failed: {_first_line(exc)}") from exc
        if not check_ok:
            raise StepSkipped(f"onnxsim {version} failed: its own check found the simplified model's outputs differ from the input's")
        opset_after = _opset(simplified)
        if opset_after != opset_before:
            raise StepSkipped(f"onnxsim {version} failed: it changed the opset from {opset_before} to {opset_after}")

        out_path = Path(ctx.work_dir) / (Path(artifact.path).stem + ".onnx")
        extra = _save_atomic(onnx, simplified, out_path)
        problem = _validate(out_path)
        if problem is not None:
            for p in (out_path, extra):
                if p is not None:
                    p.unlink(missing_ok=True)
            raise StepSkipped(f"onnxsim {version} failed: it produced an invalid model ({problem})")

        nodes_after = len(simplified.graph.node)
        ctx.report.update({"nodes_before": nodes_before, "nodes_after": nodes_after, "onnxsim": version, "check_n": check_n})
        notes = [f"onnxsim {version}: {nodes_before} -> {nodes_after} nodes"]
        if nodes_after > nodes_before:
            # onnxsim 0.8.1 rewrites MatMul+Add on 3-D activations into Reshape+Gemm+Reshape (MiniLM: 249 -> 306 nodes);
            # that graph ran at ~0.8x on ONNX Runtime and slowed its dynamic INT8 too, so keep the input instead.
            out_path.unlink(missing_ok=True)
            if extra is not None:
                extra.unlink(missing_ok=True)
            raise StepSkipped(
                f"onnxsim {version} increased the node count from {nodes_before} to {nodes_after} "
                f"({_op_changes(ops_before, _op_counts(simplified))}); the input model is kept unchanged"
            )
        entry = LineageEntry(
            step=self.name,
            config=config.model_dump(mode="json"),
            tools=self.tool_versions(),
            notes=notes,
            source_sha256=artifact.sha256,
        )
        meta = {k: v for k, v in artifact.metadata.items() if k not in _RECOMPUTED_META}
        result = Artifact.from_file(out_path, format="onnx", precision=artifact.precision, lineage=[*artifact.lineage, entry], metadata=meta)
        if extra is not None:
            result = result.model_copy(update={"extra_files": [extra.resolve()]})
        return result


def _onnxsim_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("onnxsim")
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line}"[:300] if line else type(exc).__name__


def _test_shapes(model, artifact: Artifact, config: SimplifyConfig):
    """Concrete shapes for onnxsim's check: config, then the zoo's default_shapes, then dim 0 -> 1; else why not."""
    if config.overwrite_input_shapes is not None:
        return config.test_input_shapes, None
    inits = {i.name for i in model.graph.initializer}
    given = dict(artifact.metadata.get("default_shapes") or {})
    given.update(config.test_input_shapes or {})
    shapes: Dict[str, List[int]] = {}
    dynamic = False
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if all(d is not None for d in fixed):
            continue
        dynamic = True
        if vi.name in given:
            shapes[vi.name] = [int(d) for d in given[vi.name]]
        elif all(d is not None for d in fixed[1:]):
            shapes[vi.name] = [1, *fixed[1:]]
        else:
            return None, f"input '{vi.name}' has symbolic dims and no test shape; set test_input_shapes"
    return (shapes if dynamic else None), None


def _save_atomic(onnx, model, path: Path) -> Optional[Path]:
    """Save to a temp name and rename; models over the 2 GB protobuf limit get one external data file."""
    tmp = path.with_name("." + path.name + ".tmp")
    extra = None
    try:
        if model.ByteSize() > _PROTOBUF_LIMIT:
            extra = path.with_name(path.name + ".data")
            onnx.save_model(model, str(tmp), save_as_external_data=True, location=extra.name, all_tensors_to_one_file=True)
        else:
            onnx.save_model(model, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return extra


def _validate(path: Path) -> Optional[str]:
    """None if onnx.checker and ONNX Runtime accept the file, else the first line of what they said."""
    import onnx

    ort = require("onnxruntime", "simplify", "validating simplified ONNX models")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx.checker.ValidationError and friends
        return f"onnx.checker: {_first_line(exc)}"
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises Fail/InvalidGraph/NotImplemented
        return f"ONNX Runtime: {_first_line(exc)}"
    return None


def _op_counts(model) -> Dict[str, int]:
    from collections import Counter

    return dict(Counter(n.op_type for n in model.graph.node))


def _op_changes(a: Dict[str, int], b: Dict[str, int], top: int = 4) -> str:
    """The largest per-op-type count changes, e.g. 'Reshape +42, MatMul -36'."""
    a, b = {**{k: 0 for k in b}, **a}, {**{k: 0 for k in a}, **b}
    diff = sorted(((b[k] - a[k], k) for k in set(a) | set(b) if b[k] != a[k]), key=lambda t: -abs(t[0]))
    return ", ".join(f"{k} {d:+d}" for d, k in diff[:top])
