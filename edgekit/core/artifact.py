"""Artifact: an immutable record of one model file on disk, with its IO signature and lineage."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from edgekit.core.errors import ModelLoadError, require
from edgekit.core.fsutil import sha256_file

Dim = Union[int, str, None]

# Formats an Artifact can have. "pytorch" is an in-memory nn.Module (Python API) or a pickled .pt.
FORMATS = ("pytorch", "torchscript", "exported_program", "onnx", "tflite", "openvino", "tensorrt")

_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


class TensorSpec(BaseModel):
    """One input or output: name, shape (ints, or strings for symbolic dims), numpy dtype name."""

    model_config = ConfigDict(extra="forbid")
    name: str
    shape: List[Dim]
    dtype: str
    layout: Optional[str] = None  # e.g. "NCHW" / "NHWC" when known


class LineageEntry(BaseModel):
    """One step that produced an artifact: step name, its config, tool versions, notes."""

    model_config = ConfigDict(extra="forbid")
    step: str
    config: Dict[str, Any] = Field(default_factory=dict)
    tools: Dict[str, str] = Field(default_factory=dict)
    notes: List[str] = Field(default_factory=list)
    source_sha256: Optional[str] = None


class Artifact(BaseModel):
    """A model file (or IR pair) on disk. `path` is the main file; `extra_files` travel with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Path
    format: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    precision: str = "fp32"
    sha256: str
    size_bytes: int
    extra_files: List[Path] = Field(default_factory=list)
    lineage: List[LineageEntry] = Field(default_factory=list)
    metadata: Dict[str, Any] = Field(default_factory=dict)

    # In-memory PyTorch module and example inputs (Python API only; never serialized).
    _module: Any = PrivateAttr(default=None)
    _example_inputs: Any = PrivateAttr(default=None)

    @property
    def module(self):
        return self._module

    @property
    def example_inputs(self):
        return self._example_inputs

    @property
    def files(self) -> List[Path]:
        return [self.path, *self.extra_files]

    @property
    def total_size_bytes(self) -> int:
        return self.size_bytes + sum(p.stat().st_size for p in self.extra_files if p.exists())

    def with_lineage(self, entry: LineageEntry) -> "Artifact":
        return self.model_copy(update={"lineage": [*self.lineage, entry]})

    def to_manifest(self) -> Dict[str, Any]:
        return json.loads(self.model_dump_json())

    @classmethod
    def from_file(
        cls,
        path: Union[str, Path],
        *,
        format: Optional[str] = None,
        precision: Optional[str] = None,
        lineage: Optional[List[LineageEntry]] = None,
        trust_pickle: bool = False,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> "Artifact":
        """Load any supported model file and read its signature."""
        return load_artifact(
            path, format=format, precision=precision, lineage=lineage, trust_pickle=trust_pickle, metadata=metadata
        )

    @classmethod
    def from_module(
        cls,
        module: Any,
        example_inputs: Any,
        *,
        input_names: Optional[List[str]] = None,
        output_names: Optional[List[str]] = None,
        dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None,
        name: Optional[str] = None,
    ) -> "Artifact":
        """Wrap an in-memory torch.nn.Module (Python API); hashed by class name and weights."""
        torch = require("torch", "torch", "loading a PyTorch module")
        import hashlib

        if not isinstance(example_inputs, (tuple, list)):
            example_inputs = (example_inputs,)
        example_inputs = tuple(example_inputs)
        h = hashlib.sha256(type(module).__qualname__.encode())
        for key, tensor in module.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        names = input_names or [f"input_{i}" for i in range(len(example_inputs))]
        if len(names) != len(example_inputs):
            raise ModelLoadError(
                f"{len(names)} input names given for {len(example_inputs)} example inputs",
                hint="pass one name per example input",
            )
        dyn = dynamic_axes or {}
        inputs = []
        for n, t in zip(names, example_inputs):
            shape: List[Dim] = list(t.shape)
            for axis, sym in dyn.get(n, {}).items():
                shape[int(axis)] = sym
            inputs.append(TensorSpec(name=n, shape=shape, dtype=str(t.dtype).replace("torch.", "")))
        with torch.no_grad():
            out = module.eval()(*example_inputs)
        outs = _flatten_torch_outputs(out)
        onames = output_names or [f"output_{i}" for i in range(len(outs))]
        outputs = [
            TensorSpec(name=n, shape=list(o.shape), dtype=str(o.dtype).replace("torch.", ""))
            for n, o in zip(onames, outs)
        ]
        label = name or type(module).__name__
        art = cls(
            path=Path(f"<memory:{label}>"),
            format="pytorch",
            inputs=inputs,
            outputs=outputs,
            precision="fp32",
            sha256=h.hexdigest(),
            size_bytes=sum(t.numel() * t.element_size() for t in module.state_dict().values()),
            metadata={"in_memory": True, "dynamic_axes": {k: {str(a): s for a, s in v.items()} for k, v in dyn.items()}},
        )
        art._module = module
        art._example_inputs = example_inputs
        return art


def _flatten_torch_outputs(out: Any) -> list:
    """Flatten a module's output (tensor, tuple, dict, ModelOutput) into a list of tensors."""
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        flat = []
        for o in out:
            flat.extend(_flatten_torch_outputs(o))
        return flat
    return [out]


def detect_format(path: Path) -> str:
    """Guess the format from extension and magic bytes, without importing heavy libraries."""
    suffix = path.suffix.lower()
    with open(path, "rb") as f:
        head = f.read(8)
    if suffix == ".tflite" or head[4:8] == b"TFL3":
        return "tflite"
    if suffix == ".xml" and path.with_suffix(".bin").exists():
        return "openvino"
    if suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pt2":
        return "exported_program"
    if head[:2] == b"PK" or suffix in (".pt", ".pth", ".ts"):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
            if any(n.endswith("/code/__torch__.py") or "/code/" in n for n in names) and any(
                n.endswith("constants.pkl") for n in names
            ):
                return "torchscript"
            if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
                return "exported_program"
            return "pytorch"
        if suffix in (".pt", ".pth"):
            return "pytorch"
    raise ModelLoadError(
        f"{path}: not a model file edgekit recognises (extension '{suffix or 'none'}')",
        hint="give an .onnx, .tflite, OpenVINO .xml (with its .bin), TorchScript/ExportedProgram .pt/.pt2, or a .pt state",
    )


def load_artifact(
    path: Union[str, Path],
    *,
    format: Optional[str] = None,
    precision: Optional[str] = None,
    lineage: Optional[List[LineageEntry]] = None,
    trust_pickle: bool = False,
    metadata: Optional[Dict[str, Any]] = None,
) -> Artifact:
    """Read a model file into an Artifact, with a clear error for a missing, truncated or unknown file."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file", hint="check the path, or use a zoo model such as zoo:ppocr-det")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not a model file", hint="give the model file itself")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty", hint="re-export or re-download the model")
    fmt = format or detect_format(path)
    reader = _READERS.get(fmt)
    if reader is None:
        raise ModelLoadError(f"{path}: format '{fmt}' cannot be loaded from a file here", hint=f"known formats: {', '.join(FORMATS)}")
    inputs, outputs, prec, extra, meta = reader(path, trust_pickle)
    size = path.stat().st_size
    art = Artifact(
        path=path.resolve(),
        format=fmt,
        inputs=inputs,
        outputs=outputs,
        precision=precision or prec,
        sha256=sha256_file(path),
        size_bytes=size,
        extra_files=[p.resolve() for p in extra],
        lineage=lineage or [],
        metadata={**meta, **({"trust_pickle": True} if trust_pickle else {}), **(metadata or {})},
    )
    return art


def _check_external_data(path: Path, graph) -> None:
    """A weight stored beside the .onnx (external data) must be there, or every later tool fails obscurely."""
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for t in tensors:
        if t.data_location != 1:  # TensorProto.EXTERNAL
            continue
        where = {e.key: e.value for e in t.external_data}.get("location", "")
        target = (path.parent / where).resolve()
        if not where or not target.is_file():
            raise ModelLoadError(
                f"{path}: weight '{t.name}' is stored in the external-data file '{where}', which is missing (expected at {target})",
                hint=f"copy {where or 'the external-data file'} next to {path.name}, or re-export the model with its weights inside",
            )


def _read_onnx(path: Path, trust_pickle: bool):
    onnx = require("onnx", "simplify", "reading ONNX models")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError/ValueError/google.protobuf errors for bad bytes
        raise ModelLoadError(
            f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})",
            hint="the file may be truncated or not ONNX; re-export it",
        ) from exc
    graph = model.graph
    if not graph.node or not graph.output:
        raise ModelLoadError(f"{path}: ONNX file has no graph (truncated or not a model)", hint="re-export the model")
    _check_external_data(path, graph)
    init_names = {i.name for i in graph.initializer}

    def spec(vi, layout=None):
        t = vi.type.tensor_type
        shape: List[Dim] = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
        return TensorSpec(name=vi.name, shape=shape, dtype=_ONNX_DTYPES.get(t.elem_type, f"onnx:{t.elem_type}"))

    inputs = [spec(vi) for vi in graph.input if vi.name not in init_names]
    outputs = [spec(vi) for vi in graph.output]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    ops = {n.op_type for n in graph.node}
    if {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "MatMulInteger", "ConvInteger"} & ops:
        prec = "int8"
    elif any(i.data_type == 10 for i in graph.initializer):
        prec = "fp16"
    else:
        prec = "fp32"
    meta = {"opset": opset, "producer": f"{model.producer_name} {model.producer_version}".strip(), "nodes": len(graph.node)}
    return inputs, outputs, prec, [], meta


def _read_tflite(path: Path, trust_pickle: bool):
    interp_mod = None
    for mod in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            interp_mod = __import__(mod, fromlist=["Interpreter"])
            break
        except ImportError:
            continue
    if interp_mod is None:
        require("ai_edge_litert", "tflite", "reading TFLite models")
    try:
        interp = interp_mod.Interpreter(model_path=str(path))
    except Exception as exc:  # the runtime raises ValueError/RuntimeError for corrupt flatbuffers
        raise ModelLoadError(f"{path}: not a valid TFLite model ({exc})", hint="re-convert the model") from exc

    def spec(d):
        shape = [int(x) for x in d["shape"]]
        sig = d.get("shape_signature")
        if sig is not None:
            shape = [int(x) if int(x) >= 0 else "dyn" for x in sig]
        return TensorSpec(name=d["name"], shape=shape, dtype=d["dtype"].__name__ if hasattr(d["dtype"], "__name__") else str(d["dtype"]))

    inputs = [spec(d) for d in interp.get_input_details()]
    outputs = [spec(d) for d in interp.get_output_details()]
    dtypes = {t.dtype for t in inputs}
    prec = "int8" if dtypes & {"int8", "uint8"} else "fp32"
    return inputs, outputs, prec, [], {}


def _read_openvino(path: Path, trust_pickle: bool):
    ov = require("openvino", "openvino", "reading OpenVINO IR")
    bin_path = path.with_suffix(".bin")
    try:
        model = ov.Core().read_model(str(path), str(bin_path))
    except Exception as exc:  # openvino raises RuntimeError for a bad IR
        raise ModelLoadError(f"{path}: not a valid OpenVINO IR ({exc})", hint="re-convert the model") from exc

    def spec(port):
        shape: List[Dim] = []
        for d in port.get_partial_shape():
            shape.append(d.get_length() if d.is_static else "dyn")
        return TensorSpec(name=port.get_any_name(), shape=shape, dtype=port.get_element_type().to_dtype().name)

    inputs = [spec(p) for p in model.inputs]
    outputs = [spec(p) for p in model.outputs]
    return inputs, outputs, "fp32", [bin_path], {}


def _read_tensorrt(path: Path, trust_pickle: bool):
    # An engine can only be deserialised on its own GPU; the signature comes from the lineage/ONNX instead.
    return [], [], "unknown", [], {"note": "TensorRT engine: signature taken from the source ONNX"}


def _read_torch(path: Path, trust_pickle: bool):
    torch = require("torch", "torch", "loading PyTorch files")
    fmt = detect_format(path)
    if fmt == "torchscript":
        try:
            mod = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError for a corrupt archive
            raise ModelLoadError(f"{path}: not a loadable TorchScript file ({exc})", hint="re-save with torch.jit.save") from exc
        return [], [], "fp32", [], {"torch_kind": "torchscript", "note": "pass example inputs to export"}
    if fmt == "exported_program":
        try:
            ep = torch.export.load(str(path))
        except Exception as exc:  # torch raises various errors for corrupt/incompatible archives
            raise ModelLoadError(f"{path}: not a loadable ExportedProgram ({exc})", hint="re-save with torch.export.save") from exc
        inputs = []
        for spec_ in ep.graph_signature.input_specs:
            if spec_.kind.name == "USER_INPUT":
                node = [n for n in ep.graph.nodes if n.name == spec_.arg.name][0]
                val = node.meta.get("val")
                if val is not None:
                    inputs.append(
                        TensorSpec(name=spec_.arg.name, shape=[int(s) if str(s).isdigit() else str(s) for s in val.shape], dtype=str(val.dtype).replace("torch.", ""))
                    )
        return inputs, [], "fp32", [], {"torch_kind": "exported_program"}
    load_pickled_module(path, trust_pickle)
    return [], [], "fp32", [], {"torch_kind": "pickled_module"}


def load_pickled_module(path: Path, trust: bool):
    """torch.load a pickled nn.Module; pickles that carry code only when the user said they trust the file."""
    torch = require("torch", "torch", "loading PyTorch files")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust)
    except Exception as exc:  # weights_only refusal is an UnpicklingError; corrupt files raise others
        if not trust and "weights_only" in str(exc):
            raise ModelLoadError(
                f"{path}: this pickled PyTorch file contains code, which edgekit does not unpickle by default",
                hint="if you trust the file's origin, pass --trust-pickle (it runs arbitrary code on load); "
                "better, save it with torch.export.save or torch.jit.save",
            ) from exc
        raise ModelLoadError(f"{path}: not a loadable PyTorch file ({exc})", hint="re-save the model") from exc
    if not isinstance(obj, torch.nn.Module):
        kind = "a state_dict (weights only)" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ModelLoadError(
            f"{path}: holds {kind}, not a model (an nn.Module)",
            hint="load it into your nn.Module and use the Python API (edgekit.api.deploy(module, example_inputs)), or save with torch.export.save",
        )
    return obj


_READERS = {
    "onnx": _read_onnx,
    "tflite": _read_tflite,
    "openvino": _read_openvino,
    "tensorrt": _read_tensorrt,
    "torchscript": _read_torch,
    "exported_program": _read_torch,
    "pytorch": _read_torch,
}
