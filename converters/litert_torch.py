"""litert-torch step: a PyTorch module (or ExportedProgram) straight to .tflite with litert-torch, no ONNX in between.

litert-torch traces with torch.export at the example inputs' fixed shapes and lowers to TFLite. Its inputs are
named `serving_default_args_N` (N = forward() argument position) and 64-bit integer inputs become int32; the step
records that mapping (input_name_map, output_order, feed_dtypes) for edgekit.quality.fidelity and the on-device harness,
which cast feeds to the model's input dtypes. fp16 and dynamic-range int8 are applied to the converted model with
ai-edge-quantizer (weights in fp16 / int8 per channel, activations float and quantized on the fly for int8).
"""

from __future__ import annotations

import contextlib
import io
import re
import traceback
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

from pydantic import Field, model_validator

from edgekit.core.artifact import Artifact, LineageEntry, load_artifact
from edgekit.core.errors import StepError, require
from edgekit.core.steps import Step, StepConfig, StepContext, lossy_budget_default

EXTRA = "litert"
_PRECISION_TAG = {"fp32": "fp32", "fp16": "fp16", "int8-dynamic": "int8"}
_OP_PATTERNS = (
    re.compile(r"Lowering not found: (\S+)"),
    re.compile(r"failed to legalize operation '([^']+)'"),
    re.compile(r"'((?:stablehlo|tfl|mhlo|chlo)\.[\w.]+)' op"),
    re.compile(r"\b(aten\.[A-Za-z_][\w.]*)"),
    re.compile(r"\b(aten::[A-Za-z_]\w*)"),
)


class LitertTorchConfig(StepConfig):
    """precision: fp32, fp16 (fp16 weights), int8-dynamic (int8 per-channel weights, activations quantized at run time)."""

    precision: Literal["fp32", "fp16", "int8-dynamic"] = "fp32"
    strict_export: bool = Field(default=False, description="torch.export strict mode (TorchDynamo tracing)")
    # Example-input shapes/dtypes for sources that carry none (an ExportedProgram without stored examples).
    input_shapes: Optional[Dict[str, List[int]]] = None
    input_dtypes: Optional[Dict[str, str]] = None
    max_drop: Optional[float] = Field(default=None, ge=0.0, lt=1.0, description="int8-dynamic: accuracy budget on the task metric")

    @model_validator(mode="before")
    @classmethod
    def _int8_fidelity_default(cls, data: Any) -> Any:
        """int8-dynamic is checked on the task score (1 - max_drop); the default 0.999 raw cosine rejected MiniLM at 0.99702
        (pooled embedding cosine 0.998). fp32/fp16 keep the strict default."""
        return lossy_budget_default(data, isinstance(data, dict) and data.get("precision") == "int8-dynamic")


class LitertTorchStep(Step):
    name = "litert-torch"
    summary = "PyTorch -> TFLite/LiteRT directly with litert-torch (fp32, fp16, dynamic-range int8)"
    accepts = ("pytorch", "exported_program")
    produces = "tflite"
    Config = LitertTorchConfig
    requires = (("litert_torch", EXTRA), ("ai_edge_quantizer", EXTRA), ("ai_edge_litert", EXTRA), ("torch", EXTRA))

    def run(self, artifact: Artifact, config: StepConfig, ctx: StepContext) -> Artifact:
        import numpy as np

        cfg = config if isinstance(config, LitertTorchConfig) else LitertTorchConfig.model_validate(config.model_dump())
        torch = require("torch", EXTRA, "converting PyTorch models with litert-torch")
        litert_torch = require("litert_torch", EXTRA, "converting PyTorch models to TFLite with litert-torch")
        from edgekit.converters.export import _SOURCE_ONLY_META, ExportConfig, _input_names, _load_source, _stem

        src = _load_source(artifact, ExportConfig(input_shapes=cfg.input_shapes, input_dtypes=cfg.input_dtypes), torch)
        names = _input_names(artifact, ExportConfig(), src)
        work = Path(ctx.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        stem = _stem(artifact)
        fp32_path = work / f"{stem}_float32.tflite"
        log_path = work / "litert_torch.log"
        module = src.program.module() if src.program is not None else src.module
        _warn_int64_range(src.example_inputs, names, ctx)

        log = io.StringIO()
        try:
            with _captured(log):
                edge = litert_torch.convert(module, tuple(src.example_inputs), strict_export=cfg.strict_export)
                edge.export(str(fp32_path))
        except Exception as exc:  # litert-torch raises torch.export, MLIR and converter errors of many types
            detail = log.getvalue() + "\n" + "".join(traceback.format_exception(exc))
            log_path.write_text(detail)
            raise StepError(
                self.name,
                f"litert-torch could not convert {artifact.path} ({type(exc).__name__}: {_first_line(exc)}); full log in {log_path}",
                op=_failed_op(str(exc)) or _failed_op(log.getvalue()),
                hint="if the op is unsupported, deploy through ONNX instead (--runtime onnxruntime/openvino, or the 'tflite' step via export + onnx2tf)",
                tool_message=detail[-4000:],
            ) from exc

        out_path = fp32_path
        if cfg.precision != "fp32":
            out_path = work / f"{stem}_{'float16' if cfg.precision == 'fp16' else 'dynamic_int8'}.tflite"
            try:
                with _captured(log):
                    _quantize(fp32_path, out_path, cfg.precision)
            except Exception as exc:  # ai-edge-quantizer raises ValueError/RuntimeError for unsupported tensors
                detail = log.getvalue() + "\n" + "".join(traceback.format_exception(exc))
                log_path.write_text(detail)
                raise StepError(
                    self.name,
                    f"ai-edge-quantizer could not apply {cfg.precision} to the converted model ({type(exc).__name__}: {_first_line(exc)}); "
                    f"the FP32 model is kept at {fp32_path}, full log in {log_path}",
                    op=_failed_op(str(exc)) or _failed_op(log.getvalue()),
                    hint="use precision fp32, or quantize through ONNX (quantize-ort / openvino)",
                    tool_message=detail[-4000:],
                ) from exc
        log_path.write_text(log.getvalue())

        meta = {k: v for k, v in artifact.metadata.items() if k not in _SOURCE_ONLY_META}
        io_meta = _io_mapping(out_path, names, len(artifact.outputs) or None)
        ref = [r.detach().cpu().numpy() for r in _torch_outputs(torch, module, src.example_inputs)]
        io_meta["layout_check_cosine"] = _check(out_path, io_meta, names, src.example_inputs, ref, np)
        if io_meta["layout_check_cosine"] < 0.5:
            raise StepError(
                self.name,
                f"the converted model's outputs do not match the PyTorch module's on the example inputs (cosine {io_meta['layout_check_cosine']:.3f}); model kept at {out_path}",
                hint="use precision fp32, or deploy through ONNX",
            )
        meta.update(io_meta)
        meta.update({
            "converter": "litert-torch",
            "layout": "same as source",
            "fixed_shapes": {n: list(np.asarray(x).shape) for n, x in zip(names, _numpy(src.example_inputs))},
        })
        ctx.note(f"litert-torch: fixed input shapes {meta['fixed_shapes']} (the example inputs'); "
                 f"inputs {', '.join(f'{s}->{t}' for s, t in io_meta['input_name_map'].items())}")
        entry = LineageEntry(
            step=self.name,
            config=cfg.model_dump(mode="json"),
            tools=self.tool_versions(),
            notes=[f"litert-torch {cfg.precision}", *ctx.notes],
            source_sha256=artifact.sha256,
        )
        ctx.report.update({"litert_torch_precision": cfg.precision, "layout_check_cosine": io_meta["layout_check_cosine"]})
        return load_artifact(out_path, format="tflite", precision=_PRECISION_TAG[cfg.precision], lineage=[*artifact.lineage, entry], metadata=meta)


# ---------------------------------------------------------------- conversion helpers


@contextlib.contextmanager
def _captured(buf: io.StringIO):
    """Keep litert-torch's progress lines (and warnings) out of the terminal but in the step's log."""
    import logging

    handler = logging.StreamHandler(buf)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        root.removeHandler(handler)


def _quantize(src: Path, dst: Path, precision: str) -> None:
    from ai_edge_quantizer import qtyping, quantizer, recipe, recipe_manager

    if precision == "int8-dynamic":
        rec = recipe.dynamic_wi8_afp32()
    else:  # fp16 weights, float compute
        rm = recipe_manager.RecipeManager()
        rm.add_weight_only_config(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
            algorithm_key=recipe.AlgorithmName.FLOAT_CASTING,
        )
        rec = rm.get_quantization_recipe()
    q = quantizer.Quantizer(bytearray(src.read_bytes()), rec)
    result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    dst.write_bytes(bytes(result.quantized_model))


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=2)


def _io_mapping(path: Path, names: List[str], n_outputs: Optional[int]) -> Dict[str, Any]:
    """Source input name -> TFLite input name (signature arg `args_N`), TFLite output position per source output, dtypes."""
    interp = _interpreter(path)
    sigs = interp._get_full_signature_list()  # {'serving_default': {'inputs': {'args_0': tensor index}, 'outputs': {...}}}
    sig = sigs.get("serving_default") or next(iter(sigs.values()))
    ins = {d["index"]: d for d in interp.get_input_details()}
    outs = [d["index"] for d in interp.get_output_details()]

    def arg_pos(key: str) -> int:
        m = re.search(r"(\d+)$", key)
        return int(m.group(1)) if m else 0

    in_keys = sorted(sig["inputs"], key=arg_pos)
    if len(in_keys) != len(names):
        raise StepError("litert-torch", f"the converted model has {len(in_keys)} inputs, the source has {len(names)} ({', '.join(names)})",
                        hint="inputs that are constants at trace time are folded away; pass every forward() input as a tensor")
    name_map = {n: ins[sig["inputs"][k]]["name"] for n, k in zip(names, in_keys)}
    feed_dtypes = {ins[sig["inputs"][k]]["name"]: ins[sig["inputs"][k]]["dtype"].__name__ for k in in_keys}
    out_keys = sorted(sig["outputs"], key=arg_pos)
    order = [outs.index(sig["outputs"][k]) for k in out_keys]
    if n_outputs is not None and len(order) != n_outputs:
        raise StepError("litert-torch", f"the converted model has {len(order)} outputs, the source declares {n_outputs}", hint="check the module's return value")
    return {"input_name_map": name_map, "feed_transpose": {}, "feed_dtypes": feed_dtypes, "output_order": order, "output_transpose": {}}


def _check(path: Path, io_meta: Dict[str, Any], names: List[str], examples, ref, np) -> float:
    """Minimum cosine between the TFLite outputs and the module's, on the example inputs (catches a wrong mapping)."""
    interp = _interpreter(path)
    interp.allocate_tensors()
    by_name = {d["name"]: d for d in interp.get_input_details()}
    for n, x in zip(names, _numpy(examples)):
        d = by_name[io_meta["input_name_map"][n]]
        interp.set_tensor(d["index"], np.asarray(np.asarray(x).astype(d["dtype"]), order="C"))
    interp.invoke()
    got = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
    got = [got[i] for i in io_meta["output_order"]]
    cos = []
    for r, g in zip(ref, got):
        a, b = np.asarray(r, np.float64).ravel(), np.asarray(g, np.float64).ravel()
        if a.shape != b.shape:
            return 0.0
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos.append(1.0 if na == nb == 0 else float(a @ b / (na * nb)) if na and nb else 0.0)
    return min(cos) if cos else 0.0


def _torch_outputs(torch, module, examples) -> list:
    from edgekit.core.artifact import _flatten_torch_outputs

    with torch.no_grad():
        return _flatten_torch_outputs(module(*examples))


def _numpy(examples) -> list:
    return [x.detach().cpu().numpy() if hasattr(x, "detach") else x for x in examples]


def _warn_int64_range(examples, names: List[str], ctx: StepContext) -> None:
    """int64 inputs become int32 in the TFLite model; say so, and warn when the example values do not fit."""
    import numpy as np

    for n, x in zip(names, _numpy(examples)):
        x = np.asarray(x)
        if x.dtype == np.int64:
            info = np.iinfo(np.int32)
            fits = x.size == 0 or (x.min() >= info.min and x.max() <= info.max)
            ctx.note(f"litert-torch: input '{n}' is int64 in PyTorch and int32 in the TFLite model" + ("" if fits else " — WARNING: the example values overflow int32"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _failed_op(text: str) -> Optional[str]:
    for pat in _OP_PATTERNS:
        m = pat.search(text)
        if m:
            return m.group(1)
    return None
