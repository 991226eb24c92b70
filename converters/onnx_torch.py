"""ONNX graph -> trainable torch.nn.Module (an interpreter of the graph in torch ops), for QAT and fine-tuning.

Why not onnx2torch: it depends on torchvision, which has no CPU build matching torch 2.13 here (pip would pull torch
2.14 with CUDA wheels). This interpreter runs the graph node by node with torch functions; the float weights of
Conv/ConvTranspose/Gemm/MatMul become nn.Parameters (trainable), every other constant a buffer. The graph itself is
kept, so trained weights are written back into the same ONNX graph (`write_back`) and nothing is re-exported.
torch is imported by the caller (converters/qat.py imports this module inside `run`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from edgekit.core.errors import StepError

# ops whose input 1 (weight) and 2 (bias) are trained, and the weight's output-channel axis for per-channel INT8
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _attrs(node) -> Dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def weight_axis(node, attrs: Dict[str, Any], ndim: int) -> int:
    """Output-channel axis of a weight (per-channel quantization axis): Conv O..., ConvTranspose I,O/g..., MatMul K,N."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    return ndim - 1  # MatMul: X @ W, W (..., K, N)


def onnx_constants(model) -> Dict[str, np.ndarray]:
    """Every constant of the graph by name: initializers and outputs of Constant nodes."""
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            a = _attrs(node)
            if "value" in a:
                out[node.output[0]] = numpy_helper.to_array(a["value"])
            elif "value_float" in a:
                out[node.output[0]] = np.array(a["value_float"], dtype=np.float32)
            elif "value_int" in a:
                out[node.output[0]] = np.array(a["value_int"], dtype=np.int64)
            elif "value_floats" in a:
                out[node.output[0]] = np.array(a["value_floats"], dtype=np.float32)
            elif "value_ints" in a:
                out[node.output[0]] = np.array(a["value_ints"], dtype=np.int64)
    return out


def _copy_node(node):
    out = type(node)()
    out.CopyFrom(node)
    return out


def _ints(t) -> List[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else list(np.asarray(t).reshape(-1)))]


_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64}


def _pads(attrs: Dict[str, Any], nd: int) -> Tuple[List[int], bool]:
    """ONNX pads (begin..., end...) -> (symmetric torch padding or F.pad list, symmetric?)."""
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise ValueError("auto_pad SAME_* is not supported")
    if pads[:nd] == pads[nd:]:
        return pads[:nd], True
    fp: List[int] = []
    for i in reversed(range(nd)):
        fp += [pads[i], pads[i + nd]]
    return fp, False


class OnnxModule(torch.nn.Module):
    """Runs an ONNX graph with torch ops; trainable weights of Conv/ConvTranspose/Gemm/MatMul are Parameters.

    `hooks[(node_name, input_index)]` is a callable applied to that node input before the op (QAT puts fake
    quantizers there); `output_override` maps a graph output to another tensor name (e.g. the logits before Softmax).
    """

    def __init__(self, model, name: str = "model"):
        super().__init__()
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.name = name
        consts = onnx_constants(model)
        self.nodes = [_copy_node(n) for n in model.graph.node if n.op_type != "Constant"]  # own copies: exports edit the graph
        self.node_attrs = [{**_attrs(n), "_n_out": len(n.output)} for n in self.nodes]
        self.input_names = [i.name for i in model.graph.input if i.name not in consts]
        self.output_names = [o.name for o in model.graph.output]
        unknown = sorted({n.op_type for n in self.nodes if not hasattr(self, "_op_" + n.op_type)})
        if unknown:
            raise StepError("qat", f"{name}: ONNX ops {', '.join(unknown)} have no torch implementation in edgekit's ONNX->torch interpreter",
                            hint="give the PyTorch source instead, or use post-training INT8 (--precision int8 without QAT)")
        # names of trainable weights: float constants used as weight/bias of a weighted op
        trainable: Dict[str, Tuple[str, int]] = {}
        for node in self.nodes:
            if node.op_type in WEIGHTED_OPS:
                for idx in (1, 2):
                    if len(node.input) > idx and node.input[idx] in consts and consts[node.input[idx]].dtype == np.float32:
                        trainable.setdefault(node.input[idx], (node.name, idx))
        self.param_names: Dict[str, str] = {}  # onnx name -> attribute name
        self.params = torch.nn.ParameterDict()
        self.consts: Dict[str, torch.Tensor] = {}
        for i, (cname, arr) in enumerate(consts.items()):
            if cname in trainable:
                key = f"w{i}"
                self.param_names[cname] = key
                self.params[key] = torch.nn.Parameter(torch.from_numpy(np.array(arr, copy=True)))
            else:
                self.consts[cname] = torch.from_numpy(np.array(arr, copy=True)) if arr.dtype != object else arr
        self.hooks: Dict[Tuple[str, int], Callable[[torch.Tensor], torch.Tensor]] = {}
        self.output_override: Dict[str, str] = {}

    def value_of(self, name: str) -> torch.Tensor:
        key = self.param_names.get(name)
        return self.params[key] if key is not None else self.consts[name]

    def trained_weights(self) -> Dict[str, np.ndarray]:
        return {onnx_name: self.params[key].detach().cpu().numpy() for onnx_name, key in self.param_names.items()}

    def forward(self, *args, **kwargs) -> List[torch.Tensor]:
        return self.run_from(dict(zip(self.input_names, args), **kwargs))

    def run_from(self, start: Dict[str, Any], outputs: Optional[Sequence[str]] = None) -> List[torch.Tensor]:
        """Run the graph from the tensors in `start` (graph inputs, or any intermediate tensors: then only the nodes
        computable from them run, e.g. the tail of a network above a cached feature map); returns `outputs`
        (default: the graph outputs, with `output_override`)."""
        env: Dict[str, Any] = {"": None}
        env.update(start)
        partial = not all(n in start for n in self.input_names)
        for node, attrs in zip(self.nodes, self.node_attrs):
            if partial and any(n and n not in env and n not in self.param_names and n not in self.consts for n in node.input):
                continue  # depends on a tensor upstream of `start`
            ins = []
            for idx, n in enumerate(node.input):
                if n == "":
                    v = None
                elif n in env:
                    v = env[n]
                else:
                    v = self.value_of(n)
                hook = self.hooks.get((node.name, idx))
                if hook is not None and v is not None:
                    v = hook(v)
                ins.append(v)
            try:
                outs = getattr(self, "_op_" + node.op_type)(ins, attrs)
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                raise StepError("qat", f"{self.name}: node {node.name or node.op_type} ({node.op_type}) failed in the ONNX->torch interpreter",
                                hint="this op's form is not supported yet; give the PyTorch source or use post-training INT8",
                                node=node.name, op=node.op_type, tool_message=f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for oname, o in zip(node.output, outs):
                env[oname] = o
            if outputs is not None and all(n in env for n in outputs):
                break  # the rest of the graph is not needed
        names = list(outputs) if outputs is not None else [self.output_override.get(o, o) for o in self.output_names]
        missing = [n for n in names if n not in env]
        if missing:
            raise StepError("qat", f"{self.name}: tensor(s) {', '.join(missing)} cannot be computed from {', '.join(sorted(start))}",
                            hint="start from a tensor every later node depends on (or from the graph inputs)")
        return [env[n] for n in names]

    # ------------------------------------------------------------------ elementwise
    def _op_Add(self, i, a):
        return i[0] + i[1]

    def _op_Sub(self, i, a):
        return i[0] - i[1]

    def _op_Mul(self, i, a):
        return i[0] * i[1]

    def _op_Div(self, i, a):
        if not i[0].is_floating_point() and not i[1].is_floating_point():
            return torch.div(i[0], i[1], rounding_mode="trunc")
        return i[0] / i[1]

    def _op_Pow(self, i, a):
        return torch.pow(i[0], i[1])

    def _op_Sqrt(self, i, a):
        return torch.sqrt(i[0])

    def _op_Exp(self, i, a):
        return torch.exp(i[0])

    def _op_Log(self, i, a):
        return torch.log(i[0])

    def _op_Neg(self, i, a):
        return -i[0]

    def _op_Abs(self, i, a):
        return torch.abs(i[0])

    def _op_Reciprocal(self, i, a):
        return 1.0 / i[0]

    def _op_Erf(self, i, a):
        return torch.erf(i[0])

    def _op_Tanh(self, i, a):
        return torch.tanh(i[0])

    def _op_Sigmoid(self, i, a):
        return torch.sigmoid(i[0])

    def _op_Relu(self, i, a):
        return F.relu(i[0])

    def _op_LeakyRelu(self, i, a):
        return F.leaky_relu(i[0], a.get("alpha", 0.01))

    def _op_HardSigmoid(self, i, a):
        return torch.clamp(i[0] * a.get("alpha", 0.2) + a.get("beta", 0.5), 0.0, 1.0)

    def _op_HardSwish(self, i, a):
        return F.hardswish(i[0])

    def _op_Clip(self, i, a):
        lo = i[1] if len(i) > 1 and i[1] is not None else a.get("min")
        hi = i[2] if len(i) > 2 and i[2] is not None else a.get("max")
        lo = float(lo) if lo is not None else None
        hi = float(hi) if hi is not None else None
        return torch.clamp(i[0], lo, hi)

    def _op_Sum(self, i, a):
        out = i[0]
        for t in i[1:]:
            out = out + t
        return out

    def _op_Equal(self, i, a):
        return i[0] == i[1]

    def _op_Where(self, i, a):
        return torch.where(i[0].bool(), i[1], i[2])

    def _op_Identity(self, i, a):
        return i[0]

    def _op_Dropout(self, i, a):
        return i[0]

    def _op_Cast(self, i, a):
        return i[0].to(_DTYPES[int(a["to"])])

    # ------------------------------------------------------------------ shapes
    def _op_Shape(self, i, a):
        s = torch.tensor(list(i[0].shape), dtype=torch.int64)
        return s[a.get("start", 0): a.get("end", None)]

    def _op_Reshape(self, i, a):
        shape = _ints(i[1])
        shape = [i[0].shape[k] if (v == 0 and not a.get("allowzero", 0)) else v for k, v in enumerate(shape)]
        return i[0].reshape(shape)

    def _op_Flatten(self, i, a):
        ax = a.get("axis", 1) % max(i[0].dim(), 1)
        return i[0].reshape(int(np.prod(i[0].shape[:ax])), -1)

    def _op_Transpose(self, i, a):
        perm = a.get("perm") or list(reversed(range(i[0].dim())))
        return i[0].permute(*perm)

    def _axes(self, i, a, idx: int = 1) -> Optional[List[int]]:
        if len(i) > idx and i[idx] is not None:
            return _ints(i[idx])
        return list(a["axes"]) if "axes" in a else None

    def _op_Squeeze(self, i, a):
        axes = self._axes(i, a)
        if axes is None:
            return i[0].squeeze()
        out = i[0]
        for ax in sorted((x % out.dim() for x in axes), reverse=True):
            out = out.squeeze(ax)
        return out

    def _op_Unsqueeze(self, i, a):
        axes = self._axes(i, a)
        out = i[0]
        nd = out.dim() + len(axes)
        for ax in sorted(x % nd for x in axes):
            out = out.unsqueeze(ax)
        return out

    def _op_Concat(self, i, a):
        return torch.cat([t for t in i if t is not None], dim=a["axis"])

    def _op_Slice(self, i, a):
        if len(i) > 1:
            starts, ends = _ints(i[1]), _ints(i[2])
            axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else list(range(len(starts)))
            steps = _ints(i[4]) if len(i) > 4 and i[4] is not None else [1] * len(starts)
        else:
            starts, ends = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        out = i[0]
        for s, e, ax, st in zip(starts, ends, axes, steps):
            dim = out.shape[ax]
            if st < 0:
                raise ValueError("negative Slice steps are not supported")
            s = max(0, min(dim, s + dim if s < 0 else s))
            e = max(0, min(dim, e + dim if e < 0 else e))
            index = [slice(None)] * out.dim()
            index[ax] = slice(s, max(s, e), st)
            out = out[tuple(index)]
        return out

    def _op_Gather(self, i, a):
        idx = i[1].long()
        ax = a.get("axis", 0)
        dim = i[0].shape[ax]
        idx = torch.where(idx < 0, idx + dim, idx)
        out = torch.index_select(i[0], ax, idx.reshape(-1))
        return out.reshape(*i[0].shape[:ax], *idx.shape, *i[0].shape[ax + 1:])

    def _op_Expand(self, i, a):
        shape = _ints(i[1])
        return i[0] * torch.ones(shape, dtype=i[0].dtype)

    def _op_ConstantOfShape(self, i, a):
        val = numpy_helper.to_array(a["value"]).reshape(-1)[0] if "value" in a else np.float32(0)
        return torch.full(_ints(i[0]), torch.tensor(val).item(), dtype=torch.from_numpy(np.array([val])).dtype)

    def _op_Split(self, i, a):
        ax = a.get("axis", 0)
        split = _ints(i[1]) if len(i) > 1 and i[1] is not None else a.get("split")
        if split is None:
            n = a.get("num_outputs") or a["_n_out"]
            return torch.chunk(i[0], n, dim=ax)
        return torch.split(i[0], list(split), dim=ax)

    # ------------------------------------------------------------------ reductions, normalisation
    def _op_ReduceMean(self, i, a):
        axes = self._axes(i, a) if self.opset >= 18 else (list(a["axes"]) if "axes" in a else None)
        keep = bool(a.get("keepdims", 1))
        return i[0].mean() if axes is None else i[0].mean(dim=axes, keepdim=keep)

    def _op_ReduceSum(self, i, a):
        axes = self._axes(i, a) if self.opset >= 13 else (list(a["axes"]) if "axes" in a else None)
        keep = bool(a.get("keepdims", 1))
        return i[0].sum() if axes is None else i[0].sum(dim=axes, keepdim=keep)

    def _op_Softmax(self, i, a):
        ax = a.get("axis", -1 if self.opset >= 13 else 1)
        if self.opset < 13 and ax != -1 and ax != i[0].dim() - 1:
            shape = i[0].shape
            return F.softmax(i[0].reshape(int(np.prod(shape[:ax])), -1), dim=-1).reshape(shape)
        return F.softmax(i[0], dim=ax)

    def _op_BatchNormalization(self, i, a):
        return F.batch_norm(i[0], i[3], i[4], i[1], i[2], training=False, eps=a.get("epsilon", 1e-5))

    def _op_LayerNormalization(self, i, a):
        ax = a.get("axis", -1) % i[0].dim()
        return F.layer_norm(i[0], i[0].shape[ax:], i[1], i[2] if len(i) > 2 else None, eps=a.get("epsilon", 1e-5))

    def _op_GlobalAveragePool(self, i, a):
        return i[0].mean(dim=tuple(range(2, i[0].dim())), keepdim=True)

    def _op_GlobalMaxPool(self, i, a):
        return i[0].amax(dim=tuple(range(2, i[0].dim())), keepdim=True)

    def _pool(self, fn, i, a, **kw):
        nd = i[0].dim() - 2
        pads, sym = _pads(a, nd)
        x = i[0]
        if not sym:
            x = F.pad(x, pads, value=float("-inf") if fn is F.max_pool2d else 0.0)
            pads = [0] * nd
        return fn(x, a["kernel_shape"], stride=a.get("strides", [1] * nd), padding=pads, ceil_mode=bool(a.get("ceil_mode", 0)), **kw)

    def _op_AveragePool(self, i, a):
        if i[0].dim() != 4:
            raise ValueError("only 2-D AveragePool is supported")
        return self._pool(F.avg_pool2d, i, a, count_include_pad=bool(a.get("count_include_pad", 0)))

    def _op_MaxPool(self, i, a):
        if i[0].dim() != 4:
            raise ValueError("only 2-D MaxPool is supported")
        return self._pool(F.max_pool2d, i, a)

    def _op_Resize(self, i, a):
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        scales = i[2] if len(i) > 2 and i[2] is not None and i[2].numel() else None
        sizes = i[3] if len(i) > 3 and i[3] is not None and i[3].numel() else None
        ctm = a.get("coordinate_transformation_mode", b"half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        kw: Dict[str, Any] = {}
        if sizes is not None:
            kw["size"] = _ints(sizes)[2:]
        else:
            kw["scale_factor"] = [float(s) for s in scales.tolist()[2:]]
        if mode == "nearest":
            return F.interpolate(i[0], mode="nearest", **kw)
        if mode == "linear":
            return F.interpolate(i[0], mode="bilinear", align_corners=ctm == "align_corners", **kw)
        raise ValueError(f"Resize mode {mode} is not supported")

    # ------------------------------------------------------------------ weighted ops
    def _op_Conv(self, i, a):
        x, w = i[0], i[1]
        nd = x.dim() - 2
        pads, sym = _pads(a, nd)
        if not sym:
            x = F.pad(x, pads)
            pads = [0] * nd
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
        return fn(x, w, i[2] if len(i) > 2 else None, stride=a.get("strides", [1] * nd), padding=pads,
                  dilation=a.get("dilations", [1] * nd), groups=a.get("group", 1))

    def _op_ConvTranspose(self, i, a):
        x, w = i[0], i[1]
        nd = x.dim() - 2
        pads, sym = _pads(a, nd)
        if not sym or "output_shape" in a:
            raise ValueError("asymmetric pads / output_shape on ConvTranspose are not supported")
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
        return fn(x, w, i[2] if len(i) > 2 else None, stride=a.get("strides", [1] * nd), padding=pads,
                  output_padding=a.get("output_padding", [0] * nd), groups=a.get("group", 1), dilation=a.get("dilations", [1] * nd))

    def _op_MatMul(self, i, a):
        return torch.matmul(i[0], i[1])

    def _op_Gemm(self, i, a):
        x = i[0].t() if a.get("transA", 0) else i[0]
        w = i[1].t() if a.get("transB", 0) else i[1]
        out = a.get("alpha", 1.0) * (x @ w)
        if len(i) > 2 and i[2] is not None:
            out = out + a.get("beta", 1.0) * i[2]
        return out


def logit_outputs(model) -> Dict[str, str]:
    """Graph outputs produced by a Softmax over the last axis: distil their logits (the Softmax input) instead."""
    out = {}
    producers = {o: n for n in model.graph.node for o in n.output}
    for o in model.graph.output:
        node = producers.get(o.name)
        if node is not None and node.op_type == "Softmax":
            out[o.name] = node.input[0]
    return out


def to_torch_inputs(feed: Dict[str, np.ndarray], names: Sequence[str]) -> List[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names]


def replace_constants(model, values: Dict[str, np.ndarray]) -> None:
    """Give constants (initializers or Constant-node outputs) new values in place: each becomes an initializer."""
    names = set(values)
    nodes = [n for n in model.graph.node if not (n.op_type == "Constant" and n.output[0] in names)]
    inits = [i for i in model.graph.initializer if i.name not in names]
    inits += [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in values.items()]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
