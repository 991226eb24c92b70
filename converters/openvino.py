"""OpenVINO step: ONNX -> IR (xml/bin), FP16-stored weights, or NNCF INT8 held to an accuracy budget.

OpenVINO "fp16" means FP16-STORED weights (ov.save_model(compress_to_fp16=True)): the CPU plugin decompresses them
and computes in f32, or in bf16 on CPUs with AVX512-BF16/AMX (its default inference precision). It halves the .bin,
not the math; the artifact's lineage and the plan say so."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

from pydantic import Field, model_validator

from edgekit.core.artifact import Artifact, LineageEntry, load_artifact
from edgekit.core.errors import CalibrationError, StepError, require
from edgekit.core.steps import Step, StepConfig, StepContext, lossy_budget_default
from edgekit.quality.metrics import cosine
from edgekit.converters.openvino_graph import attention_matmuls, is_quantized, quantized_names, weighted_ancestors


FP16_MEANS = ("fp16 = FP16-stored weights (compress_to_fp16); the CPU plugin computes in f32, or bf16 where the CPU "
              "has AVX512-BF16/AMX")


class OpenVinoConfig(StepConfig):
    """precision fp32/fp16/int8; int8 is calibrated by NNCF and, with max_drop, held to an accuracy budget."""

    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    max_drop: Optional[float] = Field(default=None, ge=0.0, description="allowed drop of the task score (or mean cosine) vs FP32")
    calib_samples: int = Field(default=100, gt=0)
    eval_samples: int = Field(default=20, gt=0)
    preset: Literal["mixed", "performance", "auto"] = Field(
        default="mixed",
        description="NNCF preset: mixed = asymmetric activations (fits hardswish/negative activations; same OpenVINO CPU speed), "
        "performance = symmetric; 'auto' tries both and keeps the better-scoring (same ops quantized, so same speed)",
    )
    overflow_fix: Literal["first_layer", "enable", "disable"] = Field(
        default="first_layer", description="NNCF 7-bit weight fix against u8s8 saturation on CPUs without VNNI ('enable' = all layers)"
    )
    search: Literal["sensitivity", "accuracy_control"] = Field(
        default="sensitivity",
        description="when every full-INT8 candidate misses max_drop: edgekit's sensitivity search (bounded by max_search_rounds) "
        "or nncf.quantize_with_accuracy_control driven by the task metric (slower: ranks every quantized group)",
    )
    ac_max_iterations: int = Field(default=32, gt=0, description="accuracy-control: most quantizer groups reverted to float")
    model_type: Literal["auto", "transformer", "cnn"] = Field(
        default="auto", description="NNCF model type; auto = transformer when the graph multiplies two activations (attention)")
    ignored_scope: List[str] = Field(default_factory=list, description="node names never quantized")
    ignored_types: List[str] = Field(default_factory=list, description="op types never quantized, e.g. ['Multiply']")
    fast_bias_correction: bool = True
    max_search_rounds: int = Field(default=4, ge=0, description="sensitivity-search rounds when the budget is missed")
    search_start: int = Field(default=2, gt=0, description="nodes ignored in the first search round (doubles each round)")
    on_budget_miss: Literal["error", "fp16", "fp32"] = "error"
    input_shapes: Dict[str, List[int]] = Field(default_factory=dict, description="fix input shapes before conversion")

    @model_validator(mode="before")
    @classmethod
    def _int8_fidelity_default(cls, data: Any) -> Any:
        """INT8 is checked on the task score against 1 - max_drop (cosine only as a floor), like every lossy step."""
        return lossy_budget_default(data, isinstance(data, dict) and data.get("precision") == "int8")


class OpenVinoStep(Step):
    name = "openvino"
    summary = "ONNX -> OpenVINO IR; fp16-stored weights or NNCF int8 within an accuracy budget"
    accepts = ("onnx",)
    produces = "openvino"
    Config = OpenVinoConfig
    requires = (("openvino", "openvino"), ("nncf", "openvino"))
    source_modules = ("edgekit.converters.openvino_accuracy_control", "edgekit.converters.openvino_graph")

    def run(self, artifact: Artifact, config: StepConfig, ctx: StepContext) -> Artifact:
        cfg = config if isinstance(config, OpenVinoConfig) else OpenVinoConfig.model_validate(config.model_dump())
        ov = require("openvino", "openvino", "the OpenVINO step")
        if cfg.precision == "int8" and _is_qdq(artifact):
            # already quantized (QAT or a QDQ export): OpenVINO turns Q/DQ pairs into FakeQuantize and runs INT8 kernels
            work = Path(ctx.work_dir)
            work.mkdir(parents=True, exist_ok=True)
            msg = "openvino: the input carries QuantizeLinear/DequantizeLinear (QAT); converted as it is, no NNCF"
            ctx.note(msg)
            xml = _save(ov, _convert(ov, artifact, cfg), work / "model.xml", compress_fp16=False)
            hint = {k: artifact.metadata[k] for k in ("inference_precision_hint",) if artifact.metadata.get(k)}  # QAT's validated float precision
            return _artifact(xml, "int8", artifact, cfg, [msg], extra_meta={"int8_from": "qdq", **hint})
        if cfg.precision == "int8" and ctx.calib_data is None:
            raise CalibrationError(
                "step 'openvino': INT8 needs calibration data, and none was given",
                hint="pass --calib DIR (images or .npz/.npy feeds matching the model inputs), or choose --precision fp16/fp32",
            )
        work = Path(ctx.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        model = _convert(ov, artifact, cfg)
        lineage_notes: List[str] = []
        if cfg.precision in ("fp32", "fp16"):
            if cfg.precision == "fp16":
                lineage_notes.append(FP16_MEANS)
            xml = _save(ov, model, work / "model.xml", compress_fp16=cfg.precision == "fp16")
            return _artifact(xml, cfg.precision, artifact, cfg, lineage_notes)

        # INT8: keep the FP32 IR first, so a failure later still leaves it on disk.
        fp32_xml = _save(ov, model, work / "model_fp32.xml", compress_fp16=False)
        ctx.note(f"openvino: FP32 IR kept at {fp32_xml} (reference for the INT8 search)")
        result = _Int8Search(ov, model, cfg, ctx, artifact).run()
        if result.model is None:  # budget missed and the config allows a float fallback
            prec = cfg.on_budget_miss
            msg = f"openvino: no INT8 variant met max_drop={cfg.max_drop} (best drop {result.best_drop:.4f}); returned {prec.upper()} as configured (on_budget_miss={prec})"
            ctx.note(msg)
            lineage_notes.append(msg)
            xml = _save(ov, model, work / "model.xml", compress_fp16=prec == "fp16")
            return _artifact(xml, prec, artifact, cfg, lineage_notes, extra_meta={"int8_budget_missed": True})
        xml = _save(ov, result.model, work / "model.xml", compress_fp16=False)
        lineage_notes.append(result.summary)
        meta = {"ignored_scope": result.ignored, "int8_score": result.score, "int8_drop": result.drop, "int8_preset": result.preset}
        return _artifact(xml, "int8", artifact, cfg, lineage_notes, extra_meta=meta)


def _is_qdq(artifact: Artifact) -> bool:
    if artifact.metadata.get("quantized") == "qdq":
        return True
    from edgekit.converters.qat import has_qdq

    return artifact.format == "onnx" and has_qdq(Path(artifact.path))


def _convert(ov, artifact: Artifact, cfg: OpenVinoConfig):
    """ov.convert_model on the ONNX file; an unconvertible op becomes a StepError naming the op and its node(s)."""
    kwargs: Dict[str, Any] = {}
    if cfg.input_shapes:
        kwargs["input"] = {name: shape for name, shape in cfg.input_shapes.items()}
    try:
        return ov.convert_model(str(artifact.path), **kwargs)
    except Exception as exc:  # OpenVINO raises OpConversionFailure/GeneralFailure (RuntimeError subclasses) with its report
        text = str(exc)
        ops = re.findall(r"No conversion rule found for operations: ([^\n]+)", text)
        op_types = [re.sub(r"-\d+$", "", o.strip()) for o in ",".join(ops).split(",") if o.strip()]
        nodes = _nodes_of_types(artifact.path, op_types) if op_types else []
        raise StepError(
            "openvino",
            f"OpenVINO cannot convert {artifact.path.name}" + (f": no conversion rule for {', '.join(op_types)}" if op_types else ""),
            hint="replace or remove that op before export (or pick another runtime: --runtime onnxruntime / tflite)",
            node=", ".join(nodes[:5]) or None,
            op=", ".join(op_types) or None,
            tool_message=text,
        ) from exc


def _nodes_of_types(path: Path, op_types: Sequence[str]) -> List[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [n.name or f"{n.op_type}#{i}" for i, n in enumerate(model.graph.node) if n.op_type in set(op_types)]


def _save(ov, model, xml: Path, compress_fp16: bool) -> Path:
    """Save xml+bin into a temp dir beside the target, then rename (bin first), so no half-written IR is left."""
    tmp = Path(tempfile.mkdtemp(prefix=".ov-", dir=str(xml.parent)))
    try:
        ov.save_model(model, str(tmp / xml.name), compress_to_fp16=compress_fp16)
        os.replace(tmp / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
        os.replace(tmp / xml.name, xml)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


def _artifact(xml: Path, precision: str, source: Artifact, cfg: OpenVinoConfig, notes: List[str], extra_meta: Optional[Dict[str, Any]] = None) -> Artifact:
    out = load_artifact(xml, format="openvino", precision=precision, lineage=list(source.lineage), metadata=extra_meta or {})
    entry = LineageEntry(step="openvino", config=cfg.model_dump(mode="json"), tools=OpenVinoStep.tool_versions(), notes=notes, source_sha256=source.sha256)
    return out.with_lineage(entry)


# --------------------------------------------------------------------------------------------- INT8 search


class _SearchResult:
    def __init__(self, model, ignored: List[str], score: Optional[float], drop: Optional[float], best_drop: float, summary: str, preset: Optional[str] = None):
        self.model = model
        self.preset = preset
        self.ignored = ignored
        self.score = score
        self.drop = drop
        self.best_drop = best_drop
        self.summary = summary


class _Int8Search:
    """Quantize with NNCF; if the measured drop exceeds max_drop, ignore the most error-introducing nodes and retry."""

    def __init__(self, ov, model, cfg: OpenVinoConfig, ctx: StepContext, source: Artifact):
        self.ov = ov
        self.model = model
        self.cfg = cfg
        self.ctx = ctx
        self.source = source
        self.core = ov.Core()
        self.variants: List[Dict[str, Any]] = ctx.report.setdefault("variants", [])
        self.model_type = cfg.model_type
        if cfg.model_type == "auto":
            att = attention_matmuls(model)
            self.model_type = "transformer" if att else "cnn"
            ctx.note(f"openvino int8: NNCF model type {self.model_type} (auto: "
                     + (f"{len(att)} attention ops (fused attention, or a MatMul of two activations), e.g. {att[0]})" if att else "no attention op)"))

    def _feeds(self) -> Tuple[list, list, str]:
        cfg, ctx = self.cfg, self.ctx
        if ctx.eval_data is not None:
            calib = ctx.calib_data(cfg.calib_samples)  # type: ignore[misc]
            evals = ctx.eval_data(cfg.eval_samples) if cfg.max_drop is not None else []
            return calib, evals, "eval"
        pool = ctx.calib_data(cfg.calib_samples + (cfg.eval_samples if cfg.max_drop is not None else 0))  # type: ignore[misc]
        if cfg.max_drop is None:
            return pool, [], "none"
        n_eval = min(cfg.eval_samples, max(1, len(pool) // 4))
        if len(pool) < 2:
            raise CalibrationError(
                f"step 'openvino': max_drop={cfg.max_drop} needs evaluation data and only {len(pool)} calibration sample(s) were given",
                hint="pass more --calib samples, or evaluation data, or drop the accuracy budget",
            )
        self.ctx.note(f"openvino: no evaluation set; the budget is measured on {n_eval} held-out calibration samples not used for calibration")
        return pool[:-n_eval], pool[-n_eval:], "held-out calibration samples"

    def _compile(self, model, exact: bool):
        """exact=True forces f32 math (CPUs with AVX512-BF16/AMX default to bf16 even for an FP32 IR)."""
        props: Dict[str, Any] = {"INFERENCE_NUM_THREADS": 2}
        if exact:
            props["INFERENCE_PRECISION_HINT"] = "f32"
        return self.core.compile_model(model, "CPU", props)

    def _infer(self, model, feeds: list, exact: bool = False) -> List[list]:
        """Outputs per feed; exact=True forces f32 math (CPUs with AVX512-BF16/AMX default to bf16 even for an FP32 IR)."""
        compiled = self._compile(model, exact)
        req = compiled.create_infer_request()
        outs = []
        for feed in feeds:
            res = req.infer(feed)
            outs.append([res[o].copy() for o in compiled.outputs])
        return outs

    def score(self, ref: List[list], cand: List[list]) -> float:
        if self.ctx.task_metric is not None:
            return float(self.ctx.task_metric(ref, cand))
        sims = [cosine(r, c) for rs, cs in zip(ref, cand) for r, c in zip(rs, cs)]
        return float(sum(sims) / len(sims)) if sims else 1.0

    def _presets(self) -> List[str]:
        return ["mixed", "performance"] if self.cfg.preset == "auto" else [self.cfg.preset]

    def nncf_kwargs(self, calib: list, ignored: List[str], preset: str) -> Tuple[Dict[str, Any], Any]:
        """(keyword arguments, advanced parameters) shared by nncf.quantize and accuracy control."""
        nncf = require("nncf", "openvino", "INT8 quantization with NNCF")
        import logging

        nncf.set_log_level(logging.ERROR)  # NNCF's INFO lines and progress bars would bury edgekit's own progress
        from nncf.common.quantization.structs import QuantizationPreset
        from nncf.parameters import ModelType
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        fix = {"first_layer": OverflowFix.FIRST_LAYER, "enable": OverflowFix.ENABLE, "disable": OverflowFix.DISABLE}[self.cfg.overflow_fix]
        return dict(
            preset=QuantizationPreset.MIXED if preset == "mixed" else QuantizationPreset.PERFORMANCE,
            subset_size=len(calib),
            fast_bias_correction=self.cfg.fast_bias_correction,
            model_type=ModelType.TRANSFORMER if self.model_type == "transformer" else None,
            ignored_scope=nncf.IgnoredScope(names=list(ignored), types=list(self.cfg.ignored_types), validate=False),
        ), AdvancedQuantizationParameters(overflow_fix=fix)

    def _quantize(self, calib: list, ignored: List[str], preset: str):
        nncf = require("nncf", "openvino", "INT8 quantization with NNCF")
        kwargs, advanced = self.nncf_kwargs(calib, ignored, preset)
        try:
            return nncf.quantize(self.model, nncf.Dataset(calib), advanced_parameters=advanced, **kwargs)
        except Exception as exc:  # NNCF raises nncf.* errors / RuntimeError from OpenVINO with its own message
            raise StepError("openvino", "NNCF INT8 quantization failed", hint="try --precision fp16, or ignore the failing node", tool_message=f"{type(exc).__name__}: {exc}") from exc

    def _record(self, ignored: List[str], score: Optional[float], drop: Optional[float], model, note: str, preset: str) -> None:
        size = None
        with tempfile.TemporaryDirectory() as d:
            self.ov.save_model(model, os.path.join(d, "m.xml"), compress_to_fp16=False)
            size = os.path.getsize(os.path.join(d, "m.bin"))
        self.variants.append({"step": "openvino", "precision": "int8", "ignored": list(ignored), "score": score, "drop": drop, "size_bytes": size, "preset": preset,
                              "quantized_ops": len(quantized_names(model)), "note": note})

    def _infer_ports(self, model, feeds: list, ports: list, exact: bool = False) -> List[list]:
        """The values of `ports` (outputs added to `model`) per feed."""
        compiled = self._compile(model, exact)
        req = compiled.create_infer_request()
        index = {name: i for i, out in enumerate(compiled.outputs) for name in out.get_names()}
        cols = [index[next(iter(p.get_names()))] for p in ports]
        outs = []
        for feed in feeds:
            req.infer(feed)
            outs.append([req.get_output_tensor(c).data.copy() for c in cols])
        return outs

    def _sensitivity(self, qmodel, feeds: list) -> List[str]:
        """Quantized nodes ranked by how much output error they add (their error minus their worst input's)."""
        import numpy as np

        fmodel = self.model.clone()
        q = qmodel.clone()
        by_name_f = {op.get_friendly_name(): op for op in fmodel.get_ordered_ops()}
        by_name_q = {op.get_friendly_name(): op for op in q.get_ordered_ops()}
        # candidates: every op NNCF put a quantizer in front of (weights or activations), present in both models
        names = [
            op.get_friendly_name()
            for op in fmodel.get_ordered_ops()
            if op.get_friendly_name() in by_name_q and is_quantized(by_name_q[op.get_friendly_name()])
        ]
        if not names:
            return []
        # read the added outputs back by port, not by position: OpenVINO does not duplicate an output that already
        # exists (a candidate feeding a model output), so positions shift
        f_ports = fmodel.add_outputs([by_name_f[n].output(0) for n in names])
        q_ports = q.add_outputs([by_name_q[n].output(0) for n in names])
        ref = self._infer_ports(fmodel, feeds[:2], f_ports, exact=True)
        got = self._infer_ports(q, feeds[:2], q_ports)
        err: Dict[str, float] = {}
        for i, n in enumerate(names):
            vals = []
            for r, g in zip(ref, got):
                a, b = r[i].astype(np.float64), g[i].astype(np.float64)
                vals.append(float(np.linalg.norm(a - b) / (np.linalg.norm(a) + 1e-12)))
            err[n] = max(vals)
        # error a node introduces = its error minus the largest error arriving at its inputs from earlier ranked nodes
        order = {n: i for i, n in enumerate(names)}
        jump: Dict[str, float] = {}
        for n in names:
            upstream = [err[m] for m in weighted_ancestors(by_name_f[n], order)]
            jump[n] = err[n] - (max(upstream) if upstream else 0.0)
        return sorted(names, key=lambda n: -jump[n])

    def run(self) -> _SearchResult:
        cfg = self.cfg
        calib, evals, eval_kind = self._feeds()
        if not calib:
            raise CalibrationError("step 'openvino': the calibration data source returned no samples", hint="check the --calib directory/file")
        ignored = list(cfg.ignored_scope)
        presets = self._presets()
        if cfg.max_drop is None:
            qmodel = self._quantize(calib, ignored, presets[0])
            self._record(ignored, None, None, qmodel, "no accuracy budget given; not measured", presets[0])
            self.ctx.note("openvino: INT8 accuracy not checked here (no max_drop); the pipeline's fidelity check still applies")
            return _SearchResult(qmodel, ignored, None, None, 0.0, f"NNCF INT8 preset {presets[0]} ({len(calib)} calibration samples, ignored {len(ignored)} nodes)", presets[0])
        # the reference is true FP32; candidates run with the device's default settings, as they will be deployed
        ref = self._infer(self.model, evals, exact=True)
        base = self.score(ref, ref)
        # Full-INT8 candidates (preset auto) quantize the same ops, so they run at the same speed: keep the best-scoring.
        best = None
        for preset in presets:
            qmodel = self._quantize(calib, ignored, preset)
            score = self.score(ref, self._infer(qmodel, evals))
            self._record(ignored, score, base - score, qmodel, f"full NNCF INT8, preset {preset}, on {eval_kind}", preset)
            self.ctx.note(f"openvino: full INT8 preset {preset}: {self._metric_name()} {score:.4f} (drop {base - score:.4f}, budget {cfg.max_drop})")
            if best is None or base - score < best[0]:
                best = (base - score, qmodel, list(ignored), score, preset)
        drop, qmodel, _, _, preset = best
        rounds = 0
        if drop > cfg.max_drop and cfg.search == "accuracy_control":
            from edgekit.converters.openvino_accuracy_control import accuracy_control

            trial, kept, secs = accuracy_control(self, calib, evals, ref, ignored, preset, qmodel)
            t_score = self.score(ref, self._infer(trial, evals))
            trial_ignored = list(ignored) + kept
            self._record(trial_ignored, t_score, base - t_score, trial, f"nncf.quantize_with_accuracy_control, preset {preset}: {len(kept)} ops kept in float ({secs:.0f} s)", preset)
            self.ctx.note(f"openvino: accuracy control kept {len(kept)} ops in float: drop {base - t_score:.4f} (budget {cfg.max_drop}, {secs:.0f} s)")
            rounds = 1
            if base - t_score < best[0]:
                best = (base - t_score, trial, trial_ignored, t_score, preset)
        elif drop > cfg.max_drop:
            best, rounds = self._sensitivity_search(calib, evals, ref, base, best)
        best_drop, best_model, best_ignored, best_score, best_preset = best
        self.ctx.report["int8_search"] = {
            "max_drop": cfg.max_drop, "metric": self._metric_name(), "eval_data": eval_kind, "eval_samples": len(evals),
            "best_drop": best_drop, "preset": best_preset, "search": cfg.search, "rounds": rounds,
        }
        if best_drop <= cfg.max_drop and quantized_names(best_model):
            return _SearchResult(best_model, best_ignored, best_score, best_drop, best_drop,
                                 f"NNCF INT8 preset {best_preset}, drop {best_drop:.4f} <= {cfg.max_drop} with {len(best_ignored)} nodes in float", best_preset)
        if cfg.on_budget_miss != "error":
            return _SearchResult(None, best_ignored, best_score, best_drop, best_drop, "budget missed")
        raise StepError(
            "openvino",
            f"no INT8 variant met the accuracy budget: best drop {best_drop:.4f} > max_drop {cfg.max_drop} "
            f"(score {best_score:.4f} vs FP32 {base:.4f}, {len(best_ignored)} nodes kept in float, {rounds} search rounds, {len(self.variants)} variants in the report)",
            hint="raise the budget (--max-drop), use --precision fp16, or set on_budget_miss to fp16/fp32; the FP32 IR is kept in the work dir",
        )

    def _metric_name(self) -> str:
        return self.ctx.task_metric_name or ("task" if self.ctx.task_metric else "mean cosine")

    def _sensitivity_search(self, calib: list, evals: list, ref: list, base: float, best: tuple) -> Tuple[tuple, int]:
        """Keep the most error-introducing nodes in float, doubling their number each round, until the budget is met."""
        cfg = self.cfg
        drop, qmodel, _, _, preset = best
        ranked: Optional[List[str]] = None
        k = cfg.search_start
        rounds = 0
        while drop > cfg.max_drop and rounds < cfg.max_search_rounds:
            if ranked is None:
                ranked = [n for n in self._sensitivity(qmodel, evals) if n not in cfg.ignored_scope]
            if not ranked:
                break
            extra = ranked[:k]
            trial_ignored = list(cfg.ignored_scope) + extra
            trial = self._quantize(calib, trial_ignored, preset)
            if not quantized_names(trial):
                # every quantizable op is now kept in float: that model is FP32, and must never be reported as INT8
                self._record(trial_ignored, None, None, trial, f"search round {rounds + 1}: ignoring top {len(extra)} leaves no INT8 op (FP32, not eligible)", preset)
                self.ctx.note(f"openvino: keeping {len(extra)} sensitive nodes in float leaves no INT8 op; the search stops there")
                rounds += 1
                break
            t_score = self.score(ref, self._infer(trial, evals))
            t_drop = base - t_score
            self._record(trial_ignored, t_score, t_drop, trial, f"search round {rounds + 1}: ignore top {len(extra)} sensitive nodes", preset)
            self.ctx.note(f"openvino: INT8 drop {t_drop:.4f} with {len(extra)} sensitive nodes kept in float (budget {cfg.max_drop})")
            rounds += 1
            if t_drop < best[0]:
                best = (t_drop, trial, trial_ignored, t_score, preset)
            elif len(extra) >= len(ranked):
                break  # nothing more to gain
            drop = t_drop
            if k >= len(ranked):
                break
            k *= 2
        return best, rounds
