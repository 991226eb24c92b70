"""TFLite step: ONNX -> .tflite through onnx2tf, run as a subprocess in its own pinned env (see onnx2tf_env).

onnx2tf writes NHWC models and may rename/reorder inputs and outputs; the step maps them back to the source
model by shape and checks the mapping numerically on a sample, recording it in the artifact metadata
(input_name_map, feed_transpose, output_order, output_transpose) for edgekit.quality.fidelity and the harness.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

from pydantic import Field, model_validator

from edgekit.core.artifact import Artifact, LineageEntry, load_artifact
from edgekit.core.errors import CalibrationError, StepError, require
from edgekit.core.fsutil import atomic_copy, atomic_write_text
from edgekit.core.steps import Step, StepConfig, StepContext, lossy_budget_default

# onnx2tf output file suffix per precision
_SUFFIX = {
    "fp32": "_float32.tflite",
    "fp16": "_float16.tflite",
    "int8-dynamic": "_dynamic_range_quant.tflite",
    "int8": "_integer_quant.tflite",  # int8 weights+activations, float32 IO
}
_PRECISION_TAG = {"fp32": "fp32", "fp16": "fp16", "int8-dynamic": "int8", "int8": "int8"}
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"  # onnx2tf downloads this unless it is in cwd


class TfliteConfig(StepConfig):
    """precision: fp32, fp16 (weights), int8-dynamic (weights, dynamic-range), int8 (calibrated; full_integer_io for int8 IO)."""

    precision: Literal["fp32", "fp16", "int8-dynamic", "int8"] = "fp32"
    calib_samples: int = Field(default=50, gt=0)
    full_integer_io: bool = Field(default=False, description="int8 only: int8 inputs/outputs too (else float32 IO)")
    input_shapes: Dict[str, List[int]] = Field(default_factory=dict, description="fix dynamic input dims (source layout)")
    timeout_s: float = Field(default=1800.0, gt=0)
    per_tensor: bool = False
    extra_args: List[str] = Field(default_factory=list, description="more onnx2tf arguments")
    max_drop: Optional[float] = Field(default=None, ge=0.0, lt=1.0, description="int8/int8-dynamic: accuracy budget on the task metric (checked after conversion)")
    share_with: List[Literal["fp32", "fp16", "int8-dynamic", "int8"]] = Field(
        default_factory=list,
        description="precisions the same onnx2tf run also writes (kept in the cache), so later TFLite steps reuse the run; the variant search sets it",
    )

    @model_validator(mode="before")
    @classmethod
    def _int8_fidelity_default(cls, data: Any) -> Any:
        return lossy_budget_default(data, isinstance(data, dict) and str(data.get("precision", "")).startswith("int8"))


class TfliteStep(Step):
    name = "tflite"
    summary = "ONNX -> TFLite/LiteRT (fp32, fp16, dynamic-range int8, calibrated int8) via onnx2tf in an isolated env"
    accepts = ("onnx",)
    produces = "tflite"
    Config = TfliteConfig
    requires = (("ai_edge_litert", "tflite"),)

    @classmethod
    def availability(cls) -> Tuple[bool, str]:
        from edgekit.converters import onnx2tf_env

        st = onnx2tf_env.status(measure_size=False)
        if st.ready:
            return True, f"onnx2tf env ready at {st.path} ({st.detail})"
        return True, f"onnx2tf env {st.detail} [{st.path}]"

    @classmethod
    def tool_versions(cls) -> Dict[str, str]:
        from edgekit.converters import onnx2tf_env

        return {**super().tool_versions(), "onnx2tf": onnx2tf_env.ONNX2TF_VERSION}

    def run(self, artifact: Artifact, config: StepConfig, ctx: StepContext) -> Artifact:
        from edgekit.converters import onnx2tf_env

        cfg = config if isinstance(config, TfliteConfig) else TfliteConfig.model_validate(config.model_dump())
        if cfg.precision == "int8" and ctx.calib_data is None:
            raise CalibrationError(
                "step 'tflite': calibrated INT8 needs calibration data, and none was given",
                hint="pass --calib DIR (images or .npz/.npy feeds), or use --precision int8-dynamic (no calibration needed)",
            )
        work = Path(ctx.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        feeds = ctx.calib_data(cfg.calib_samples) if ctx.calib_data is not None else []
        shapes = _concrete_shapes(artifact, cfg, feeds)
        calibrated = bool(feeds)
        if not feeds:
            feeds = [_random_feed(artifact, shapes, seed=0)]
            ctx.note("tflite: no calibration data; onnx2tf's own check runs on random inputs (no download)")
        conv = Onnx2tfRun(artifact, cfg, shapes, feeds, calibrated)
        out_path = conv.serve(work, ctx)
        layout = map_layout(artifact, out_path, feeds[0])
        prec = _PRECISION_TAG[cfg.precision]
        art = load_artifact(out_path, format="tflite", precision=prec, lineage=list(artifact.lineage), metadata={**layout, "onnx2tf_precision": cfg.precision})
        notes = [f"onnx2tf {onnx2tf_env.ONNX2TF_VERSION}: {cfg.precision}", conv.how, f"layout map verified on a sample (min cosine {layout['layout_check_cosine']:.4f})"]
        entry = LineageEntry(step="tflite", config=cfg.model_dump(mode="json"), tools=self.tool_versions(), notes=notes, source_sha256=artifact.sha256)
        return art.with_lineage(entry)


# ------------------------------------------------------------------------------------------ one onnx2tf run, shared

# What one onnx2tf run writes depends on its flags ("mode"): float32 and float16 always; -odrqt adds dynamic-range
# INT8; -oiqt (calibrated) adds dynamic-range and integer INT8, and the full-integer (int8 IO) model when a step asks for
# it (the int16-activation models -oiqt would also build are never used: onnx2tf_env.SKIPPABLE). The float16 model is
# written only when fp16 is the step's precision or in its share_with.
MODES = ("plain", "drq", "iq")
_SERVED_BY = {"fp32": ("iq", "drq", "plain"), "fp16": ("iq", "drq", "plain"), "int8-dynamic": ("iq", "drq"), "int8": ("iq",)}
SHARE_LAYOUT = 1  # bump when what goes into a shared run's key, or which files it keeps, changes
KEEP_SUFFIXES = (".tflite", ".log", ".npy")  # what a shared run keeps: the models, onnx2tf's log, its sample file


class Onnx2tfRun:
    """One onnx2tf conversion of one model (fixed shapes, calibration data, flags) shared by the fp32/fp16/INT8 steps.

    Its outputs are one cache entry beside the step entries (<cache>/<2 hex>/<key>, files.json), keyed by everything
    onnx2tf reads (model bytes, fixed shapes, calibration and sample data, flags, onnx2tf version, the ISA-independent
    env) and the mode; every file has its sha256, and a step checks the COPY it takes out (a damaged entry is
    discarded and converted again). `share_with` makes the run write the precisions later steps need too (the variant
    search sets it), so fp32, fp16 and INT8 TFLite variants cost one onnx2tf run.

    When calibration data is given it reaches onnx2tf (-cind) in every mode, not only for INT8: onnx2tf's own dummy
    inference then runs on the same data whatever the run also writes, so a float32 model is the same conversion
    whichever mode's run made it."""

    def __init__(self, artifact: Artifact, cfg: TfliteConfig, shapes: Dict[str, List[int]], feeds: List[Dict[str, Any]], calibrated: bool):
        self.artifact = artifact
        self.cfg = cfg
        self.calibrated = calibrated
        self.dyn = {n: s for n, s in shapes.items() if _is_dynamic(_spec(artifact, n).shape)}
        self.sample = _sample_images(artifact, feeds)
        self.calib = {spec.name: _calib_array(feeds, spec.name) for spec in artifact.inputs} if calibrated else {}
        # -cind outside INT8 only for float32 inputs (onnx2tf feeds -cind data as float32)
        self.cind_always = calibrated and all(t.dtype == "float32" for t in artifact.inputs)
        self.how = ""

    # ---- identity
    def mode(self) -> str:
        """The mode this step runs onnx2tf in when no shared run serves it: the least that writes every wanted file."""
        want = {self.cfg.precision, *self.cfg.share_with}
        if "int8" in want and self.calibrated:
            return "iq"
        return "drq" if want & {"int8", "int8-dynamic"} else "plain"

    def full_integer(self) -> bool:
        """Whether an iq run of this step writes the full-integer (int8 IO) model too (only when it is asked for)."""
        return self.cfg.precision == "int8" and self.cfg.full_integer_io

    def float16(self) -> bool:
        """Whether this step's run writes the float16 model (only when fp16 is its precision or in share_with)."""
        return "fp16" in {self.cfg.precision, *self.cfg.share_with}

    def serving(self) -> List[Tuple[str, bool, bool]]:
        """(mode, full_integer, float16) of every run that wrote this step's file, this step's own run first."""
        p = self.cfg.precision
        modes = [m for m in _SERVED_BY[p] if (m != "iq" or self.calibrated)]
        if p == "int8-dynamic" and self.cfg.per_tensor:
            modes = [m for m in modes if m != "iq"]  # -qt per-tensor changes -oiqt's dynamic-range model too
        fulls = (True,) if self.full_integer() else (False, True)
        halves = (True,) if p == "fp16" else (True, False)
        runs = [(m, f, h) for m in modes for f in (fulls if m == "iq" else (False,)) for h in halves]
        own = (self.mode(), self.full_integer() and self.mode() == "iq", self.float16())
        return [own] + [r for r in runs if r != own]

    def _digest(self, a) -> str:
        import hashlib

        import numpy as np

        memo = self.__dict__.setdefault("_digests", {})
        if id(a) not in memo:  # the arrays live as long as this object: id() is stable
            c = np.ascontiguousarray(a)
            memo[id(a)] = hashlib.sha256(f"{c.dtype}{c.shape}".encode() + c.tobytes()).hexdigest()
        return memo[id(a)]

    def key(self, mode: str, full_integer: bool = False, float16: bool = True) -> str:
        import hashlib
        import json

        from edgekit.converters import onnx2tf_env

        uses_calib = mode == "iq" or self.cind_always
        payload = {
            "kind": "onnx2tf-run", "layout": SHARE_LAYOUT, "onnx2tf": onnx2tf_env.ONNX2TF_VERSION, "env": onnx2tf_env.ISA_INDEPENDENT_ENV,
            "source": self.artifact.sha256, "ois": self.dyn, "extra_args": list(self.cfg.extra_args), "mode": mode,
            "per_tensor": self.cfg.per_tensor if mode == "iq" else None, "full_integer": full_integer if mode == "iq" else None,
            "float16": float16, "sample": self._digest(self.sample),
            "calib": {n: self._digest(a) for n, a in sorted(self.calib.items())} if uses_calib else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def wanted(self) -> str:
        suffix = "_full_integer_quant.tflite" if self.cfg.precision == "int8" and self.cfg.full_integer_io else _SUFFIX[self.cfg.precision]
        return f"out/model{suffix}"

    # ---- serve
    def serve(self, work: Path, ctx: StepContext) -> Path:
        """work/model.tflite for this step's precision: from a verified shared run, else from a new onnx2tf run."""
        from edgekit.core import cache

        dest = work / "model.tflite"
        wanted = self.wanted()
        cache_dir = Path(ctx.cache_dir) if getattr(ctx, "cache_dir", None) is not None else None
        if cache_dir is not None:
            for mode, full, half in self.serving():
                entry = _entry(cache_dir, self.key(mode, full, half))
                try:
                    found = cache.load_files(entry)
                    if found is None or wanted not in found[0]:
                        continue  # no such run, or it ran but could not write this precision
                    cache.copy_verified(entry, found[0], wanted, dest)
                except cache.Damaged as bad:
                    ctx.note(f"tflite: the shared onnx2tf run {entry.name[:12]}… was damaged ({bad.reason}) and is converted again")
                    cache.discard(entry)
                    continue
                self.how = f"onnx2tf run shared: {Path(wanted).name} taken from a cached {mode} conversion {entry.name[:12]}… (sha256-checked)"
                ctx.note(f"tflite: {self.how}")
                return dest
        mode = self.mode()
        try:
            produced = self._convert(mode, work, ctx, cache_dir)
        except StepError:
            minimal = Onnx2tfRun.__new__(Onnx2tfRun)
            minimal.__dict__.update(self.__dict__)
            minimal.cfg = self.cfg.model_copy(update={"share_with": []})
            if not self.cfg.share_with or minimal.mode() == mode:
                raise
            # the extra precisions broke the run: this step's own precision may still convert on its own
            ctx.note(f"tflite: the shared {mode} onnx2tf run failed; converting {self.cfg.precision} alone ({minimal.mode()})")
            mode = minimal.mode()
            produced = minimal._convert(mode, work, ctx, cache_dir)
        root, files = produced
        if wanted not in files:
            raise StepError("tflite", f"onnx2tf finished without writing {Path(wanted).name} for {self.artifact.path.name}",
                            hint="its log names the failed stage (e.g. a quantization the model does not support); try another precision")
        if cache_dir is None:
            atomic_copy(root / wanted, dest)
        else:
            try:
                cache.copy_verified(root, files, wanted, dest)
            except cache.Damaged as bad:
                raise StepError("tflite", f"the onnx2tf output just written to the cache {root} does not read back ({bad.reason})",
                                hint="check the disk (free space, errors in dmesg) or pass --cache-dir elsewhere") from None
        self.how = f"onnx2tf run ({mode}) " + ("kept in the cache for the other precisions" if cache_dir is not None else "not shared (no cache dir)")
        return dest

    def _args(self, mode: str, run_dir: Path, model_copy: Path) -> List[str]:
        import numpy as np

        np.save(run_dir / SAMPLE_FILE, self.sample)
        args = ["-i", str(model_copy), "-o", str(run_dir / "out"), "-v", "error"]
        if self.dyn:
            args += ["-ois", *[f"{n}:{','.join(str(d) for d in s)}" for n, s in self.dyn.items()]]
        if mode == "drq":
            args.append("-odrqt")
        if mode == "iq":
            args.append("-oiqt")
            if self.cfg.per_tensor:
                args += ["-qt", "per-tensor"]
        if mode == "iq" or self.cind_always:
            for name, data in self.calib.items():
                path = run_dir / f"calib_{_safe(name)}.npy"
                np.save(path, data)
                args += ["-cind", name, str(path), "[0.0]", "[1.0]"]  # feeds are already normalised
        return args + list(self.cfg.extra_args)

    def _convert(self, mode: str, work: Path, ctx: StepContext, cache_dir: Optional[Path]) -> Tuple[Path, Dict[str, str]]:
        """Run onnx2tf once in `mode`: (dir, {relative name: sha256}) of what it wrote (the shared entry when cached)."""
        from edgekit.converters import onnx2tf_env
        from edgekit.core import cache

        python = onnx2tf_env.ensure_env(progress=ctx.progress)
        full = self.full_integer() and mode == "iq"
        half = self.float16()
        entry = _entry(cache_dir, self.key(mode, full, half)) if cache_dir is not None else None
        run_dir = cache.new_build_dir(entry) if entry is not None else Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=str(work)))
        model_copy = run_dir / "model.onnx"  # onnx2tf rewrites its input in place: give it a copy
        try:
            shutil.copyfile(self.artifact.path, model_copy)
            args = self._args(mode, run_dir, model_copy)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        ctx.note(f"tflite: onnx2tf {' '.join(args[2:])}")
        if ctx.progress:
            ctx.progress(f"      onnx2tf run ({mode}: writes {', '.join(w for w in _writes(mode) if w != 'fp16' or half)})")
        t0 = time.perf_counter()
        try:
            skip = ([] if half else ["float16"]) + (["int16"] + ([] if full else ["full_integer"]) if mode == "iq" else [])
            proc = onnx2tf_env.run_onnx2tf(python, args, cwd=run_dir, timeout_s=self.cfg.timeout_s, skip=skip)
        except subprocess.TimeoutExpired as exc:
            kept = _keep_failed(run_dir, ctx)
            raise StepError("tflite", f"onnx2tf did not finish within {self.cfg.timeout_s:.0f} s; partial output kept in {kept}", hint="raise timeout_s", tool_message=str(exc.stderr or "")[-3000:]) from exc
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        secs = time.perf_counter() - t0
        log = (proc.stdout or "") + "\n" + (proc.stderr or "")
        atomic_write_text(run_dir / "onnx2tf.log", log)
        signame = onnx2tf_env.killed_by(proc.returncode)
        if signame is not None:
            kept = _keep_failed(run_dir, ctx)
            sig = signame.split()[0]
            why = onnx2tf_env.SIGNAL_HINTS.get(sig, "a crash, not a conversion error")
            raise StepError(
                "tflite",
                f"onnx2tf was killed by {signame} while converting {self.artifact.path.name}: {why}; its log is kept at {kept / 'onnx2tf.log'}",
                hint="it ran with " + " ".join(f"{k}={v}" for k, v in onnx2tf_env.ISA_INDEPENDENT_ENV.items()) + "; please report the log with `lscpu` output",
                tool_message=log[-3000:] or None,
            )
        if proc.returncode != 0 or not (run_dir / self.wanted()).exists():
            # onnx2tf rewrites (and may rename nodes in) its copy, so look node names up there first
            node, op, message = parse_onnx2tf_error(log, model_copy)
            if op is None and node is not None:
                op = _op_of_node(self.artifact.path, node)
            kept = _keep_failed(run_dir, ctx)
            raise StepError(
                "tflite",
                f"onnx2tf failed on {self.artifact.path.name} (exit {proc.returncode}); its log and any partial output are kept in {kept}",
                hint="if an op is unsupported, replace it before export; for dynamic inputs pass --shape NAME=DIMS",
                node=node,
                op=op,
                tool_message=message,
            )
        ctx.note(f"tflite: onnx2tf ({mode}) took {secs:.1f} s")
        for p in (run_dir / "out").glob("*.tflite"):
            if p.stat().st_size == 0:
                p.unlink()  # a model the driver was told not to build (onnx2tf_env.SKIPPABLE: float16)
        if entry is None:
            shutil.rmtree(run_dir / "out" / "variables", ignore_errors=True)  # the SavedModel is large and not needed
            return run_dir, {str(p.relative_to(run_dir)): "" for p in (run_dir / "out").glob("*.tflite")}
        # keep only the models, the log and the sample file; the SavedModel, the ONNX copy and the calibration arrays go
        for p in sorted(run_dir.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            if p.is_dir():
                if not any(p.iterdir()):
                    p.rmdir()
            elif not p.name.endswith(KEEP_SUFFIXES) or p.name.startswith("calib_"):
                p.unlink()
        shutil.rmtree(run_dir / "out" / "variables", ignore_errors=True)
        shutil.rmtree(run_dir / "out" / "assets", ignore_errors=True)
        meta = {"mode": mode, "full_integer": full, "float16": half, "onnx2tf_s": round(secs, 1), "source": self.artifact.path.name}
        return entry, cache.store_files(run_dir, entry, meta, cache_dir)


def _entry(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / key


def _writes(mode: str) -> List[str]:
    return [p for p, modes in _SERVED_BY.items() if mode in modes]


def _calib_array(feeds: List[Dict[str, Any]], name: str):
    """The calibration feeds of one input stacked channels-last, as onnx2tf's -cind wants them."""
    import numpy as np

    data = np.stack([np.asarray(f[name]) for f in feeds]).astype(np.float32)
    data = data.reshape((data.shape[0] * data.shape[1],) + data.shape[2:]) if data.ndim >= 2 and data.shape[1] == 1 else data
    perm = _channels_last(data.ndim)
    return np.ascontiguousarray(np.transpose(data, perm) if perm else data)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _spec(artifact: Artifact, name: str):
    return next(t for t in artifact.inputs if t.name == name)


def _is_dynamic(shape: Sequence[Any]) -> bool:
    return any(not isinstance(d, int) or d <= 0 for d in shape)


def _concrete_shapes(artifact: Artifact, cfg: TfliteConfig, feeds: List[Dict[str, Any]]) -> Dict[str, List[int]]:
    out: Dict[str, List[int]] = {}
    for t in artifact.inputs:
        if t.name in cfg.input_shapes:
            out[t.name] = list(cfg.input_shapes[t.name])
        elif feeds and t.name in feeds[0]:
            out[t.name] = list(feeds[0][t.name].shape)
        elif not _is_dynamic(t.shape):
            out[t.name] = [int(d) for d in t.shape]
        else:
            raise CalibrationError(f"step 'tflite': input '{t.name}' has dynamic shape {t.shape} and no data or shape fixes it", hint=f"pass --shape {t.name}=1x...")
    return out


def _random_feed(artifact: Artifact, shapes: Dict[str, List[int]], seed: int) -> Dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {}
    for t in artifact.inputs:
        dt = np.dtype(t.dtype) if t.dtype in ("float32", "float16", "int64", "int32", "uint8", "int8", "bool") else np.float32
        feed[t.name] = (rng.integers(0, 2, shapes[t.name]) if dt.kind in "iub" else rng.standard_normal(shapes[t.name])).astype(dt)
    return feed


def _channels_last(ndim: int) -> Optional[List[int]]:
    return {3: [0, 2, 1], 4: [0, 2, 3, 1], 5: [0, 2, 3, 4, 1]}.get(ndim)


def _sample_images(artifact: Artifact, feeds: List[Dict[str, Any]]):
    """20x128x128x3 images in [0, 1] from our own data, so onnx2tf finds its sample file and never downloads."""
    import numpy as np

    imgs = []
    for f in feeds:
        for v in f.values():
            a = np.asarray(v, dtype=np.float32)
            if a.ndim == 4 and a.shape[1] == 3:
                a = np.transpose(a[0], (1, 2, 0))
            elif a.ndim == 4 and a.shape[-1] == 3:
                a = a[0]
            else:
                continue
            ys = np.linspace(0, a.shape[0] - 1, 128).astype(int)
            xs = np.linspace(0, a.shape[1] - 1, 128).astype(int)
            a = a[ys][:, xs]
            lo, hi = float(a.min()), float(a.max())
            imgs.append((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a))
    if not imgs:
        imgs = [np.full((128, 128, 3), 0.5, np.float32)]
    return np.stack([imgs[i % len(imgs)] for i in range(20)]).astype(np.float32)


def _keep_failed(run_dir: Path, ctx) -> Path:
    """Move a failed onnx2tf run out of the step's work dir (the pipeline deletes that) into <cache>/failed/."""
    if getattr(ctx, "cache_dir", None) is None:
        return run_dir
    dest = Path(ctx.cache_dir) / "failed" / f"tflite-{time.strftime('%Y%m%d-%H%M%S')}-{run_dir.name}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir), str(dest))
    except OSError:
        return run_dir
    return dest


def parse_onnx2tf_error(log: str, onnx_path: Path) -> Tuple[Optional[str], Optional[str], str]:
    """(node, op, message) from an onnx2tf failure log: its 'onnx_op_name:' line, or TFLite's custom-op report."""
    clean = re.sub(r"\x1b\[[0-9;]*m", "", log)
    lines = [
        (ln[:300] + " ...") if len(ln) > 300 else ln
        for ln in clean.splitlines()
        if ln.strip() and "computation placer" not in ln and not ln.startswith(("W0000", "I0000", "E0000", "loc("))
    ]
    node = op = None
    # the failing node is on onnx2tf's ERROR line; INFO lines name every node converted before it
    hits = re.findall(r"ERROR:\s*onnx_op_name: (\S+)", clean) or re.findall(r"onnx_op_name:? (\S+)", clean)
    if hits:
        node = hits[-1]
        op = _op_of_node(onnx_path, node) if onnx_path.exists() else None
    m1 = re.search(r"ERROR:\s*(\w+) OP is not yet implemented", clean)
    if m1:
        op = m1.group(1)
        names = _nodes_of_type(onnx_path, op) if onnx_path.exists() else []
        node = node or (", ".join(names[:5]) or None)
    m2 = re.search(r"Custom ops: ([^\n]+)", clean)
    if m2 and op is None:
        op = m2.group(1).strip() + " (no TFLite builtin or Flex kernel)"
    errs = [ln for ln in lines if re.search(r"(Error|ERROR|error:|Custom ops:)", ln)]
    message = "\n".join(dict.fromkeys(errs[-8:] + lines[-6:]))
    return node, op, message


def _nodes_of_type(onnx_path: Path, op_type: str) -> List[str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return [n.name or f"{op_type}#{i}" for i, n in enumerate(model.graph.node) if n.op_type == op_type]


def _op_of_node(onnx_path: Path, node_name: str) -> Optional[str]:
    """Op type of a node named in onnx2tf's log (it prints names starting with '/' as 'wa/...')."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    wanted = {node_name, re.sub(r"^wa/", "/", node_name)}
    for n in model.graph.node:
        if n.name in wanted:
            return n.op_type
    return None


# ------------------------------------------------------------------------------------------ layout mapping


def _cos(a, b) -> float:
    """Output cosine of a layout candidate, or -1 when the element counts differ (it cannot match)."""
    import numpy as np

    from edgekit.quality.metrics import cosine

    return -1.0 if np.size(a) != np.size(b) else cosine(a, b)


def _perms_to(src_shape: Sequence[int], model_shape: Sequence[int]) -> List[List[int]]:
    """Permutations p with np.transpose(array_of_src_shape, p).shape == model_shape; channels-last first."""
    n = len(src_shape)
    if n != len(model_shape):
        return []
    cands = []
    pref = [list(range(n))] + ([_channels_last(n)] if _channels_last(n) else [])
    for p in pref + [list(p) for p in itertools.permutations(range(n)) if list(p) not in pref] if n <= 5 else pref:
        if [src_shape[i] for i in p] == list(model_shape) and p not in cands:
            cands.append(p)
    return cands


def _inverse(p: List[int]) -> List[int]:
    inv = [0] * len(p)
    for i, v in enumerate(p):
        inv[v] = i
    return inv


def map_layout(source: Artifact, tflite_path: Path, feed: Dict[str, Any]) -> Dict[str, Any]:
    """Map source inputs/outputs onto the TFLite model's (names, order, NHWC) and verify on `feed` against ONNX Runtime."""
    import numpy as np

    ort = require("onnxruntime", "onnx", "checking the TFLite layout against the ONNX model")
    lite = require("ai_edge_litert.interpreter", "tflite", "checking the converted TFLite model")
    sess = ort.InferenceSession(str(source.path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {k: np.asarray(v) for k, v in feed.items()})
    interp = lite.Interpreter(model_path=str(tflite_path), num_threads=2)
    ins = interp.get_input_details()
    outs = interp.get_output_details()
    if len(ins) != len(source.inputs) or len(outs) != len(ref):
        raise StepError("tflite", f"the converted model has {len(ins)} inputs / {len(outs)} outputs, the source {len(source.inputs)} / {len(ref)}", hint="check onnx2tf's log in the work dir")

    # inputs: by name first (onnx2tf usually keeps them, sometimes with a serving_default_ prefix / :0 suffix), else by shape
    def bare(n: str) -> str:
        return re.sub(r"^serving_default_|:\d+$", "", n)

    name_map: Dict[str, str] = {}
    feed_tr: Dict[str, List[int]] = {}
    options: List[Tuple[str, Dict[str, Any], List[List[int]]]] = []
    free = list(ins)
    for spec in source.inputs:
        src_shape = list(np.asarray(feed[spec.name]).shape)
        match = [d for d in free if bare(d["name"]) in (spec.name, _safe(spec.name))]
        if not match:
            match = [d for d in free if _perms_to(src_shape, list(d["shape"]))]
        if not match:
            raise StepError("tflite", f"cannot find source input '{spec.name}' {src_shape} among the TFLite inputs {[(d['name'], list(d['shape'])) for d in ins]}")
        d = match[0]
        free.remove(d)
        perms = _perms_to(src_shape, list(d["shape"]))
        if not perms:
            raise StepError("tflite", f"TFLite input {d['name']} {list(d['shape'])} is no permutation of source input '{spec.name}' {src_shape}")
        options.append((spec.name, d, perms))

    def run(perm_choice: Sequence[List[int]]) -> List[Any]:
        for (sname, d, _), p in zip(options, perm_choice):
            x = np.transpose(np.asarray(feed[sname]), p)
            if d["dtype"] in (np.int8, np.uint8):
                scale, zero = d["quantization"]
                x = np.clip(np.round(x / scale + zero), np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max)
            interp.set_tensor(d["index"], np.asarray(x.astype(d["dtype"]), order="C"))
        interp.invoke()
        res = []
        for od in outs:
            y = interp.get_tensor(od["index"])
            if od["dtype"] in (np.int8, np.uint8):
                scale, zero = od["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            res.append(y)
        return res

    interp.allocate_tensors()
    best: Optional[Tuple[float, Dict[str, Any]]] = None
    for choice in itertools.product(*[o[2] for o in options]):
        got = run(choice)
        order: List[int] = []
        out_tr: Dict[str, List[int]] = {}
        sims = []
        used: set = set()
        for i, r in enumerate(ref):
            cand = []
            for j, g in enumerate(got):
                if j in used:
                    continue
                for p in _perms_to(list(g.shape), list(r.shape)):
                    cand.append((_cos(np.transpose(g, p), r), j, p))
            if not cand:
                break
            c, j, p = max(cand, key=lambda t: t[0])
            used.add(j)
            order.append(j)
            if p != list(range(len(p))):
                out_tr[str(i)] = p
            sims.append(c)
        if len(order) != len(ref):
            continue
        score = min(sims)
        meta = {
            "input_name_map": {sname: d["name"] for (sname, d, _) in options},
            "feed_transpose": {d["name"]: list(p) for (sname, d, _), p in zip(options, choice) if list(p) != list(range(len(p)))},
            "output_order": order,
            "output_transpose": out_tr,
            "layout_check_cosine": score,
        }
        if best is None or score > best[0]:
            best = (score, meta)
    if best is None:
        raise StepError("tflite", "cannot match the TFLite outputs to the source outputs by shape", hint="check onnx2tf's log in the work dir")
    if best[0] < 0.5:
        raise StepError("tflite", f"the converted TFLite model's outputs do not match the ONNX model's on a sample (best cosine {best[0]:.3f})", hint="onnx2tf may have mis-converted an op; try another precision or runtime")
    meta = best[1]
    meta["layout"] = "NHWC" if meta["feed_transpose"] else "same as source"
    return meta
