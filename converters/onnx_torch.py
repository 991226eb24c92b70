"""ONNX graph -> trainable torch.nn.Module (an interpreter of the graph in torch ops), for QAT and fine-tuning.

Why not onnx2torch: it depends on torchvision, which has no CPU build matching torch 2.13 here (pip would pull torch
2.14 with CUDA wheels). This interpreter runs the graph node by node with torch functions; the float weights of
Conv/ConvTranspose/Gemm/MatMul become nn.Parameters (trainable), every other constant a buffer. The graph itself is
kept, so trained weights are written back into the same ONNX graph (`write_back`) and nothing is re-exported.
torch is imported by the caller (converters/qat.py imports this module inside `run`).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from edgekit.core.errors import StepError

# torch 2.13 marks its quantized tensor types deprecated; fake_quant_per_tensor uses them only for their vectorised
# quantize/dequantize kernels and falls back to torch.fake_quantize_per_tensor_affine when they are gone
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")

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
        # fast: forward() from the graph inputs runs a plan built once per input shape (see `_plan`): shape arithmetic
        # and other constant-only nodes folded, elementwise chains fused; run_from() on inner tensors stays unplanned
        self.fast = False
        self._plans: Dict[Tuple, List[Tuple]] = {}

    def value_of(self, name: str) -> torch.Tensor:
        key = self.param_names.get(name)
        return self.params[key] if key is not None else self.consts[name]

    def trained_weights(self) -> Dict[str, np.ndarray]:
        return {onnx_name: self.params[key].detach().cpu().numpy() for onnx_name, key in self.param_names.items()}

    def observe(self, hooks: Dict[Tuple[str, int], Any], batches: Iterable[Sequence[Dict[str, np.ndarray]]]) -> None:
        """Forward (no grad) over `batches` (each a list of feeds, concatenated per input) with `hooks` in place of
        the module's own, which are restored afterwards: for hooks that only look at node inputs (statistics, shapes)."""
        saved = self.hooks
        self.hooks = hooks
        try:
            with torch.no_grad():
                for chunk in batches:
                    self(*[torch.from_numpy(np.ascontiguousarray(np.concatenate([f[n] for f in chunk]))) for n in self.input_names])
        finally:
            self.hooks = saved

    def forward(self, *args, **kwargs) -> List[torch.Tensor]:
        start = dict(zip(self.input_names, args), **kwargs)
        if self.fast and all(n in start for n in self.input_names):
            return self._run_plan(start)
        return self.run_from(start)

    # ------------------------------------------------------------------ planned (fast) execution
    def _plan(self, start: Dict[str, Any]) -> List[Tuple]:
        """Execution plan for graph inputs of these shapes: every node whose inputs are all non-trainable constants or
        shapes (Shape of any tensor: the input shapes are fixed per plan) is computed once here and its outputs become
        constants; elementwise chains on the rest are fused (Mul/Add by constants -> one addcmul, the Add 3 / Clip 0..6
        / Mul / Div 6 pattern -> hardswish). Hooked node inputs (fake quantizers) stay as they are. Each entry:
        (node name, function, input refs, output names); a ref is ("env", name) or ("val", constant)."""
        key = (tuple((n, tuple(start[n].shape), start[n].dtype) for n in self.input_names),
               tuple(sorted(self.hooks)), tuple(sorted(self.output_override.items())))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        with torch.no_grad():
            env: Dict[str, Any] = dict(start)
            static: Dict[str, Any] = {}
            for node, attrs in zip(self.nodes, self.node_attrs):
                ins = [None if not n else env[n] if n in env else self.value_of(n) for n in node.input]
                hooked = any((node.name, k) in self.hooks for k in range(len(node.input)))
                outs = getattr(self, "_op_" + node.op_type)(ins, attrs)  # no hooks: observers must not see this run
                outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
                is_static = not hooked and (node.op_type == "Shape" or all(
                    (not n) or n in static or (n in self.consts and n not in self.param_names) for n in node.input))
                for o, v in zip(node.output, outs):
                    env[o] = v
                    if is_static:
                        static[o] = v
        wanted = {self.output_override.get(o, o) for o in self.output_names}
        live = [(node, attrs) for node, attrs in zip(self.nodes, self.node_attrs) if not all(o in static for o in node.output)]
        uses: Dict[str, int] = {}
        for node, _ in live:
            for n in node.input:
                uses[n] = uses.get(n, 0) + 1
        for w in wanted:
            uses[w] = uses.get(w, 0) + 1
        producer = {o: k for k, (node, _) in enumerate(live) for o in node.output}

        def const(name: str):
            if name in static:
                return static[name]
            if name in self.consts and name not in self.param_names:
                return self.consts[name]
            return None

        def scalar(name: str) -> Optional[float]:
            v = const(name)
            if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() == 1:
                return float(v.reshape(-1)[0])
            return None

        def ref(name: str):
            if not name:
                return ("val", None)
            v = const(name)
            return ("val", v) if v is not None and name not in self.param_names else ("env", name)

        def only_use(k: int, op: str) -> Optional[int]:
            """Index of the single live consumer of node k's output if it is `op` and the output is not wanted elsewhere."""
            out = live[k][0].output[0]
            if uses.get(out, 0) != 1 or len(live[k][0].output) != 1:
                return None
            j = next((j for j in range(k + 1, len(live)) if out in live[j][0].input), None)
            return j if j is not None and live[j][0].op_type == op else None

        def unhooked(k: int) -> bool:
            node = live[k][0]
            return not any((node.name, i) in self.hooks for i in range(len(node.input)))

        plan: List[Tuple] = []
        done = set()
        for k, (node, attrs) in enumerate(live):
            if k in done:
                continue
            op = node.op_type
            # Mul(x, c) -> Add(., c2): x * c + c2 in one pass (c, c2 constants, e.g. PP-LCNetV3's learnable affine blocks)
            if op == "Mul" and unhooked(k):
                cs = [const(n) for n in node.input]
                xi = 1 if cs[0] is not None and cs[1] is None else 0 if cs[1] is not None and cs[0] is None else None
                j = only_use(k, "Add") if xi is not None else None
                if j is not None and unhooked(j):
                    add = live[j][0]
                    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
                    c2 = const(other)
                    if c2 is not None and c2.is_floating_point() and cs[1 - xi].is_floating_point():
                        plan.append((add.name, _addcmul, [("val", c2), ("env", node.input[xi]), ("val", cs[1 - xi])], list(add.output)))
                        done.add(j)
                        continue
            # Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(., 6): hardswish(x)
            if op == "Add" and unhooked(k):
                xi = 0 if scalar(node.input[1]) == 3.0 else 1 if scalar(node.input[0]) == 3.0 else None
                j = only_use(k, "Clip") if xi is not None else None
                m = only_use(j, "Mul") if j is not None else None
                d = only_use(m, "Div") if m is not None else None
                if d is not None and all(unhooked(t) for t in (j, m, d)):
                    x = node.input[xi]
                    clip, mul, div = live[j][0], live[m][0], live[d][0]
                    lo = scalar(clip.input[1]) if len(clip.input) > 1 and clip.input[1] else live[j][1].get("min")
                    hi = scalar(clip.input[2]) if len(clip.input) > 2 and clip.input[2] else live[j][1].get("max")
                    if (lo == 0.0 and hi == 6.0 and set(mul.input) == {x, clip.output[0]} and div.input[0] == mul.output[0]
                            and scalar(div.input[1]) == 6.0 and uses.get(x, 0) >= 2):
                        plan.append((div.name, _hardswish, [("env", x)], list(div.output)))
                        done.update((j, m, d))
                        continue
            fn = getattr(self, "_op_" + op)
            if op == "Conv" and attrs.get("group", 1) > 1 and len(node.input) > 1:
                wv = self.value_of(node.input[1]) if node.input[1] in self.param_names or node.input[1] in self.consts else None
                if isinstance(wv, torch.Tensor) and wv.dim() == 4 and wv.shape[1] == 1:
                    fn = self._depthwise  # depthwise: torch's NCHW backward is ~1.6x slower than channels_last here
            plan.append((node.name, _NodeFn(fn, attrs), [ref(n) for n in node.input], list(node.output)))
        self._plans[key] = plan
        return plan

    def _run_plan(self, start: Dict[str, Any]) -> List[torch.Tensor]:
        plan = self._plan(start)
        env: Dict[str, Any] = dict(start)
        params = self.params
        for name, fn, refs, outs in plan:
            ins = []
            for idx, (kind, v) in enumerate(refs):
                if kind == "env":
                    key = self.param_names.get(v)
                    v = params[key] if key is not None else env[v]
                hook = self.hooks.get((name, idx))
                if hook is not None and v is not None:
                    v = hook(v)
                ins.append(v)
            res = fn(ins)
            if not isinstance(res, (list, tuple)):
                res = [res]
            for o, r in zip(outs, res):
                env[o] = r
        return [env[self.output_override.get(o, o)] for o in self.output_names]

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
        return out.reshape((*i[0].shape[:ax], *idx.shape, *i[0].shape[ax + 1:]))  # a scalar index drops the axis

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

    def _depthwise(self, i, a):
        """Depthwise 2-D Conv computed in channels_last memory format (same values); output back to contiguous NCHW."""
        cl = torch.channels_last
        return self._op_Conv([i[0].contiguous(memory_format=cl), i[1].contiguous(memory_format=cl), *i[2:]], a).contiguous()

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


class _NodeFn:
    def __init__(self, fn, attrs):
        self.fn, self.attrs = fn, attrs

    def __call__(self, ins):
        return self.fn(ins, self.attrs)


class _FakeQuantFrozen(torch.autograd.Function):
    """Per-tensor fake quantization as ONNX QuantizeLinear/DequantizeLinear compute it (x / scale rounded half to even,
    + zero point, clamped to [qmin, qmax], back to float) through torch's vectorised quantize/dequantize kernels, and
    the straight-through gradient (the incoming gradient where the rounded value lies in [qmin, qmax], 0 elsewhere).
    Values equal ONNX's and torch.fake_quantize_per_tensor_affine's except at exact .5 ties of x / scale, where the
    kernels differ in whether the zero point is added before rounding (10 of 1.8 M random activations in a test). On a PP-OCRv4 rec activation
    (8x240x12x80) torch's fake-quant op takes ~8 ms on one core, these two kernels a fraction of that."""

    @staticmethod
    def forward(ctx, x, scale: float, zero_point: int, qmin: int, qmax: int):
        dtype = torch.quint8 if (qmin, qmax) == (0, 255) else torch.qint8
        ctx.save_for_backward(x)
        ctx.q = (scale, zero_point, qmin, qmax)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the quantized dtypes' deprecation notice
            return torch.quantize_per_tensor(x.contiguous(), scale, zero_point, dtype).dequantize()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        scale, zp, qmin, qmax = ctx.q
        r = torch.round(x * (1.0 / scale))
        return grad * ((r >= qmin - zp) & (r <= qmax - zp)), None, None, None, None


def fake_quant_per_tensor(x, scale: float, zero_point: int, qmin: int, qmax: int):
    """Per-tensor fake quantization with fixed (not learned) scale and zero point, same values as
    torch.fake_quantize_per_tensor_affine; the fast kernels need the full u8 [0, 255] or s8 [-128, 127] range."""
    if (qmin, qmax) not in ((0, 255), (-128, 127)) or not hasattr(torch, "quantize_per_tensor"):
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
    return _FakeQuantFrozen.apply(x, float(scale), int(zero_point), qmin, qmax)


def _addcmul(i):
    return torch.addcmul(i[0], i[1], i[2])


def _hardswish(i):
    return F.hardswish(i[0])


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
