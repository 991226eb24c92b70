"""`--inputs FILE.npz`: real input values (a sample rate, token-type ids, a mask) instead of random data.

The file holds one sample: one array per model input, keyed by input name, in the SOURCE model's names and
layout. It is checked against the model's inputs here, on the host, before any work starts; the same
values feed the fidelity checks and (rewritten into the artifact's own names/layout) the benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgekit.core.errors import UsageError
from edgekit.core.runner_interface import InputSpec

Feed = Dict[str, np.ndarray]


def _np_dtype(dtype: str) -> str:
    return {"float": "float32", "long": "int64", "int": "int32", "half": "float16"}.get(dtype, dtype)


def load_inputs_file(path, inputs: Sequence, model: str = "the model", shapes: Optional[Dict[str, List[int]]] = None) -> Feed:
    """Read and check an .npz of model inputs: every input present, no extra names, rank/fixed dims and dtype
    as the model declares them (rank-0 inputs stay rank 0). One clear UsageError per mismatch."""
    p = Path(path)
    what = f"--inputs {p}"
    if not p.is_file():
        raise UsageError(f"{what}: file not found", hint="give an .npz written with np.savez(path, **{input_name: array})")
    try:
        with np.load(p, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("not an .npz archive")
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{what}: cannot read it as an .npz archive ({reason})", hint="write it with np.savez(path, **{input_name: array}); object arrays are not accepted") from None
    names = [t.name for t in inputs]
    missing = [n for n in names if n not in arrays]
    unknown = sorted(k for k in arrays if k not in names)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown name(s) {', '.join(unknown)}")
        raise UsageError(f"{what} does not match the inputs of {model}: " + "; ".join(parts), hint=f"the model's inputs are: {', '.join(names)}")
    feed: Feed = {}
    for t in inputs:
        arr = arrays[t.name]
        want = list(t.shape)
        if arr.ndim != len(want):
            raise UsageError(
                f"{what}: input '{t.name}' has shape {list(arr.shape)} (rank {arr.ndim}) but {model} declares {want} (rank {len(want)})",
                hint="a scalar input takes a 0-d array (np.float32(3.0)), not shape [1]" if not want else "save the array with the model's rank",
            )
        for i, (w, g) in enumerate(zip(want, arr.shape)):
            if isinstance(w, int) and w > 0 and w != g:
                raise UsageError(f"{what}: input '{t.name}' has shape {list(arr.shape)} but {model} fixes dim {i} to {w} ({want})")
        if shapes and t.name in shapes and list(shapes[t.name]) != list(arr.shape):
            raise UsageError(f"{what}: input '{t.name}' has shape {list(arr.shape)} but --shape {t.name}={'x'.join(map(str, shapes[t.name]))}", hint="drop --shape for inputs given by --inputs")
        dt = _np_dtype(t.dtype)
        try:
            want_dt = np.dtype(dt)
        except TypeError:
            want_dt = None
        if want_dt is not None and arr.dtype != want_dt:
            raise UsageError(f"{what}: input '{t.name}' has dtype {arr.dtype.name} but {model} expects {want_dt.name}", hint=f"save it as {want_dt.name} (e.g. arr.astype(np.{want_dt.name}))")
        feed[t.name] = np.asarray(arr, order="C")  # not ascontiguousarray: it makes a scalar shape (1,)
    return feed


def specs_from_feed(feed: Feed) -> List[InputSpec]:
    """Concrete InputSpecs (shapes and dtypes) taken from the file's arrays."""
    return [InputSpec(name=n, shape=[int(d) for d in a.shape], dtype=a.dtype.name) for n, a in feed.items()]


def device_feed(artifact, feed: Feed) -> Feed:
    """The feed in the artifact's own input names and layout (e.g. NHWC for a .tflite), as the harness reads it."""
    from edgekit.quality.fidelity import _to_model_feed

    return _to_model_feed(artifact, feed)


def write_device_feed(artifact, feed: Feed, directory: Path) -> Path:
    """Write the feed, mapped onto the artifact's inputs, to an .npz named by its content (cache-friendly)."""
    import hashlib
    import io

    mapped = device_feed(artifact, feed)
    buf = io.BytesIO()
    np.savez(buf, **mapped)
    data = buf.getvalue()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"inputs-{hashlib.sha256(data).hexdigest()[:16]}.npz"
    if not path.exists():
        from edgekit.core.fsutil import atomic_write_bytes

        atomic_write_bytes(path, data)
    return path


def fingerprint(feed: Feed) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(feed):
        a = feed[name]
        h.update(f"{name}|{a.dtype.name}|{a.shape}".encode())
        h.update(np.asarray(a, order="C").tobytes())
    return h.hexdigest()[:16]
