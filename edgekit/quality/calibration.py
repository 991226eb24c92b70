"""Calibration/evaluation data: image folders with a preprocessing spec, .npy/.npz files, or Python iterables.

Every sample is validated against the model's inputs (name, rank, fixed dims, dtype) so that a mismatch is
reported with the sample index, the input name and the expected shape, instead of failing deep inside a tool.

Keeping evaluation data held out: when the user gives one source, `split_calib_eval` takes the first
`n_calib` samples for calibration and the *following* `n_eval` samples for evaluation, so the two sets never
share a sample (in a folder the order is the sorted file names; in .npz/.npy the order along axis 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgekit.core.artifact import TensorSpec
from edgekit.core.errors import CalibrationError

Feed = Dict[str, np.ndarray]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PreprocessSpec(BaseModel):
    """How an image file becomes an input tensor: resize, colour order, scale, mean/std, layout."""

    model_config = ConfigDict(extra="forbid")
    size: Optional[Tuple[int, int]] = Field(default=None, description="(height, width); None = from the model's fixed dims")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR", "GRAY"] = "RGB"
    mean: Tuple[float, ...] = (0.0, 0.0, 0.0)
    std: Tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0
    dtype: str = "float32"

    @field_validator("std")
    @classmethod
    def _no_zero_std(cls, v: Tuple[float, ...]) -> Tuple[float, ...]:
        if any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v

    @classmethod
    def parse(cls, text: str) -> "PreprocessSpec":
        """Parse 'size=640x640,layout=NCHW,color=BGR,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,scale=1/255'."""
        fields: Dict[str, Any] = {}
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            value = value.strip()
            if not sep or not value:
                raise CalibrationError(
                    f"preprocessing spec '{text}': item '{part}' is not key=value",
                    hint="e.g. size=640x640,layout=NCHW,color=BGR,mean=0.5/0.5/0.5,std=0.5/0.5/0.5,scale=1/255",
                )
            try:
                if key == "size":
                    h, _, w = value.lower().partition("x")
                    fields["size"] = (int(h), int(w or h))
                elif key == "layout":
                    fields["layout"] = value.upper()
                elif key in ("color", "colour"):
                    fields["color"] = value.upper()
                elif key in ("mean", "std"):
                    fields[key] = tuple(float(x) for x in value.split("/"))
                elif key == "scale":
                    num, _, den = value.partition("/")
                    fields["scale"] = float(num) / float(den) if den else float(num)
                elif key == "dtype":
                    fields["dtype"] = value
                else:
                    raise CalibrationError(
                        f"preprocessing spec '{text}': unknown key '{key}'",
                        hint="known keys: size, layout, color, mean, std, scale, dtype",
                    )
            except ValueError as exc:
                raise CalibrationError(f"preprocessing spec '{text}': bad value for '{key}': {value} ({exc})") from exc
        try:
            return cls(**fields)
        except ValueError as exc:  # pydantic ValidationError is a ValueError
            raise CalibrationError(f"preprocessing spec '{text}': {exc}") from exc


def _image_to_tensor(path: Path, spec: PreprocessSpec, target_hw: Tuple[int, int]) -> np.ndarray:
    """Load one image file and apply the preprocessing spec; returns a batch of one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if spec.color == "GRAY" else "RGB")
            h, w = target_hw
            im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise CalibrationError(f"{path}: cannot read image ({exc})", hint="remove or replace the file") from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if spec.color == "BGR":
        arr = arr[:, :, ::-1]
    arr = arr * spec.scale
    ch = arr.shape[2]
    mean = np.asarray(spec.mean if len(spec.mean) == ch else spec.mean[:1] * ch, dtype=np.float32)
    std = np.asarray(spec.std if len(spec.std) == ch else spec.std[:1] * ch, dtype=np.float32)
    arr = (arr - mean) / std
    if spec.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr[None]).astype(spec.dtype)


def _image_hw(inp: TensorSpec, spec: PreprocessSpec, source: Path) -> Tuple[int, int]:
    """Target (H, W) from the spec, else from the model input's fixed spatial dims."""
    if spec.size:
        return spec.size
    shape = inp.shape
    if len(shape) == 4:
        hw = (shape[2], shape[3]) if spec.layout == "NCHW" else (shape[1], shape[2])
        if all(isinstance(d, int) and d > 0 for d in hw):
            return int(hw[0]), int(hw[1])
    raise CalibrationError(
        f"{source}: input '{inp.name}' has shape {_fmt_shape(shape)} with no fixed height/width",
        hint="give the image size in the preprocessing spec, e.g. --calib-preprocess size=640x640",
    )


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "[" + ",".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def _image_files(folder: Path) -> List[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder",
            hint="point --calib at a folder of images, or at a .npy/.npz file",
        )
    return files


def _from_folder(folder: Path, inputs: List[TensorSpec], n: int, offset: int, preprocess: Optional[PreprocessSpec]) -> List[Feed]:
    if len(inputs) != 1:
        raise CalibrationError(
            f"{folder}: an image folder can feed only a model with one input; this model has {len(inputs)} "
            f"({', '.join(i.name for i in inputs)})",
            hint="give a .npz keyed by input name instead",
        )
    spec = preprocess or PreprocessSpec()
    inp = inputs[0]
    files = _image_files(folder)[offset : offset + n]
    hw = _image_hw(inp, spec, folder)
    return [{inp.name: _image_to_tensor(f, spec, hw)} for f in files]


def _split_rows(name: str, arr: np.ndarray, inp: Optional[TensorSpec]) -> List[np.ndarray]:
    """Turn a stacked array into per-sample arrays with the model's batch dim (a batch of one)."""
    if inp is not None and arr.ndim == len(inp.shape) + 1:
        return [arr[i] for i in range(arr.shape[0])]  # (N, *model_shape): one sample per row
    if inp is not None and arr.ndim == len(inp.shape) and len(inp.shape) > 0:
        return [arr[i : i + 1] for i in range(arr.shape[0])]  # (N, ...) with N along the batch dim
    return [arr]


def _from_arrays(source: Path, arrays: Dict[str, np.ndarray], inputs: List[TensorSpec]) -> List[Feed]:
    by_name = {i.name: i for i in inputs}
    missing = [i.name for i in inputs if i.name not in arrays]
    if missing:
        raise CalibrationError(
            f"{source}: no array for input(s) {', '.join(repr(m) for m in missing)}; the file has "
            f"{', '.join(repr(k) for k in arrays) or 'no arrays'}",
            hint="save the .npz with one array per model input, keyed by input name: np.savez(f, **{name: array})",
        )
    per_input = {name: _split_rows(name, arrays[name], by_name[name]) for name in by_name}
    counts = {name: len(v) for name, v in per_input.items()}
    if len(set(counts.values())) != 1:
        raise CalibrationError(f"{source}: inputs hold different sample counts {counts}", hint="give every input the same number of samples")
    count = next(iter(counts.values()))
    return [{name: per_input[name][i] for name in by_name} for i in range(count)]


def _from_file(path: Path, inputs: List[TensorSpec]) -> List[Feed]:
    try:
        data = np.load(str(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read as numpy data ({exc})", hint="save it with np.save / np.savez") from exc
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            raise CalibrationError(
                f"{path}: a .npy holds one array but the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})",
                hint="use a .npz keyed by input name",
            )
        return _from_arrays(path, {inputs[0].name: data}, inputs)
    with data:
        arrays = {k: data[k] for k in data.files}
    return _from_arrays(path, arrays, inputs)


def _from_iterable(source: Iterable[Any], inputs: List[TensorSpec], limit: int) -> List[Feed]:
    out: List[Feed] = []
    for i, item in enumerate(source):
        if len(out) >= limit:
            break
        if isinstance(item, dict):
            out.append({str(k): np.asarray(v) for k, v in item.items()})
        elif isinstance(item, (list, tuple)) and not isinstance(item, np.ndarray) and len(item) == len(inputs) and len(inputs) > 1:
            out.append({inp.name: np.asarray(v) for inp, v in zip(inputs, item)})
        else:
            if len(inputs) != 1:
                raise CalibrationError(
                    f"calibration sample {i}: a bare array was given but the model has {len(inputs)} inputs "
                    f"({', '.join(i_.name for i_ in inputs)})",
                    hint="yield dicts {input_name: array}",
                )
            out.append({inputs[0].name: np.asarray(item)})
    return out


def validate_feed(feed: Dict[str, Any], inputs: List[TensorSpec], index: int, what: str = "calibration") -> Feed:
    """Check one sample against the model inputs; returns it with dtypes cast only where lossless."""
    names = [i.name for i in inputs]
    extra = [k for k in feed if k not in names]
    missing = [n for n in names if n not in feed]
    if missing or extra:
        raise CalibrationError(
            f"{what} sample {index}: inputs {sorted(feed)} do not match the model's {names}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unknown {extra})" if extra else ""),
            hint="key each sample by the model's input names",
        )
    out: Feed = {}
    for inp in inputs:
        arr = np.asarray(feed[inp.name])
        if arr.ndim != len(inp.shape):
            raise CalibrationError(
                f"{what} sample {index}, input '{inp.name}': shape {tuple(arr.shape)} has rank {arr.ndim}, "
                f"the model's {_fmt_shape(inp.shape)} has rank {len(inp.shape)}",
                hint="add or remove the batch dimension so the ranks match",
            )
        for got, want in zip(arr.shape, inp.shape):
            if isinstance(want, int) and want > 0 and got != want:
                raise CalibrationError(
                    f"{what} sample {index}, input '{inp.name}': shape {tuple(arr.shape)} does not match the "
                    f"model's {_fmt_shape(inp.shape)} (fixed dims must match)",
                    hint="resize/pad the data (for images: size= in the preprocessing spec)",
                )
        want_dtype = np.dtype(inp.dtype) if not inp.dtype.startswith("onnx:") else arr.dtype
        if arr.dtype != want_dtype:
            same_kind = (arr.dtype.kind == want_dtype.kind) or (arr.dtype.kind in "iu" and want_dtype.kind in "iu")
            if not same_kind:
                raise CalibrationError(
                    f"{what} sample {index}, input '{inp.name}': dtype {arr.dtype} does not match the model's {want_dtype}",
                    hint=f"convert the data to {want_dtype} (e.g. array.astype('{want_dtype}'))",
                )
            arr = arr.astype(want_dtype)
        out[inp.name] = np.asarray(arr, order="C")
    return out


def load_calibration(
    source: Union[str, Path, Iterable[Any]],
    inputs: List[TensorSpec],
    n: int,
    preprocess: Optional[Union[PreprocessSpec, str]] = None,
    *,
    offset: int = 0,
    what: str = "calibration",
) -> List[Feed]:
    """Load up to `n` validated samples (skipping the first `offset`) from a folder, .npy/.npz, or iterable."""
    if n <= 0:
        raise CalibrationError(f"{what} sample count must be positive, got {n}", hint="ask for at least 1 sample (e.g. calib_samples=100 in the Python API)")
    if isinstance(preprocess, str):
        preprocess = PreprocessSpec.parse(preprocess)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise CalibrationError(f"{path}: {what} data not found", hint="--calib takes an image folder, a .npy or a .npz file")
        if path.is_dir():
            feeds = _from_folder(path, inputs, n, offset, preprocess)
        elif path.suffix.lower() in (".npy", ".npz"):
            feeds = _from_file(path, inputs)[offset : offset + n]
        else:
            raise CalibrationError(
                f"{path}: unsupported {what} data (extension '{path.suffix or 'none'}')",
                hint="--calib takes an image folder, a .npy (single input) or a .npz keyed by input name",
            )
    else:
        try:
            iterator = iter(source)
        except TypeError as exc:
            raise CalibrationError(
                f"{what} data of type {type(source).__name__} is not a path or an iterable", hint="pass a folder, .npy/.npz, or an iterable of dicts"
            ) from exc
        if offset:
            for _ in range(offset):
                if next(iterator, None) is None:
                    break
        feeds = _from_iterable(iterator, inputs, n)
    if not feeds:
        raise CalibrationError(f"{what} data {source if isinstance(source, (str, Path)) else type(source).__name__} holds no samples"
                               + (f" after the first {offset}" if offset else ""), hint="give more samples")
    return [validate_feed(f, inputs, offset + i, what) for i, f in enumerate(feeds)]


def split_calib_eval(
    source: Union[str, Path, Sequence[Any]],
    inputs: List[TensorSpec],
    n_calib: int,
    n_eval: int,
    preprocess: Optional[Union[PreprocessSpec, str]] = None,
) -> Tuple[List[Feed], List[Feed]]:
    """One user source -> (first n_calib samples for calibration, the next n_eval for held-out evaluation).

    A one-shot iterator (generator) is materialised once so both sets come from a single pass.
    """
    if not isinstance(source, (str, Path)) and not isinstance(source, Sequence):
        source = list(source)  # a generator can be consumed only once
    calib = load_calibration(source, inputs, n_calib, preprocess)
    if len(calib) < n_calib:
        raise CalibrationError(
            f"{what_src(source)} holds only {len(calib)} samples; {n_calib} calibration + {n_eval} evaluation samples were asked for",
            hint="give more data, or ask for fewer calibration/evaluation samples (evaluation must be disjoint from calibration)",
        )
    evals = load_calibration(source, inputs, n_eval, preprocess, offset=n_calib, what="evaluation")
    return calib, evals


def what_src(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"the given {type(source).__name__}"
