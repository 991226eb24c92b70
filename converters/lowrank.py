"""Low-rank factorisation: SVD of Linear/Conv (PyTorch) or MatMul/Gemm/Conv (ONNX) weights at a rank or energy threshold."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from pydantic import Field, model_validator

from edgekit.core.artifact import Artifact
from edgekit.core.steps import Step, StepConfig, StepContext


class LowRankConfig(StepConfig):
    """Give `rank` (fixed) or `energy` (keep this fraction of sum(sigma^2)); a layer is only factorised when that saves parameters."""

    rank: Optional[int] = Field(None, gt=0)
    energy: Optional[float] = Field(None, gt=0.0, le=1.0)
    min_saving: float = Field(0.1, ge=0.0, lt=1.0, description="skip a layer unless the factorisation saves this fraction of its weights")
    ignore: List[str] = Field(default_factory=list, description="PyTorch module names / ONNX weight names left dense")
    eval_samples: int = Field(16, gt=0)
    measure: bool = Field(True, description="also time before/after in ORT at profile threads (and count MACs for PyTorch)")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of rank or energy")
        return self


def choose_rank(s: np.ndarray, rank: Optional[int], energy: Optional[float]) -> int:
    """Rank to keep from singular values `s`: fixed, or the smallest keeping `energy` of the squared spectrum."""
    if rank is not None:
        return int(min(rank, len(s)))
    e = np.cumsum(s.astype(np.float64) ** 2)
    return int(min(len(s), np.searchsorted(e / e[-1], energy - 1e-12) + 1))


def factorize(w2d: np.ndarray, rank: Optional[int], energy: Optional[float]) -> Tuple[np.ndarray, np.ndarray, int]:
    """W (m x n) ~= A (m x r) @ B (r x n), singular values split evenly between the factors."""
    u, s, vt = np.linalg.svd(w2d.astype(np.float64), full_matrices=False)
    r = choose_rank(s, rank, energy)
    root = np.sqrt(s[:r])
    return (u[:, :r] * root).astype(np.float32), (root[:, None] * vt[:r]).astype(np.float32), r


def _worth(m: int, n: int, r: int, min_saving: float) -> bool:
    return r * (m + n) <= (1.0 - min_saving) * m * n


def lowrank_module(module: Any, *, rank: Optional[int] = None, energy: Optional[float] = None, min_saving: float = 0.1,
                   ignore: Optional[List[str]] = None) -> Tuple[Any, Dict[str, Any]]:
    """Python API: a copy of `module` with Linear/Conv2d layers replaced by two thinner layers (SVD)."""
    import torch
    import torch.nn as nn

    LowRankConfig(rank=rank, energy=energy, min_saving=min_saving)  # validates the arguments
    model = copy.deepcopy(module).eval()
    skip = set(ignore or [])
    layers: List[Dict[str, Any]] = []
    targets = [(n, m) for n, m in model.named_modules() if n not in skip and (
        isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1 and isinstance(m.padding, tuple)))]
    for name, m in targets:
        w = m.weight.detach().cpu().numpy()
        if isinstance(m, nn.Linear):
            a, b, r = factorize(w, rank, energy)
            if not _worth(w.shape[0], w.shape[1], r, min_saving):
                layers.append({"name": name, "shape": list(w.shape), "rank": r, "factorised": False})
                continue
            first = nn.Linear(m.in_features, r, bias=False)
            second = nn.Linear(r, m.out_features, bias=m.bias is not None)
            with torch.no_grad():
                first.weight.copy_(torch.from_numpy(b))
                second.weight.copy_(torch.from_numpy(a))
                if m.bias is not None:
                    second.bias.copy_(m.bias)
        else:
            o, i, kh, kw = w.shape
            a, b, r = factorize(w.reshape(o, i * kh * kw), rank, energy)
            if not _worth(o, i * kh * kw, r, min_saving):
                layers.append({"name": name, "shape": list(w.shape), "rank": r, "factorised": False})
                continue
            first = nn.Conv2d(i, r, (kh, kw), stride=m.stride, padding=m.padding, dilation=m.dilation, bias=False,
                              padding_mode=m.padding_mode)
            second = nn.Conv2d(r, o, 1, bias=m.bias is not None)
            with torch.no_grad():
                first.weight.copy_(torch.from_numpy(b.reshape(r, i, kh, kw)))
                second.weight.copy_(torch.from_numpy(a.reshape(o, r, 1, 1)))
                if m.bias is not None:
                    second.bias.copy_(m.bias)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, nn.Sequential(first, second))
        layers.append({"name": name, "shape": list(w.shape), "rank": r, "factorised": True})
    done = [lay for lay in layers if lay["factorised"]]
    return model, {"layers_factorised": len(done), "layers_kept_dense": len(layers) - len(done), "layers": layers}


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def lowrank_onnx(model: Any, *, rank: Optional[int] = None, energy: Optional[float] = None, min_saving: float = 0.1,
                 ignore: Optional[List[str]] = None) -> Tuple[Any, Dict[str, Any]]:
    """Factorise constant weights of MatMul (2-D), Gemm and Conv (group 1) nodes in an ONNX model (modified copy)."""
    from onnx import helper, numpy_helper

    from edgekit.core.compression import onnx_constants

    model = copy.deepcopy(model)
    consts = onnx_constants(model)
    uses: Dict[str, int] = {}
    for node in model.graph.node:
        for inp in node.input:
            uses[inp] = uses.get(inp, 0) + 1
    skip = set(ignore or [])
    new_nodes = []
    new_inits = []
    layers: List[Dict[str, Any]] = []
    for node in model.graph.node:
        wname = node.input[1] if len(node.input) > 1 else None
        ok = wname in consts and wname not in skip and uses.get(wname, 0) == 1
        w = consts[wname][0] if ok else None
        if not ok or w is None or w.dtype != np.float32:
            new_nodes.append(node)
            continue
        p = f"{node.name or wname}_lr"
        if node.op_type == "MatMul" and w.ndim == 2:
            # X @ W with W (in x out):  W = A @ B  ->  (X @ A) @ B
            a, b, r = factorize(w, rank, energy)
            if not _worth(*w.shape, r, min_saving):
                layers.append({"name": wname, "op": "MatMul", "shape": list(w.shape), "rank": r, "factorised": False})
                new_nodes.append(node)
                continue
            new_inits += [numpy_helper.from_array(a, p + "_a"), numpy_helper.from_array(b, p + "_b")]
            new_nodes += [helper.make_node("MatMul", [node.input[0], p + "_a"], [p + "_mid"], name=p + "_1"),
                          helper.make_node("MatMul", [p + "_mid", p + "_b"], list(node.output), name=p + "_2")]
        elif node.op_type == "Gemm" and w.ndim == 2 and _attr(node, "transA", 0) == 0:
            wt = w.T if _attr(node, "transB", 0) else w  # (in x out)
            a, b, r = factorize(wt, rank, energy)
            if not _worth(*wt.shape, r, min_saving):
                layers.append({"name": wname, "op": "Gemm", "shape": list(w.shape), "rank": r, "factorised": False})
                new_nodes.append(node)
                continue
            new_inits += [numpy_helper.from_array(a, p + "_a"), numpy_helper.from_array(b, p + "_b")]
            gemm_attrs = {"alpha": _attr(node, "alpha", 1.0), "beta": _attr(node, "beta", 1.0)}
            new_nodes += [helper.make_node("Gemm", [node.input[0], p + "_a"], [p + "_mid"], name=p + "_1"),
                          helper.make_node("Gemm", [p + "_mid", p + "_b", *node.input[2:]], list(node.output), name=p + "_2",
                                           **gemm_attrs)]
        elif node.op_type == "Conv" and w.ndim == 4 and _attr(node, "group", 1) == 1:
            o, i, kh, kw = w.shape
            a, b, r = factorize(w.reshape(o, i * kh * kw), rank, energy)
            if not _worth(o, i * kh * kw, r, min_saving):
                layers.append({"name": wname, "op": "Conv", "shape": list(w.shape), "rank": r, "factorised": False})
                new_nodes.append(node)
                continue
            new_inits += [numpy_helper.from_array(b.reshape(r, i, kh, kw), p + "_a"),
                          numpy_helper.from_array(a.reshape(o, r, 1, 1), p + "_b")]
            keep = {x.name: helper.get_attribute_value(x) for x in node.attribute if x.name != "group"}
            new_nodes += [helper.make_node("Conv", [node.input[0], p + "_a"], [p + "_mid"], name=p + "_1", **keep),
                          helper.make_node("Conv", [p + "_mid", p + "_b", *node.input[2:]], list(node.output), name=p + "_2",
                                           kernel_shape=[1, 1])]
        else:
            new_nodes.append(node)
            continue
        layers.append({"name": wname, "op": node.op_type, "shape": list(w.shape), "rank": r, "factorised": True})
    factorised = {lay["name"] for lay in layers if lay["factorised"]}
    # drop the now-unused dense weights (initializers or Constant nodes)
    kept_nodes = [n for n in new_nodes if not (n.op_type == "Constant" and n.output[0] in factorised)]
    kept_inits = [i for i in model.graph.initializer if i.name not in factorised]
    del model.graph.node[:]
    model.graph.node.extend(kept_nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits + new_inits)
    return model, {"layers_factorised": len(factorised), "layers_kept_dense": len(layers) - len(factorised), "layers": layers}


class LowRankStep(Step):
    """Replaces each big Linear/Conv by two thin ones (SVD); params, MACs and latency drop, at some fidelity cost."""

    name = "lowrank"
    summary = "SVD low-rank factorisation of Linear/Conv (PyTorch) or MatMul/Gemm/Conv (ONNX) weights."
    accepts = ("pytorch", "onnx")
    produces = "pytorch"  # "onnx" when given an ONNX model
    Config = LowRankConfig
    requires = (("torch", "torch"), ("onnx", "simplify"))

    def run(self, artifact: Artifact, config: LowRankConfig, ctx: StepContext) -> Artifact:
        from edgekit.core import compression as cr

        settings = {"rank": config.rank, "energy": config.energy, "min_saving": config.min_saving}
        if artifact.format == "onnx":
            import onnx

            cr.require_onnx_file(self.name, artifact)
            model, details = lowrank_onnx(onnx.load(str(artifact.path)), rank=config.rank, energy=config.energy,
                                          min_saving=config.min_saving, ignore=config.ignore)
            self._check(details)
            return cr.finish_onnx_step(self.name, artifact, model, ctx, {"method": "SVD low-rank (ONNX)", "settings": settings,
                                                                         "details": details, "notes": []},
                                       eval_samples=config.eval_samples, measure=config.measure)
        cr.require_module(self.name, artifact)
        model, details = lowrank_module(artifact.module, rank=config.rank, energy=config.energy,
                                        min_saving=config.min_saving, ignore=config.ignore)
        self._check(details)
        return cr.finish_module_step(self.name, artifact, model, ctx, {"method": "SVD low-rank", "settings": settings,
                                                                       "details": details, "notes": []},
                                     eval_samples=config.eval_samples, measure=config.measure)

    def _check(self, details: Dict[str, Any]) -> None:
        if details["layers_factorised"] == 0:
            from edgekit.core.errors import StepSkipped

            raise StepSkipped(f"no layer gets smaller at this rank/energy ({details['layers_kept_dense']} layers considered); "
                              "lower the rank or energy")

