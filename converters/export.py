"""Export step: a PyTorch module, TorchScript file or ExportedProgram to one validated FP32 ONNX file."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

from pydantic import Field

from edgekit.core.artifact import Artifact, LineageEntry, load_pickled_module
from edgekit.core.errors import ModelLoadError, StepError, require
from edgekit.core.steps import Step, StepConfig, StepContext

# Above this many bytes of weights ONNX's 2 GB protobuf limit forces an external data file.
_EXTERNAL_DATA_BYTES = 1_800_000_000
# torch 2.13's dynamo exporter implements opset 18+ only; lower opsets are converted afterwards.
_DYNAMO_MIN_OPSET = 18
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "bool"}
_SOURCE_ONLY_META = {"in_memory", "trust_pickle", "torch_kind", "note", "dynamic_axes"}


class ExportConfig(StepConfig):
    """Options of the export step; names and dynamic axes default to the artifact's own."""

    opset: int = Field(17, ge=9, le=23)
    exporter: Literal["auto", "dynamo", "legacy"] = "auto"
    input_names: Optional[List[str]] = None
    output_names: Optional[List[str]] = None
    # {input_or_output_name: {axis: symbol}}, e.g. {"input_ids": {0: "batch", 1: "seq"}}
    dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None
    # Example-input shapes for files that carry none (TorchScript, pickled modules), in forward() argument order.
    input_shapes: Optional[Dict[str, List[int]]] = None
    # numpy dtype names for those inputs; default is the artifact's dtype, else float32.
    input_dtypes: Optional[Dict[str, str]] = None


class _Source:
    """What is exported: the callable module, example inputs, argument names, and the ExportedProgram if any."""

    def __init__(self, module: Any, example_inputs: Tuple[Any, ...], arg_names: List[str], program: Any = None, kind: str = ""):
        self.module = module
        self.example_inputs = example_inputs
        self.arg_names = arg_names
        self.program = program
        self.kind = kind


class ExportStep(Step):
    """Export to ONNX with torch's dynamo exporter, falling back (visibly) to the legacy TorchScript exporter."""

    name = "export"
    summary = "export a PyTorch model to ONNX (FP32)"
    accepts = ("pytorch", "torchscript", "exported_program")
    produces = "onnx"
    Config = ExportConfig
    requires = (("torch", "torch"), ("onnx", "torch"), ("onnxruntime", "torch"))

    @classmethod
    def tool_versions(cls) -> Dict[str, str]:
        """Also key the cache on onnxscript, which the dynamo exporter uses when installed."""
        from importlib import metadata

        out = super().tool_versions()
        try:
            out["onnxscript"] = metadata.version("onnxscript")
        except metadata.PackageNotFoundError:
            out["onnxscript"] = "absent"
        return out

    def run(self, artifact: Artifact, config: ExportConfig, ctx: StepContext) -> Artifact:
        torch = require("torch", "torch", "exporting PyTorch models to ONNX")
        src = _load_source(artifact, config, torch)
        input_names = _input_names(artifact, config, src)
        output_names = config.output_names or [t.name for t in artifact.outputs] or None
        dyn = _dynamic_axes(artifact, config, input_names, output_names or [])
        out_path = Path(ctx.work_dir) / (_stem(artifact) + ".onnx")
        large = _weight_bytes(src.module) > _EXTERNAL_DATA_BYTES
        notes: List[str] = []
        report: Dict[str, Any] = {"opset": config.opset}

        if config.exporter in ("auto", "dynamo"):
            try:
                produced, info = _export_dynamo(torch, src, input_names, output_names, dyn, config.opset, large, ctx.work_dir)
                notes.extend(info)
                if info:
                    report["opset_conversion"] = info[0]
                used = "dynamo"
            except _ExportFailed as failed:
                if config.exporter == "dynamo":
                    raise StepError(
                        "export",
                        f"the dynamo exporter could not export {artifact.path}: {failed.reason}",
                        hint="set the export step's exporter to 'legacy' (TorchScript-based; Python API: plan config exporter='legacy'), or fix the construct torch.export rejects",
                        tool_message=failed.detail,
                    ) from failed.__cause__
                msg = f"dynamo exporter failed: {failed.reason}; used the legacy TorchScript-based exporter"
                ctx.note(msg)
                notes.append(msg)
                report["dynamo_error"] = failed.reason
                produced = None
        else:
            produced = None
        if produced is None:
            try:
                produced, tracer_warnings = _export_legacy(torch, src, input_names, output_names, dyn, config.opset, ctx.work_dir)
            except _ExportFailed as failed:
                first = f" (the dynamo exporter failed first: {report['dynamo_error']})" if "dynamo_error" in report else ""
                raise StepError(
                    "export",
                    f"the legacy TorchScript-based exporter could not export {artifact.path}: {failed.reason}{first}",
                    hint="check that the example inputs (--shape) match the model's forward() arguments",
                    tool_message=failed.detail,
                ) from failed.__cause__
            used = "legacy"
            for w in tracer_warnings:
                msg = f"legacy exporter (tracing) warned: {w}"
                ctx.note(msg)
                notes.append(msg)
        report["exporter"] = used

        extra = _finalize(produced, out_path)
        meta = {k: v for k, v in artifact.metadata.items() if k not in _SOURCE_ONLY_META}
        meta.update({"exporter": used, "dynamic_axes": {k: {str(a): s for a, s in v.items()} for k, v in dyn.items()}})
        entry = LineageEntry(
            step=self.name,
            config=config.model_dump(mode="json"),
            tools=self.tool_versions(),
            notes=[f"exporter: {used}", *notes],
            source_sha256=artifact.sha256,
        )
        result = Artifact.from_file(out_path, format="onnx", precision="fp32", lineage=[*artifact.lineage, entry], metadata=meta)
        if extra:
            result = result.model_copy(update={"extra_files": [extra.resolve()]})
        ctx.report.update(report)
        return result


class _ExportFailed(Exception):
    """An exporter attempt failed; `reason` is one line, `detail` the tool's longer message."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- loading the source


def _load_source(artifact: Artifact, config: ExportConfig, torch) -> _Source:
    """The module to export and its example inputs, from memory or from the artifact's file."""
    program = None
    if artifact.module is not None:
        module = artifact.module
        kind = "in-memory module"
    elif str(artifact.path).startswith("<memory"):
        raise StepError("export", f"{artifact.path}: the in-memory module is gone (artifacts restored from a manifest carry no module)",
                        hint="pass the nn.Module again through the Python API, or save it with torch.export.save")
    elif artifact.format == "torchscript":
        try:
            module = torch.jit.load(str(artifact.path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError for corrupt archives
            raise ModelLoadError(f"{artifact.path}: not a loadable TorchScript file ({exc})", hint="re-save with torch.jit.save") from exc
        kind = "TorchScript file"
    elif artifact.format == "exported_program":
        try:
            program = torch.export.load(str(artifact.path))
        except Exception as exc:  # torch raises various errors for corrupt/incompatible archives
            raise ModelLoadError(f"{artifact.path}: not a loadable ExportedProgram ({exc})", hint="re-save with torch.export.save") from exc
        module = program.module()
        kind = "ExportedProgram file"
    else:
        module = load_pickled_module(artifact.path, bool(artifact.metadata.get("trust_pickle")))
        kind = "pickled module"
    arg_names = _forward_arg_names(module, program, artifact)
    if artifact.example_inputs is not None:
        examples = tuple(artifact.example_inputs)
    else:
        examples = _build_examples(artifact, config, arg_names, program, torch, kind)
    if program is None and hasattr(module, "eval"):  # an ExportedProgram's module() is already in eval form and refuses .eval()
        module.eval()
    return _Source(module, examples, arg_names, program, kind)


def _forward_arg_names(module: Any, program: Any, artifact: Artifact) -> List[str]:
    """Positional argument names of forward(), read from the TorchScript schema, the EP or the Python signature."""
    if program is not None:
        names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        return names or [t.name for t in artifact.inputs]
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:  # TorchScript: first argument is self
        return [a.name for a in schema.arguments[1:]]
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return [t.name for t in artifact.inputs]
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _build_examples(artifact: Artifact, config: ExportConfig, arg_names: List[str], program, torch, kind: str) -> Tuple[Any, ...]:
    """Example inputs from --shape (and the artifact's dtypes), for files that carry none."""
    shapes = dict(config.input_shapes or {})
    dtypes = dict(config.input_dtypes or {})
    specs = {t.name: t for t in artifact.inputs}
    example = "--shape " + " --shape ".join(f"{n}=1x3x224x224" for n in (arg_names[:1] or ["input"]))
    if program is not None and not shapes:
        stored = getattr(program, "example_inputs", None)
        if stored is not None and stored[0]:
            return tuple(stored[0])
    names = [n for n in arg_names if n in shapes or n in specs] if shapes else arg_names
    unknown = sorted(set(shapes) - set(arg_names)) if arg_names else []
    if unknown:
        raise StepError("export", f"{artifact.path}: --shape names {unknown} are not arguments of forward() ({', '.join(arg_names)})",
                        hint="use the forward() argument names")
    if not names:
        names = list(shapes)
    if not names:
        raise StepError("export", f"{artifact.path}: a {kind} carries no example inputs, so its input shapes are unknown",
                        hint=f"pass the shape of every forward() input, e.g. `{example}`")
    out = []
    for n in names:
        shape = shapes.get(n)
        if shape is None and n in specs and all(isinstance(d, int) for d in specs[n].shape):
            shape = list(specs[n].shape)
        if shape is None:
            raise StepError("export", f"{artifact.path}: the shape of input '{n}' of this {kind} is unknown",
                            hint=f"pass it, e.g. `--shape {n}=1x3x224x224` (one option per forward() input)")
        dtype = dtypes.get(n) or (specs[n].dtype if n in specs else "float32")
        try:
            tdtype = getattr(torch, dtype)
        except AttributeError:
            raise StepError("export", f"input '{n}': unknown dtype '{dtype}'", hint="use a numpy dtype name such as float32 or int64") from None
        if dtype in _INT_DTYPES:
            out.append(torch.ones(shape, dtype=tdtype))  # valid token ids / masks / indices for any vocabulary
        else:
            out.append(torch.randn(shape).to(tdtype))
    return tuple(out)


def _input_names(artifact: Artifact, config: ExportConfig, src: _Source) -> List[str]:
    n = len(src.example_inputs)
    names = config.input_names or [t.name for t in artifact.inputs][:n] or None
    if not names or len(names) != n:
        names = (src.arg_names[:n] if len(src.arg_names) >= n else None) or [f"input_{i}" for i in range(n)]
    if len(names) != n:
        raise StepError("export", f"{len(names)} input names for {n} example inputs", hint="give one input name per forward() input")
    return list(names)


def _dynamic_axes(artifact: Artifact, config: ExportConfig, input_names: Sequence[str], output_names: Sequence[str]) -> Dict[str, Dict[int, str]]:
    raw = config.dynamic_axes if config.dynamic_axes is not None else artifact.metadata.get("dynamic_axes") or {}
    known = set(input_names) | set(output_names)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise StepError("export", f"dynamic axes name unknown tensors {unknown}", hint=f"inputs/outputs are: {', '.join(sorted(known))}")
    return {name: {int(a): str(s) for a, s in axes.items()} for name, axes in raw.items()}


def _weight_bytes(module: Any) -> int:
    try:
        return sum(t.numel() * t.element_size() for t in module.state_dict().values())
    except (AttributeError, RuntimeError):
        return 0


def _stem(artifact: Artifact) -> str:
    raw = str(artifact.path)
    if raw.startswith("<memory:"):
        raw = raw[len("<memory:"):-1]
    else:
        raw = Path(raw).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._") or "model"


# ---------------------------------------------------------------- exporters


@contextlib.contextmanager
def _quiet_exporter_logs():
    """Silence torch/onnxscript log chatter (opset notices, failed-graph dumps) while exporting; errors still raise."""
    names = ("torch", "onnxscript", "onnx_ir")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.CRITICAL)
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _short_reason(exc: BaseException) -> Tuple[str, str]:
    """One line naming the innermost cause (e.g. 'GuardOnDataDependentSymNode: ...'), plus the full message."""
    inner = exc
    while inner.__cause__ is not None and inner.__cause__ is not inner:
        inner = inner.__cause__
    full = _ANSI.sub("", str(exc))
    text = _ANSI.sub("", str(inner)).strip()
    if inner is exc and "## Exception summary" in text:  # torch.onnx's own error layout without a chained cause
        text = text.split("## Exception summary", 1)[1].split("(Refer to", 1)[0].strip()
        text = re.sub(r"^<class '(?:[\w.]*\.)?(\w+)'>", r"\1", text)
        return (text.splitlines()[0] if text else type(exc).__name__)[:300], full
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(inner).__name__}: {first}"[:300], full


def _export_dynamo(torch, src: _Source, input_names, output_names, dyn, opset: int, large: bool, work_dir: Path) -> Tuple[Path, List[str]]:
    """torch.onnx.export(dynamo=True) into a scratch dir; raises _ExportFailed with a short reason."""
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None:
        raise _ExportFailed("onnxscript is not installed (pip install 'edgekit[torch]')")
    scratch = Path(work_dir) / ".dynamo"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    path = scratch / "model.onnx"
    target = src.program if src.program is not None else src.module
    # Dynamic shapes go positionally, one dict per input; strings become named Dim.DYNAMIC axes.
    shapes = None if src.program is not None or not dyn else tuple(dyn.get(n) or None for n in input_names)
    try:
        # torch.export prints the partial graph of a failed capture straight to sys.stderr; keep it out of the UI.
        with warnings.catch_warnings(), _quiet_exporter_logs(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                target,
                src.example_inputs,
                str(path),
                dynamo=True,
                input_names=list(input_names),
                output_names=list(output_names) if output_names else None,
                opset_version=max(opset, _DYNAMO_MIN_OPSET),
                dynamic_shapes=shapes,
                external_data=large,
                optimize=True,
                verbose=False,
                artifacts_dir=str(scratch),
            )
    except Exception as exc:  # torch.export / onnxscript raise many types; all mean "this exporter cannot"
        shutil.rmtree(scratch, ignore_errors=True)
        reason, detail = _short_reason(exc)
        raise _ExportFailed(reason, detail) from exc
    info: List[str] = []
    try:
        if opset < _DYNAMO_MIN_OPSET and _opset_of(path) > opset:
            _downgrade_opset(path, opset, large)
            info.append(f"the dynamo exporter emits opset {_DYNAMO_MIN_OPSET}+; converted to opset {opset} with onnx.version_converter")
        _validate(path, input_names, output_names, opset)
    except _ExportFailed:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return path, info


def _opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _downgrade_opset(path: Path, opset: int, large: bool) -> None:
    """The dynamo exporter emits opset >= 18; convert down with onnx.version_converter (torch's own fallback
    conversion fails on MiniLM in torch 2.13 and then silently keeps opset 18)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises RuntimeError/ConvertError for ops it cannot map
        raise _ExportFailed(
            f"onnx.version_converter could not convert the dynamo exporter's opset {_DYNAMO_MIN_OPSET} model to opset {opset}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            str(exc),
        ) from exc
    _strip_opset18_reduce_attr(converted, opset)
    for p in path.parent.iterdir():
        if p.name.startswith(path.name):
            p.unlink()
    if large:
        onnx.save_model(converted, str(path), save_as_external_data=True, location=path.name + ".data", all_tensors_to_one_file=True)
    else:
        onnx.save_model(converted, str(path))


def _export_legacy(torch, src: _Source, input_names, output_names, dyn, opset: int, work_dir: Path) -> Tuple[Path, List[str]]:
    """torch.onnx.export(dynamo=False); returns the file and the tracer's warnings (they flag baked-in branches)."""
    scratch = Path(work_dir) / ".legacy"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    path = scratch / "model.onnx"
    tracer_warnings: List[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught, _quiet_exporter_logs():
            warnings.simplefilter("always")
            with torch.no_grad():
                torch.onnx.export(
                    src.module,
                    src.example_inputs,
                    str(path),
                    dynamo=False,
                    input_names=list(input_names),
                    output_names=list(output_names) if output_names else None,
                    opset_version=opset,
                    dynamic_axes=dyn or None,
                    do_constant_folding=True,
                )
    except Exception as exc:  # the TorchScript tracer/symbolic layer raises RuntimeError, OnnxExporterError...
        shutil.rmtree(scratch, ignore_errors=True)
        reason, detail = _short_reason(exc)
        raise _ExportFailed(reason, detail) from exc
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            line = str(w.message).splitlines()[0].strip()
            where = f" ({Path(w.filename).name}:{w.lineno})" if w.filename else ""
            if line + where not in tracer_warnings:
                tracer_warnings.append(line + where)
    try:
        _validate(path, input_names, output_names, opset)
    except _ExportFailed as failed:
        shutil.rmtree(scratch, ignore_errors=True)
        raise failed
    return path, tracer_warnings


def _validate(path: Path, input_names, output_names, opset: int) -> None:
    """onnx.checker + ONNX Runtime load + the requested names and opset; raises _ExportFailed otherwise."""
    import onnx

    ort = require("onnxruntime", "torch", "validating exported ONNX models")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise _ExportFailed(f"the exported model fails onnx.checker: {str(exc).splitlines()[0]}", str(exc)) from exc
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    got_in = [i.name for i in model.graph.input if i.name not in inits]
    if list(got_in) != list(input_names):
        raise _ExportFailed(
            f"the exported model's inputs are {got_in}, not the requested {list(input_names)} "
            "(an unused input was dropped, or names were not applied)"
        )
    got_out = [o.name for o in model.graph.output]
    if output_names and got_out[: len(output_names)] != list(output_names):
        raise _ExportFailed(f"the exported model's outputs are {got_out}, not the requested {list(output_names)}")
    got_opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if got_opset != opset:
        raise _ExportFailed(f"the exporter produced opset {got_opset}, not the requested {opset}")
    del model
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises Fail/InvalidGraph/NotImplemented for models it cannot load
        raise _ExportFailed(f"ONNX Runtime cannot load the exported model: {str(exc).splitlines()[0]}", str(exc)) from exc


def _strip_opset18_reduce_attr(model, opset: int) -> None:
    """onnx 1.23's 18->17 adapter keeps `noop_with_empty_axes` on ReduceL2/Mean/Max/... (added in opset 18), which
    the checker rejects. With value 0 it only restates the old default (empty axes = reduce all), so drop it."""
    if opset >= 18:
        return
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum" and node.domain in ("", "ai.onnx"):
                for attr in list(node.attribute):
                    if attr.name == "noop_with_empty_axes":
                        if attr.i != 0:
                            raise _ExportFailed(f"node {node.name} ({node.op_type}) needs noop_with_empty_axes=1, which opset {opset} cannot express")
                        node.attribute.remove(attr)


def _graphs(graph):
    """A graph and all its subgraphs (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def _finalize(produced: Path, out_path: Path) -> Optional[Path]:
    """Move the validated file (and its external data, if any) to its final name; returns the data file."""
    data = [p for p in produced.parent.iterdir() if p != produced and p.is_file() and p.name.startswith(produced.name)]
    extra = None
    if data:
        # External data is referenced by file name inside the model: rewrite it to the final name.
        import onnx

        model = onnx.load(str(produced))
        extra = out_path.with_name(out_path.name + ".data")
        onnx.save_model(model, str(out_path), save_as_external_data=True, location=extra.name, all_tensors_to_one_file=True)
        shutil.rmtree(produced.parent, ignore_errors=True)
        return extra
    os.replace(produced, out_path)
    shutil.rmtree(produced.parent, ignore_errors=True)
    return extra
