"""Resolve symbolic input dims to concrete shapes for benchmarking and random reference inputs."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from edgekit.core.artifact import TensorSpec
from edgekit.core.errors import UsageError
from edgekit.core.runner_interface import InputSpec


def parse_shape_options(values: Sequence[str]) -> Dict[str, List[int]]:
    """Parse `--shape name=1x3x640x640` options."""
    out: Dict[str, List[int]] = {}
    for v in values:
        name, sep, dims = v.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = [int(d) for d in dims.lower().split("x")]
            if any(d <= 0 for d in out[name]):
                raise ValueError
        except ValueError:
            raise UsageError(f"--shape '{v}': expected NAME=D1xD2x... with positive integers, e.g. x=1x3x640x640") from None
    return out


def resolve_inputs(
    inputs: Sequence[TensorSpec],
    overrides: Optional[Dict[str, List[int]]] = None,
    defaults: Optional[Dict[str, List[int]]] = None,
    sample: Optional[Dict[str, np.ndarray]] = None,
    model: str = "model",
) -> List[InputSpec]:
    """Concrete InputSpecs: --shape overrides, then model defaults (zoo), then fixed dims; batch-like dim 0 -> 1.

    Integer value ranges come from a real sample when one is given (token ids, masks), else [0, 100).
    """
    overrides = dict(overrides or {})
    defaults = defaults or {}
    names = {t.name for t in inputs}
    unknown = set(overrides) - names
    if unknown:
        raise UsageError(
            f"--shape names unknown input(s) {sorted(unknown)} of {model}",
            hint=f"inputs are: {', '.join(sorted(names))}",
        )
    specs: List[InputSpec] = []
    for t in inputs:
        shape = overrides.get(t.name) or defaults.get(t.name)
        if shape is None:
            shape = []
            for i, d in enumerate(t.shape):
                if isinstance(d, int) and d > 0:
                    shape.append(d)
                elif i == 0:
                    shape.append(1)
                else:
                    raise UsageError(
                        f"input '{t.name}' of {model} has symbolic dims {t.shape}; edgekit needs a concrete shape to benchmark it",
                        hint=f"pass --shape {t.name}=" + "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in t.shape),
                    )
        elif len(shape) != len(t.shape):
            raise UsageError(f"--shape {t.name}: rank {len(shape)} but the model's input has rank {len(t.shape)} {t.shape}")
        else:
            for want, got in zip(t.shape, shape):
                if isinstance(want, int) and want > 0 and want != got:
                    raise UsageError(f"--shape {t.name}={'x'.join(map(str, shape))} conflicts with the model's fixed shape {t.shape}")
        low = high = None
        try:
            dt = np.dtype(_np_dtype(t.dtype))
        except TypeError:
            dt = None
        if dt is None or dt.kind not in "biuf":
            raise UsageError(
                f"input '{t.name}' of {model} has type {t.dtype}; edgekit feeds numeric and boolean tensors only",
                hint="wrap the model so that it takes numbers (e.g. token ids instead of strings)",
            )
        if np.issubdtype(dt, np.integer) or t.dtype == "bool":
            if sample is not None and t.name in sample:
                arr = np.asarray(sample[t.name])
                low, high = float(arr.min()), float(arr.max()) + 1.0
            else:
                low, high = 0.0, 100.0
        specs.append(InputSpec(name=t.name, shape=list(shape), dtype=_np_dtype(t.dtype), low=low, high=high))
    return specs


def _np_dtype(dtype: str) -> str:
    return {"float": "float32", "long": "int64", "int": "int32", "half": "float16"}.get(dtype, dtype)


def random_feeds(specs: Sequence[InputSpec], n: int, seed: int = 0) -> List[Dict[str, np.ndarray]]:
    """Reproducible random inputs (the same rule the harness uses)."""
    rng = np.random.RandomState(seed)
    feeds = []
    for _ in range(n):
        feed = {}
        for s in specs:
            dt = np.dtype(s.dtype)
            if np.issubdtype(dt, np.integer) or dt == np.bool_:
                lo = int(s.low if s.low is not None else 0)
                hi = int(s.high if s.high is not None else 100)
                feed[s.name] = np.asarray(rng.randint(lo, max(hi, lo + 1), size=s.shape)).astype(dt)
            else:
                lo = s.low if s.low is not None else 0.0
                hi = s.high if s.high is not None else 1.0
                # asarray: a rank-0 input must be a 0-d array, not a NumPy scalar (runtimes reject those)
                feed[s.name] = np.asarray(lo + (hi - lo) * rng.random_sample(s.shape)).astype(dt)
        feeds.append(feed)
    return feeds
