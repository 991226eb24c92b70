"""Weight sharing: k-means-cluster each weight tensor to k values; stored as fp32 (runs anywhere), measured zipped and as index+codebook."""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Tuple

import numpy as np
from pydantic import Field

from edgekit.core.artifact import Artifact
from edgekit.core.steps import Step, StepConfig, StepContext

LATENCY_NOTE = ("weights are stored as reconstructed fp32 values, so dense runtimes run exactly as many fp32 MACs: "
                "no latency gain is expected; the saving is in storage (zipped / index+codebook)")


class WeightShareConfig(StepConfig):
    """k clusters per tensor (k=256 -> 8-bit indices, k=16 -> 4-bit); tensors smaller than `min_elements` (biases, norms) stay as they are."""

    clusters: int = Field(256, ge=2, le=65536)
    min_elements: int = Field(1024, ge=1)
    iterations: int = Field(15, ge=1, le=200)
    ignore: List[str] = Field(default_factory=list, description="parameter / ONNX weight names left untouched")
    eval_samples: int = Field(16, gt=0)
    measure: bool = Field(True, description="also time before/after in ORT at profile threads (and count MACs for PyTorch)")


def _lloyd(flat: np.ndarray, centroids: np.ndarray, iterations: int) -> Tuple[np.ndarray, np.ndarray, float]:
    """Lloyd iterations on sorted 1-D centres; returns (centres, indices, sum of squared errors)."""
    for _ in range(iterations):
        idx = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
        sums = np.bincount(idx, weights=flat, minlength=len(centroids))
        counts = np.bincount(idx, minlength=len(centroids))
        new = np.unique(np.where(counts > 0, sums / np.maximum(counts, 1), centroids))
        converged = len(new) == len(centroids) and np.allclose(new, centroids, rtol=0, atol=1e-12)
        centroids = new
        if converged:
            break
    idx = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
    return centroids, idx, float(np.sum((flat - centroids[idx]) ** 2))


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 15) -> Tuple[np.ndarray, np.ndarray]:
    """k-means on scalars: (codebook, indices). Lloyd from three starts, the lowest squared error wins.

    Starts: evenly spaced over [min, max] (keeps the rare large weights conv nets depend on), quantiles
    (resolution where most weights are), and half of each. On PP-OCRv4 rec at k=64, quantile-only starts left
    a relative RMS error of 0.11-0.30 per tensor; the mixed start 0.04-0.08.
    """
    flat = values.astype(np.float64).ravel()
    uniq = np.unique(flat)
    if len(uniq) <= k:
        return uniq.astype(np.float32), np.searchsorted(uniq, flat).astype(np.int64)
    lo, hi = flat.min(), flat.max()
    half = k // 2
    starts = [
        np.linspace(lo, hi, k),
        np.quantile(flat, (np.arange(k) + 0.5) / k),
        np.concatenate([np.linspace(lo, hi, half), np.quantile(flat, (np.arange(k - half) + 0.5) / (k - half))]),
    ]
    best = min((_lloyd(flat, np.unique(s), iterations) for s in starts), key=lambda r: r[2])
    return best[0].astype(np.float32), best[1].astype(np.int64)


def share_array(arr: np.ndarray, k: int, iterations: int) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Replace every value of `arr` by its cluster centre; report unique count and index+codebook bytes."""
    codebook, idx = kmeans_1d(arr, k, iterations)
    shared = codebook[idx].reshape(arr.shape).astype(arr.dtype)
    bits = max(1, math.ceil(math.log2(max(len(codebook), 2))))
    encoded = math.ceil(arr.size * bits / 8) + len(codebook) * 4
    return shared, {"elements": int(arr.size), "unique_after": int(len(np.unique(shared))), "index_bits": bits,
                    "dense_bytes": int(arr.nbytes), "codebook_bytes": int(encoded)}


def _summary(tensors: List[Dict[str, Any]], other_bytes: int, k: int) -> Dict[str, Any]:
    dense = sum(t["dense_bytes"] for t in tensors)
    enc = sum(t["codebook_bytes"] for t in tensors)
    return {
        "clusters": k,
        "tensors_shared": len(tensors),
        "max_unique_per_tensor": max((t["unique_after"] for t in tensors), default=0),
        "shared_dense_bytes": dense,
        "index_codebook_bytes": enc + other_bytes,
        "index_codebook_note": f"estimated size if stored as {tensors[0]['index_bits'] if tensors else '?'}-bit indices + fp32 "
                               "codebook per shared tensor, other tensors fp32 (not a file edgekit writes)",
        "tensors": tensors,
    }


def share_module(module: Any, *, clusters: int = 256, min_elements: int = 1024, iterations: int = 15,
                 ignore: List[str] = ()) -> Tuple[Any, Dict[str, Any]]:
    """Python API: a copy of `module` whose float parameters (>= min_elements) each hold at most `clusters` distinct values."""
    import torch

    model = copy.deepcopy(module).eval()
    skip = set(ignore)
    tensors: List[Dict[str, Any]] = []
    other = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in skip or not p.is_floating_point() or p.numel() < min_elements:
                other += p.numel() * p.element_size()
                continue
            shared, info = share_array(p.detach().cpu().numpy(), clusters, iterations)
            p.copy_(torch.from_numpy(shared))
            tensors.append({"name": name, **info})
    return model, _summary(tensors, other, clusters)


def share_onnx(model: Any, *, clusters: int = 256, min_elements: int = 1024, iterations: int = 15,
               ignore: List[str] = ()) -> Tuple[Any, Dict[str, Any]]:
    """Cluster every float32 initializer / Constant tensor (>= min_elements) of an ONNX model (modified copy)."""
    from edgekit.core.compression import onnx_constants

    model = copy.deepcopy(model)
    skip = set(ignore)
    tensors: List[Dict[str, Any]] = []
    other = 0
    for name, (arr, setter) in onnx_constants(model).items():
        if name in skip or arr.dtype != np.float32 or arr.size < min_elements:
            other += arr.nbytes
            continue
        shared, info = share_array(arr, clusters, iterations)
        setter(shared)
        tensors.append({"name": name, **info})
    return model, _summary(tensors, other, clusters)


class WeightShareStep(Step):
    """k-means weight sharing; honest about the gain: smaller zipped/encoded size, same dense latency."""

    name = "weight-share"
    summary = "Cluster each weight tensor to k shared values (k-means); report zipped and index+codebook size."
    accepts = ("pytorch", "onnx")
    produces = "pytorch"  # "onnx" when given an ONNX model
    Config = WeightShareConfig
    requires = (("torch", "torch"), ("onnx", "simplify"))

    def run(self, artifact: Artifact, config: WeightShareConfig, ctx: StepContext) -> Artifact:
        from edgekit.core import compression as cr

        kw = dict(clusters=config.clusters, min_elements=config.min_elements, iterations=config.iterations, ignore=config.ignore)
        extra = {"method": "k-means weight sharing", "settings": {"clusters": config.clusters, "min_elements": config.min_elements}}
        if artifact.format == "onnx":
            import onnx

            cr.require_onnx_file(self.name, artifact)
            model, details = share_onnx(onnx.load(str(artifact.path)), **kw)
            self._check(details)
            out = cr.finish_onnx_step(self.name, artifact, model, ctx, {**extra, "details": details, "notes": []},
                                      eval_samples=config.eval_samples, measure=config.measure)
        else:
            cr.require_module(self.name, artifact)
            model, details = share_module(artifact.module, **kw)
            self._check(details)
            out = cr.finish_module_step(self.name, artifact, model, ctx, {**extra, "details": details, "notes": []},
                                        eval_samples=config.eval_samples, measure=config.measure)
        rec = ctx.report[self.name]
        rec["after"]["index_codebook_bytes"] = details["index_codebook_bytes"]
        lat = ""
        if config.measure:
            lb, la = rec["before"]["latency"], rec["after"]["latency"]
            lat = f"latency {lb['median_ms']} vs {la['median_ms']} ms ({la['backend']}); "
        msg = (f"{LATENCY_NOTE}: {lat}size on disk {rec['before'].get('size_bytes')} vs {rec['after'].get('size_bytes')} bytes, "
               f"zipped {rec['before'].get('zipped_bytes')} vs {rec['after'].get('zipped_bytes')} bytes, "
               f"index+codebook ~{details['index_codebook_bytes']} bytes")
        rec["notes"].append(msg)
        ctx.note(f"weight-share: {msg}")
        return out

    def _check(self, details: Dict[str, Any]) -> None:
        if details["tensors_shared"] == 0:
            from edgekit.core.errors import StepSkipped

            raise StepSkipped("no float weight tensor is large enough to share (lower min_elements)")
