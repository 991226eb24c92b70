"""Peer comparison: each peer used the way its own documentation tells a user, beside what `edgekit deploy` picks.

Three phases, so that building never competes with timing:

    python benchmarks/peers.py build  --work /tmp/peers-work                  # convert/quantize + held-out fidelity
    /work/bin/benchcore python benchmarks/peers.py time --work /tmp/peers-work --models ppocr-det   # per model
    python benchmarks/peers.py report --work /tmp/peers-work                  # writes benchmarks/PEERS.md
                                             # (+ <work>/notes-<model>.md after each model, --extra FILE at the end)

Peers (per zoo model; every one gets the same 100 calibration samples, `calib` split):
  * ORT FP32; PyTorch eager FP32 (MiniLM only).
  * Optimum `AutoQuantizationConfig.<isa>` for this CPU (avx512_vnni / avx512 / avx2 / arm64 from the CPU flags):
    dynamic (`is_static=False, per_channel=False`, its transformer quick-start) for MiniLM, static QDQ with
    `AutoCalibrationConfig.minmax` for the CNNs. optimum-onnx 0.1.0 would downgrade transformers 5 -> 4.57 here, so
    its ORTQuantizer.quantize is reproduced exactly: the same ONNXQuantizer/QDQQuantizer arguments and extra_options.
  * ORT static QDQ as its docs describe: `quant_pre_process`, then `quantize_static(QuantFormat.QDQ,
    per_channel=True, QUInt8 activations / QInt8 weights, MinMax calibration)`; opset raised to 17 first (per-channel
    DequantizeLinear needs `axis`).
  * OpenVINO FP32 IR with the CPU plugin's default inference precision (no hint; bf16 where the CPU has it) and the
    same IR with INFERENCE_PRECISION_HINT=f32 (what edgekit runs for an fp32 artifact).
  * NNCF `nncf.quantize` with the model type/preset its docs recommend: MiniLM `model_type=TRANSFORMER`; PP-OCR
    (hardswish, negative activations) `preset=MIXED`; and `nncf.quantize_with_accuracy_control` with the same
    validation set as edgekit's search (eval feeds 0..31), the same metric and the same absolute max_drop.
  * onnx2tf -> LiteRT as onnx2tf's README tells a user: one `onnx2tf -i model.onnx -oiqt -cind ...` run (calibrated on
    the same 100 samples) in edgekit's pinned tool env with its ISA-independent settings (TF_ENABLE_ONEDNN_OPTS=0);
    rows: *_float32.tflite, *_integer_quant.tflite (INT8 compute, float I/O: what a CPU user feeding float images
    takes) and *_dynamic_range_quant.tflite; MiniLM (int64 token inputs, which -oiqt cannot calibrate) gets -odrqt.
    Timed with LiteRT's Interpreter (ai-edge-litert), num_threads=1, default XNNPACK delegate.
  * `edgekit deploy --precision auto --max-drop X` on x86-cpu: its pick and its wall time (--from-report: rows from
    CLI runs, e.g. `--precision auto` and `--precision int8`).

Fidelity: the zoo task metric vs the FP32 source on ONE held-out set (eval feeds from HELD_OUT_OFFSET on: never
calibration data, never the feeds any search or accuracy control selected with), with a 95 % bootstrap interval.
Timing (`time`, run under /work/bin/benchcore): 1 thread for every variant, all sessions open at once, >= 5 rounds,
each round times every variant once in a rotated order (warm-up, then >= --min-runs and >= --seconds); the figure is
the median of round medians, the spread the min-max of round medians. A lead is called only where spreads do not
overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("ppocr-det", "ppocr-rec", "minilm")
# The accuracy budget per model (max drop of the task score): det IoU >= 0.97, rec >= 99 % lines, MiniLM cosine >= 0.995.
MAX_DROP = {"ppocr-det": 0.03, "ppocr-rec": 0.01, "minilm": 0.005}
CALIB_N = 100
SEARCH_EVAL_N = 32  # edgekit's search scores on eval feeds 0..31: the validation set NNCF's accuracy control gets too
HELD_OUT_OFFSET = 64
HELD_OUT_N = {"ppocr-det": 100, "ppocr-rec": 200, "minilm": 200}
BUILD_THREADS = 2


# ---------------------------------------------------------------- helpers

def _zoo(name: str):
    from edgekit.zoo import models as zoo

    return zoo.resolve("zoo:" + name)


def _isa() -> str:
    """Optimum's AutoQuantizationConfig constructor for this CPU, chosen from the CPU flags as its docs describe."""
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "arm64"


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def _onnx_source(z, work: Path) -> Path:
    """The FP32 ONNX of a zoo model (PP-OCR ships ONNX; MiniLM is exported with the legacy exporter)."""
    art = z.artifact()
    if art.format == "onnx":
        return Path(art.path)
    import torch

    path = work / f"{z.name}.onnx"
    if not path.exists():
        torch.onnx.export(
            art.module, art.example_inputs, str(path), input_names=list(z.input_names), output_names=list(z.output_names),
            dynamic_axes={k: {0: "batch", 1: "seq"} for k in z.input_names}, opset_version=17, dynamo=False,
        )
    return path


def _opset17(src: Path, out: Path) -> Path:
    import onnx
    from onnx import version_converter

    m = onnx.load(str(src))
    if max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0) < 17:
        m = version_converter.convert_version(m, 17)
    onnx.save(m, str(out))
    return out


def _optimum(src: Path, work: Path, calib, dynamic: bool) -> Dict[str, Any]:
    """optimum.onnxruntime ORTQuantizer.quantize(AutoQuantizationConfig.<isa>(is_static=not dynamic, per_channel=False))
    reproduced argument for argument (optimum-onnx 0.1.0, optimum/onnxruntime/quantization.py + configuration.py)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantizationMode, QuantType
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    isa = _isa()
    # every AutoQuantizationConfig for x86: activations QUInt8; weights QInt8 except avx2 (QUInt8); reduce_range False
    wtype = QuantType.QUInt8 if isa == "avx2" else QuantType.QInt8
    ops = list(IntegerOpsRegistry.keys()) if dynamic else list(QDQRegistry.keys())
    ranges = None
    if not dynamic:
        cal = create_calibrator(str(src), op_types_to_calibrate=ops, calibrate_method=CalibrationMethod.MinMax,
                                augmented_model_path=str(work / "augmented_model.onnx"),
                                extra_options={"symmetric": False, "num_bins": None, "num_quantized_bins": None, "percentile": None,
                                               "moving_average": False, "averaging_constant": 0.01})
        cal.collect_data(_Reader(calib))
        ranges = cal.compute_data()
    model = onnx.load(str(src))
    has_sub = any(n.op_type in ("If", "Loop", "Scan", "SequenceMap") for n in model.graph.node)
    extra = {"WeightSymmetric": True, "ActivationSymmetric": False, "EnableSubgraph": has_sub, "ForceSymmetric": False,
             "AddQDQPairToWeight": False, "DedicatedQDQPair": False, "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}
    kw = dict(model=model, per_channel=False, reduce_range=False, weight_qType=wtype, activation_qType=QuantType.QUInt8,
              tensors_range=ranges, nodes_to_quantize=[], nodes_to_exclude=[], op_types_to_quantize=ops, extra_options=extra)
    if dynamic:
        q = ONNXQuantizer(mode=QuantizationMode.IntegerOps, static=False, **kw)
    else:
        q = QDQQuantizer(**kw)
    q.quantize_model()
    out = work / "model_quantized.onnx"
    q.model.save_model_to_file(str(out), False)
    fmt = "dynamic (QOperator, IntegerOps)" if dynamic else f"static {QuantFormat.QDQ.name}, MinMax calibration"
    return {"path": str(out), "format": "onnx", "precision": "int8", "runtime": "onnxruntime",
            "note": f"AutoQuantizationConfig.{isa}(is_static={not dynamic}, per_channel=False): {fmt}, {len(ops)} op types"}


def _ort_static_qdq(src: Path, work: Path, calib) -> Dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "pre.onnx"
    quant_pre_process(str(_opset17(src, work / "opset17.onnx")), str(pre), skip_symbolic_shape=True)
    out = work / "qdq.onnx"
    quantize_static(str(pre), str(out), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return {"path": str(out), "format": "onnx", "precision": "int8", "runtime": "onnxruntime",
            "note": "quant_pre_process + quantize_static QDQ, per-channel, U8S8, MinMax"}


def _ov_ir(src: Path, work: Path) -> Path:
    import openvino as ov

    xml = work / "model.xml"
    if not xml.exists():
        ov.save_model(ov.convert_model(str(src)), str(xml), compress_to_fp16=False)
    return xml


def _nncf_kwargs(name: str):
    import nncf

    if name == "minilm":
        return {"model_type": nncf.ModelType.TRANSFORMER}, "model_type=TRANSFORMER"
    return {"preset": nncf.QuantizationPreset.MIXED}, "preset=MIXED"


def _nncf(src: Path, work: Path, name: str, calib, z, evals=None, max_drop=None) -> Dict[str, Any]:
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(_ov_ir(src, work.parent / "ov")))
    kw, what = _nncf_kwargs(name)
    cal = nncf.Dataset(calib)
    if evals is None:
        q = nncf.quantize(model, cal, subset_size=len(calib), **kw)
        note = f"nncf.quantize({what}, subset_size={len(calib)})"
    else:
        ref = _fp32_outputs(z, evals)

        def validate(compiled, items):
            outs, refs = [], []
            for i, feed in items:
                res = compiled(feed)
                outs.append([np.asarray(res[o]) for o in compiled.outputs])
                refs.append(ref[i])
            per = [float(z.task_metric([r], [o])) for r, o in zip(refs, outs)]
            return float(z.task_metric(refs, outs)), per

        q = nncf.quantize_with_accuracy_control(model, cal, nncf.Dataset(list(enumerate(evals)), lambda it: it[1]), validate,
                                                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib), **kw)
        note = (f"nncf.quantize_with_accuracy_control({what}, max_drop={max_drop:g} absolute on {z.task_metric_name} vs FP32, "
                f"validation = eval feeds 0..{len(evals) - 1})")
    xml = work / "model.xml"
    ov.save_model(q, str(xml), compress_to_fp16=False)
    return {"path": str(xml), "format": "openvino", "precision": "int8", "runtime": "openvino", "note": note, "options": {}}


_FP32_CACHE: Dict[int, Any] = {}


def _fp32_outputs(z, feeds):
    from edgekit.quality import fidelity

    return fidelity.predict(z.artifact(), feeds, threads=BUILD_THREADS)


# onnx2tf -oiqt writes, from ONE conversion (its README, "INT8 Quantization"; per-channel by default):
# *_float32.tflite, *_float16.tflite, *_dynamic_range_quant.tflite (int8 weights, float activations),
# *_integer_quant.tflite (int8 weights + activations, float32 input/output), *_full_integer_quant.tflite (int8 I/O too)
# and the int16-activation pair. A CPU user who feeds float images takes *_integer_quant.tflite (full INT8 compute,
# no input/output quantization to write); *_full_integer_quant only adds int8 I/O for integer-only accelerators.
_LITERT_FILES = {"fp32": "_float32.tflite", "int8": "_integer_quant.tflite", "int8-dr": "_dynamic_range_quant.tflite"}
_LITERT_RUNS: Dict[str, Dict[str, Any]] = {}


def _litert(src: Path, work: Path, z, calib, which: str) -> Dict[str, Any]:
    """onnx2tf in edgekit's pinned tool env (its ISA-independent settings: TF_ENABLE_ONEDNN_OPTS=0, ...), the way its
    README tells a user: `onnx2tf -i model.onnx -oiqt -cind INPUT calib.npy MEAN STD` (calibration data NHWC; our
    feeds are already normalised, so MEAN 0 / STD 1), `-ois` for the dynamic dims. One conversion per model writes
    every precision; the rows share it (build s = that conversion). Models whose inputs are not float (MiniLM's token
    ids) cannot be calibrated by onnx2tf (-oiqt needs float inputs), so they get `-odrqt` (dynamic range) instead."""
    import shutil
    import subprocess

    from edgekit.converters import onnx2tf_env
    from edgekit.converters.tflite import SAMPLE_FILE, _channels_last, _sample_images, map_layout
    from edgekit.core.artifact import load_artifact

    run_dir = work.parent / "onnx2tf"
    out = run_dir / "out"
    art = load_artifact(src)
    float_inputs = all(str(t.dtype).startswith("float") for t in art.inputs)
    key = str(run_dir)
    if key not in _LITERT_RUNS:
        done = run_dir / "done.json"
        if done.exists():
            _LITERT_RUNS[key] = json.loads(done.read_text())
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            model_copy = run_dir / "model.onnx"  # onnx2tf rewrites its input in place
            shutil.copyfile(src, model_copy)
            np.save(run_dir / SAMPLE_FILE, _sample_images(art, calib))  # it downloads this file unless it is present
            args = ["-i", str(model_copy), "-o", str(out), "-v", "error"]
            dyn = {t.name: list(calib[0][t.name].shape) for t in art.inputs
                   if any(not isinstance(d, int) or d <= 0 for d in t.shape)}
            if dyn:
                args += ["-ois", *[f"{n}:{','.join(str(d) for d in s)}" for n, s in dyn.items()]]
            if float_inputs:
                args.append("-oiqt")
                for t in art.inputs:
                    data = np.concatenate([np.asarray(f[t.name], np.float32) for f in calib])
                    perm = _channels_last(data.ndim)
                    path = run_dir / f"calib_{len(calib)}.npy"
                    np.save(path, np.transpose(data, perm) if perm else data)
                    args += ["-cind", t.name, str(path), "[0.0]", "[1.0]"]
            else:
                args.append("-odrqt")
            python = onnx2tf_env.ensure_env()
            t0 = time.perf_counter()
            proc = subprocess.run([str(python), "-m", "onnx2tf", *args], cwd=str(run_dir), capture_output=True, text=True,
                                  timeout=3600, env=onnx2tf_env.tool_environment())
            wall = round(time.perf_counter() - t0, 1)
            log = (proc.stdout or "") + "\n" + (proc.stderr or "")
            (run_dir / "onnx2tf.log").write_text(log)
            for f in run_dir.glob("calib_*.npy"):
                f.unlink()
            res = {"args": ["onnx2tf", *[a.replace(str(run_dir) + "/", "") for a in args]], "wall_s": wall,
                   "returncode": proc.returncode, "version": onnx2tf_env.ONNX2TF_VERSION}
            if proc.returncode != 0:
                sig = onnx2tf_env.killed_by(proc.returncode)
                errs = [ln.strip() for ln in log.splitlines() if "Error" in ln or "ERROR" in ln]
                res["error"] = f"onnx2tf {onnx2tf_env.ONNX2TF_VERSION} " + (f"killed by {sig}" if sig else f"exit {proc.returncode}") + \
                    (": " + errs[-1][:300] if errs else "")
            shutil.rmtree(out / "variables", ignore_errors=True)
            done.write_text(json.dumps(res, indent=1))
            _LITERT_RUNS[key] = res
    res = _LITERT_RUNS[key]
    if which == "int8" and not float_inputs:
        raise RuntimeError("not built: onnx2tf -oiqt calibrates float inputs only; this model's inputs are "
                           + ", ".join(f"{t.name} {t.dtype}" for t in art.inputs))
    if res.get("error"):
        import re

        node = re.findall(r"onnx_op_name: (\S+)", (run_dir / "onnx2tf.log").read_text()) if (run_dir / "onnx2tf.log").exists() else []
        raise RuntimeError(f"conversion failed{' at ' + node[-1] if node else ''}: {res['error']}")
    path = out / ("model" + _LITERT_FILES[which])
    if not path.exists():
        raise RuntimeError(f"conversion failed: onnx2tf wrote no {path.name} (log {run_dir / 'onnx2tf.log'})")
    # the layout map (names, NHWC) is checked by output cosine vs ONNX on a sample; the quantized files name their
    # inputs differently (serving_default_x:0) but share the FP32 file's layout, which is the fallback should a
    # quantized file's outputs be too far off for the check (its score below then says how far)
    from edgekit.core.errors import StepError

    try:
        meta = map_layout(art, path, calib[0])
    except StepError:
        from ai_edge_litert.interpreter import Interpreter

        meta = map_layout(art, out / ("model" + _LITERT_FILES["fp32"]), calib[0])
        names = [d["name"] for d in Interpreter(model_path=str(path)).get_input_details()]
        bare = {n.replace("serving_default_", "").split(":")[0]: n for n in names}
        remap = {v: bare.get(v.replace("serving_default_", "").split(":")[0], v) for v in meta["input_name_map"].values()}
        meta["input_name_map"] = {k: remap[v] for k, v in meta["input_name_map"].items()}
        meta["feed_transpose"] = {remap.get(k, k): p for k, p in meta["feed_transpose"].items()}
    what = {"fp32": "FP32", "int8": "INT8 (integer_quant: int8 weights + activations, float I/O, per-channel)",
            "int8-dr": "dynamic-range INT8 (int8 weights, float activations)"}[which]
    return {"path": str(path), "format": "tflite", "precision": "fp32" if which == "fp32" else "int8", "runtime": "tflite",
            "metadata": meta, "options": {}, "wall_s": res["wall_s"],
            "note": f"{path.name} of one `{' '.join(res['args'])}` run (onnx2tf {res['version']}, edgekit's tool env, "
                    f"TF_ENABLE_ONEDNN_OPTS=0; {res['wall_s']:.0f} s shared by the LiteRT rows); {what}; LiteRT Interpreter, "
                    "num_threads=1, default XNNPACK delegate"}


def _report_label(path: Path, md: float) -> str:
    """'edgekit deploy --precision P --max-drop X' from a report.json (the --precision its command line asked for)."""
    try:
        rep = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"edgekit deploy (report {path} unreadable)"
    import re

    m = re.search(r"--precision[= ](\S+)", rep.get("command") or "")
    req = m.group(1) if m else rep.get("precision")
    return f"edgekit deploy --precision {req} --max-drop {md:g}"


def _from_report(path: Path, wall_s: float) -> Dict[str, Any]:
    """edgekit's row from the report.json of an `edgekit deploy --precision auto` run made from the CLI (its measured
    wall time given), instead of running the same search a second time."""
    rep = json.loads(path.read_text())
    a = rep["artifact"]
    return {"path": a["path"], "format": a["format"], "precision": rep["precision"], "runtime": rep["runtime"],
            "metadata": a.get("metadata") or {}, "options": "edgekit", "note": f"picked {rep['runtime']} {rep['precision']}; "
            f"`{rep.get('command') or 'edgekit deploy'}`, {wall_s:.0f} s wall", "search": rep.get("variants") or [],
            "wall_s": wall_s}


def _deploy(z, work: Path, max_drop: float) -> Dict[str, Any]:
    from edgekit.workflows.deploy import deploy

    # a fresh cache, so build_s is the search's real wall time
    rep = deploy(z.spec, "x86-cpu", out=work / "out", cache_dir=work / "cache", run_benchmark=False, shapes=dict(z.default_shapes), precision="auto",
                 max_drop=max_drop, progress=lambda m: print(f"    {time.strftime('%H:%M:%S')} {m}", flush=True))
    a = rep.artifact
    rt = rep.runtime
    variants = [v if isinstance(v, dict) else v.model_dump() for v in (rep.variants or [])]
    return {"path": a.get("path"), "format": a.get("format"), "precision": rep.precision, "runtime": rt, "metadata": a.get("metadata") or {},
            "options": "edgekit", "note": f"picked {rt} {rep.precision}", "search": variants}


# ---------------------------------------------------------------- sessions (same adapters as edgekit's harness)

def _session(entry: Dict[str, Any], threads: int):
    """(bound one-inference callable factory, predict(feed) -> outputs, compiled facts) for a built variant."""
    from edgekit.core.artifact import load_artifact
    from edgekit.core.registry import harness_module
    from edgekit.core.runtimes import runtime_options_for
    from edgekit.quality.fidelity import _from_model_outputs, _to_model_feed

    if entry["format"] == "pytorch":
        import torch

        torch.set_num_threads(threads)
        z = _zoo(entry["model"])
        mod = z.artifact().module

        def pt_feed(feed):
            return [torch.from_numpy(feed[k]) for k in z.input_names]

        def pt_predict(feed):
            with torch.no_grad():
                out = mod(*pt_feed(feed))
            outs = out if isinstance(out, (list, tuple)) else [out]
            return [o.numpy() for o in outs]

        def pt_bind(feed):
            args = pt_feed(feed)

            def run():
                with torch.no_grad():
                    mod(*args)
            return run
        return pt_bind, pt_predict, {"torch_threads": torch.get_num_threads()}
    art = load_artifact(entry["path"], format=entry["format"], metadata=entry.get("metadata") or {})
    opts = entry.get("options")
    if opts == "edgekit" or opts is None:
        opts = runtime_options_for(entry["runtime"], entry["precision"])
    sess = harness_module("adapters").open_session(entry["runtime"], str(art.path), threads, opts)
    facts = dict(sess.options.get("compiled") or {})

    def predict(feed):
        return _from_model_outputs(art, [np.asarray(o) for o in sess.run(_to_model_feed(art, feed))])

    def bind(feed):
        fn = sess.bind(_to_model_feed(art, feed))
        facts["timed_region"] = sess.options.get("timed_region")  # what the adapter's timed call contains, as it says
        return fn

    return bind, predict, facts


def _bootstrap(metric, ref, new, n=500, seed=0):
    rng = np.random.default_rng(seed)
    k = len(ref)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, k, k)
        vals.append(float(metric([ref[i] for i in idx], [new[i] for i in idx])))
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


# ---------------------------------------------------------------- build

def build(models: List[str], work_root: Path, with_tflite: bool, with_edgekit: bool, only: Optional[str],
          from_report: Optional[Dict[str, List[tuple]]] = None) -> None:
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    manifest_path = work_root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"rows": []}
    done = {(r["model"], r["key"]) for r in manifest["rows"] if "error" not in r}
    for name in models:
        z = _zoo(name)
        shapes = dict(z.default_shapes)
        work = work_root / name
        work.mkdir(parents=True, exist_ok=True)
        src = _onnx_source(z, work)
        calib = z.calib_feeds(CALIB_N, shapes=shapes)
        search_evals = z.eval_feeds(SEARCH_EVAL_N, shapes=shapes)
        n = HELD_OUT_N[name]
        held = z.eval_feeds(HELD_OUT_OFFSET + n, shapes=shapes)[HELD_OUT_OFFSET:]
        ref = _fp32_outputs(z, held)
        md = MAX_DROP[name]
        ir = lambda: _ov_ir(src, work / "ov")  # noqa: E731
        isa = _isa()
        plan: List[tuple] = []
        if z.artifact().format == "pytorch":
            plan.append(("pt", "PyTorch eager FP32", lambda w: {"path": None, "format": "pytorch", "precision": "fp32", "runtime": "torch", "note": "the zoo's nn.Module"}))
        plan += [
            ("ort32", "ORT FP32", lambda w: {"path": str(src), "format": "onnx", "precision": "fp32", "runtime": "onnxruntime", "note": "the FP32 ONNX"}),
            ("optimum", f"Optimum avx512_vnni-style INT8 ({'dynamic' if name == 'minilm' else 'static QDQ'})".replace("avx512_vnni", isa),
             lambda w: _optimum(src, w, calib, dynamic=name == "minilm")),
            ("ortqdq", "ORT static QDQ INT8 (per-channel)", lambda w: _ort_static_qdq(src, w, calib)),
            ("ov32", "OpenVINO FP32 IR, default inference precision", lambda w: {"path": str(ir()), "format": "openvino", "precision": "fp32", "runtime": "openvino", "options": {}, "note": "no INFERENCE_PRECISION_HINT"}),
            ("ov32f", "OpenVINO FP32 IR, f32 hint", lambda w: {"path": str(ir()), "format": "openvino", "precision": "fp32", "runtime": "openvino", "options": {"inference_precision_hint": "f32"}, "note": "INFERENCE_PRECISION_HINT=f32"}),
            ("nncf", f"NNCF INT8 ({_nncf_kwargs(name)[1]})", lambda w: _nncf(src, w, name, calib, z)),
            ("nncfac", f"NNCF INT8 accuracy control ({_nncf_kwargs(name)[1]}, max_drop {md:g})", lambda w: _nncf(src, w, name, calib, z, search_evals, md)),
        ]
        if with_tflite:
            plan += [
                ("tfl32", "onnx2tf → LiteRT FP32", lambda w: _litert(src, w, z, calib, "fp32")),
                ("tfl8", "onnx2tf → LiteRT INT8 (-oiqt integer_quant)", lambda w: _litert(src, w, z, calib, "int8")),
                ("tfldr", "onnx2tf → LiteRT dynamic-range INT8", lambda w: _litert(src, w, z, calib, "int8-dr")),
            ]
        if with_edgekit:
            frs = (from_report or {}).get(name) or []
            if not frs:
                plan.append(("edgekit", f"edgekit deploy --precision auto --max-drop {md:g}", lambda w: _deploy(z, w, md)))
            for k, (rpath, wall) in enumerate(frs):  # the first report is edgekit's pick ("edgekit"), more are extra rows
                plan.append(("edgekit" if k == 0 else f"edgekit{k + 1}", _report_label(Path(rpath), md),
                             lambda w, rpath=rpath, wall=wall: _from_report(Path(rpath), float(wall))))
        for key, label, make in plan:
            if (name, key) in done or (only and key not in only.split(",")):
                continue
            manifest["rows"] = [r for r in manifest["rows"] if not (r["model"] == name and r["key"] == key)]
            row: Dict[str, Any] = {"model": name, "key": key, "variant": label, "max_drop": md, "held_out": n}
            print(f"{time.strftime('%H:%M:%S')} {name}: building {label}", flush=True)
            try:
                w = work / key
                w.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                row.update(make(w))
                row["build_s"] = row.pop("wall_s", None) or round(time.perf_counter() - t0, 1)
                row["model"] = name
                if key.startswith("edgekit"):
                    row["variant"] = f"{label} → {row['runtime']} {row['precision']}"
                _, predict, facts = _session(row, BUILD_THREADS)
                row["compiled"] = facts
                new = [predict(f) for f in held]
                row["score"] = float(z.task_metric(ref, new))
                row["ci"] = _bootstrap(z.task_metric, ref, new)
                row["meets"] = row["score"] >= 1.0 - md - 1e-9
                if row.get("path"):
                    p = Path(row["path"])
                    files = [p] + ([p.with_suffix(".bin")] if p.suffix == ".xml" else [])
                    row["size_mb"] = round(sum(f.stat().st_size for f in files if f.exists()) / 1e6, 2)
            except Exception as exc:  # a peer that fails is a result too: record it and go on
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:400] if str(exc) else ''}"
                traceback.print_exc()
            print(json.dumps({k: v for k, v in row.items() if k not in ("search", "metadata")}, default=str), flush=True)
            manifest["rows"].append(row)
            manifest_path.write_text(json.dumps(manifest, indent=1, default=str))


# ---------------------------------------------------------------- time (under benchcore)

def time_rows(models: List[str], work_root: Path, rounds: int, min_runs: int, seconds: float) -> None:
    from edgekit.core.registry import harness_module
    from machine import describe

    bench = harness_module("bench")
    manifest = json.loads((work_root / "manifest.json").read_text())
    timing_path = work_root / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    for name in models:
        z = _zoo(name)
        feed = z.eval_feeds(HELD_OUT_OFFSET + 1, shapes=dict(z.default_shapes))[HELD_OUT_OFFSET]
        rows = [r for r in manifest["rows"] if r["model"] == name and "error" not in r]
        fns = []
        for r in rows:
            bind, _, facts = _session(r, 1)
            fns.append(bind(feed))
            timing.setdefault(name, {}).setdefault("compiled", {})[r["key"]] = facts
        per: Dict[str, List[float]] = {r["key"]: [] for r in rows}
        t0 = time.time()
        for k in range(rounds):
            order = list(range(len(rows)))
            order = order[k % len(order):] + order[:k % len(order)]  # rotate: no variant always runs first
            for i in order:
                t = bench.time_callable(fns[i], warmup_runs=3, warmup_seconds=0.2, min_runs=min_runs, min_seconds=seconds)
                per[rows[i]["key"]].append(t["median_ms"])
            print(f"{time.strftime('%H:%M:%S')} {name}: round {k + 1}/{rounds} done", flush=True)
        timing[name].update({"rounds": per, "machine": describe(), "python": sys.version.split()[0], "threads": 1,
                             "benchcore": os.environ.get("EDGEKIT_BENCHCORE") == "1", "rounds_n": rounds, "min_runs": min_runs,
                             "seconds": seconds, "wall_s": round(time.time() - t0, 1), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                             "affinity": sorted(os.sched_getaffinity(0))})
        timing_path.write_text(json.dumps(timing, indent=1))


# ---------------------------------------------------------------- report

def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def verdict(rows: List[Dict[str, Any]], per: Dict[str, List[float]]) -> str:
    """edgekit's pick against every row that meets the budget: a lead/loss only where the round spreads do not overlap."""
    pick = next((r for r in rows if r["key"] == "edgekit" and "error" not in r), None)
    if pick is None or pick["key"] not in per:
        return "edgekit's pick was not built or not timed (see Failures)."
    if not pick.get("meets"):
        return f"edgekit's pick scores {pick['score']:.4f} on the held-out set, outside the budget (>= {1 - pick['max_drop']:.3f})."
    lo, hi = min(per[pick["key"]]), max(per[pick["key"]])
    faster, ties, slower = [], [], []
    for r in rows:
        if r is pick or not r.get("meets") or r["key"] not in per:
            continue
        rlo, rhi = min(per[r["key"]]), max(per[r["key"]])
        med = float(np.median(per[r["key"]]))
        (faster if rhi < lo else slower if rlo > hi else ties).append(f"{r['variant']} ({med:.1f} ms)")
    pm = float(np.median(per[pick["key"]]))
    out = f"edgekit's pick: {pm:.1f} ms [{lo:.1f}–{hi:.1f}] at {pick['score']:.4f}. "
    if faster:
        out += "**Faster within budget, spreads apart:** " + ", ".join(faster) + ". "
    if ties:
        out += "Overlapping spreads (no lead either way): " + ", ".join(ties) + ". "
    if slower:
        out += "Slower, spreads apart: " + ", ".join(slower) + "."
    return out.strip()


def report(models: List[str], work_root: Path, out: Path, extra: Optional[Path] = None) -> None:
    manifest = json.loads((work_root / "manifest.json").read_text())
    timing = json.loads((work_root / "timing.json").read_text())
    machine = next((t["machine"] for t in timing.values() if "machine" in t), "?")
    lines = [
        "# Peer comparison (generated by benchmarks/peers.py)",
        "",
        f"Machine: {machine}. Timing: `/work/bin/benchcore` (a reserved core, every other process fenced onto the other one), "
        "**1 thread for every variant** (ORT intra-op 1, OpenVINO INFERENCE_NUM_THREADS 1, LiteRT num_threads 1, torch 1), "
        "all sessions open together, interleaved rounds in rotated order; each round: 3 warm-up calls, then >= min-runs and "
        ">= seconds; **ms = median of the round medians, [min–max] of the round medians**. The timed call is the harness "
        "adapters' bound inference, the same region edgekit's benchmark times; each adapter's own words:",
        "",
    ]
    regions = sorted({str(c.get("timed_region")) for t in timing.values() for c in (t.get("compiled") or {}).values()
                      if c.get("timed_region")})
    lines += [f"- {r}" for r in regions] + ([""] if regions else [])
    lines += [
        "Fidelity: the zoo task metric vs the FP32 source on ONE held-out set per model (eval feeds "
        f"{HELD_OUT_OFFSET}..{HELD_OUT_OFFSET}+n: never calibration data, and not the eval feeds 0..{SEARCH_EVAL_N - 1} that "
        "edgekit's search and NNCF's accuracy control select with), with a 95 % bootstrap interval (500 resamples). Every peer "
        f"calibrates on the same {CALIB_N} calibration samples. 'meets' = score >= 1 - budget "
        f"({', '.join(f'{m} {d:g}' for m, d in MAX_DROP.items())}).",
        "",
    ]
    for name in models:
        rows = [r for r in manifest["rows"] if r["model"] == name]
        t = timing.get(name, {})
        per = t.get("rounds", {})
        if not rows:
            continue
        z = _zoo(name)
        lines += [f"## {name} ({z.task_metric_name}, budget drop ≤ {MAX_DROP[name]:g}, n = {rows[0]['held_out']} held-out samples)", ""]
        if t:
            lines += [f"{t['rounds_n']} rounds, >= {t['min_runs']} runs and >= {t['seconds']} s per variant per round; "
                      f"{t['when']}; CPU affinity {t['affinity']}, benchcore={t['benchcore']}.", ""]
        lines += ["| variant | ms (median of rounds) | [min–max] | score | 95 % interval | meets | size MB | build s | inference precision |",
                  "|---|---:|---|---:|---|:-:|---:|---:|---|"]
        for r in rows:
            if "error" in r:
                what = "not built" if ": not built" in r["error"] else "failed"
                lines.append(f"| {r['variant']} | {what} (see below) | | | | | | {r.get('build_s', '')} | |")
                continue
            p = per.get(r["key"])
            ms = f"{np.median(p):.2f}" if p else "not timed"
            spread = f"{min(p):.2f}–{max(p):.2f}" if p else ""
            comp = str((t.get("compiled", {}).get(r["key"]) or r.get("compiled") or {}).get("INFERENCE_PRECISION_HINT") or "")
            comp = comp.replace("<Type: '", "").replace("'>", "")
            lines.append(f"| {r['variant']} | {ms} | {spread} | {r['score']:.4f} | {_fmt_ci(r['ci'])} | {'yes' if r['meets'] else 'no'} | "
                         f"{'' if r.get('size_mb') is None else r['size_mb']} | {r.get('build_s', '')} | {comp} |")
        lines += ["", "**Verdict:** " + verdict(rows, per), "", "What each row is:", ""]
        lines += [f"- {r['variant']}: {r.get('note', '')}" for r in rows if "error" not in r]
        errs = [r for r in rows if "error" in r]
        if errs:
            lines += ["", "Failed or not built:", ""] + [f"- {r['variant']}: `{r['error']}`" for r in errs]
        pick = next((r for r in rows if r["key"] == "edgekit" and r.get("search")), None)
        if pick:
            lines += ["", f"edgekit's search (`deploy --precision auto`, {pick.get('build_s')} s wall; its quick benchmarks are 2-thread "
                      "and on search eval feeds 0..31, not the figures above):", "",
                      "| runtime | precision | status | score | quick ms | reason |", "|---|---|---|---:|---:|---|"]
            for v in pick["search"]:
                sc = "" if v.get("score") is None else f"{v['score']:.4f}"
                med = "" if v.get("median_ms") is None else f"{v['median_ms']:.1f}"
                reason = (v.get("reason") or "").replace("|", "\\|")[:160]
                lines.append(f"| {v['runtime']} | {v['precision']}{' ' + v['method'] if v.get('method') else ''} | {v['status']} | {sc} | {med} | {reason} |")
        notes = work_root / f"notes-{name}.md"  # measurements and remarks about this model taken outside this script
        if notes.exists():
            lines += ["", notes.read_text().rstrip()]
        lines.append("")
    if extra is not None and extra.exists():
        lines += [extra.read_text()]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=["build", "time", "report"])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--work", default="/tmp/edgekit-peers")
    ap.add_argument("--only", default=None, help="build only these variant keys (comma-separated)")
    ap.add_argument("--no-tflite", action="store_true", help="skip onnx2tf (minutes per model on 2 cores)")
    ap.add_argument("--no-edgekit", action="store_true", help="build the peers only")
    ap.add_argument("--from-report", action="append", default=[], metavar="MODEL=REPORT.json:WALL_S",
                    help="build: edgekit's row from a CLI `deploy` run (its report.json and measured wall time); repeat for more "
                         "rows of one model (the first is the pick the verdict judges)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-runs", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--out", default=str(Path(__file__).with_name("PEERS.md")))
    ap.add_argument("--extra", default=None, help="report: append this Markdown file (measurements taken outside this script)")
    a = ap.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.phase == "build":
        fr: Dict[str, List[tuple]] = {}
        for x in a.from_report:
            fr.setdefault(x.split('=', 1)[0], []).append(tuple(x.split('=', 1)[1].rsplit(':', 1)))
        build(models, work, not a.no_tflite, not a.no_edgekit, a.only, fr)
    elif a.phase == "time":
        time_rows(models, work, max(5, a.rounds), a.min_runs, a.seconds)
    else:
        report(models, work, Path(a.out), Path(a.extra) if a.extra else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
