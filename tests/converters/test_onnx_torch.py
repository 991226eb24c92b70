"""The ONNX->torch module's planned (fast) forward: constant/shape folding, fused elementwise chains and channels_last
depthwise convs compute what the node-by-node interpreter computes, with and without QAT's fake quantizers, in the
forward and in the gradients; and the fast per-tensor fake quantizer rounds like ONNX QuantizeLinear."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

from edgekit.converters.onnx_torch import OnnxModule, fake_quant_per_tensor  # noqa: E402


def _chain_model():
    """Conv -> x*a+b -> hardswish as Add 3 / Clip 0..6 / Mul / Div 6 (PP-LCNetV3's export) -> x*a2+b2 -> depthwise
    Conv -> 1x1 Conv -> Reshape to a shape computed from Shape/Gather/Concat at run time -> MatMul."""
    rng = np.random.default_rng(0)

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr, dtype=np.float32) if np.asarray(arr).dtype.kind == "f" else np.asarray(arr), name)

    inits = [
        init("w1", rng.normal(size=(8, 3, 3, 3)) * 0.3), init("b1", rng.normal(size=8) * 0.1),
        init("a", [1.3]), init("b", [-0.2]), init("three", [3.0]), init("zero", np.float32(0)), init("six", np.float32(6)),
        init("six_d", [6.0]), init("a2", [0.7]), init("b2", [0.05]),
        init("wd", rng.normal(size=(8, 1, 3, 3)) * 0.3), init("w2", rng.normal(size=(6, 8, 1, 1)) * 0.3), init("b2c", rng.normal(size=6) * 0.1),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "i0"), numpy_helper.from_array(np.array([-1], dtype=np.int64), "m1"),
        init("wm", rng.normal(size=(6 * 8 * 8, 5)) * 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["a", "c1"], ["m1o"], name="mul1"),
        helper.make_node("Add", ["m1o", "b"], ["u"], name="add1"),
        helper.make_node("Add", ["u", "three"], ["u3"], name="add3"),
        helper.make_node("Clip", ["u3", "zero", "six"], ["cl"], name="clip"),
        helper.make_node("Mul", ["u", "cl"], ["uc"], name="mulhs"),
        helper.make_node("Div", ["uc", "six_d"], ["hs"], name="div6"),
        helper.make_node("Mul", ["hs", "a2"], ["m2"], name="mul2"),
        helper.make_node("Add", ["b2", "m2"], ["v"], name="add2"),
        helper.make_node("Conv", ["v", "wd"], ["dw"], name="dwconv", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["dw", "w2", "b2c"], ["c2"], name="conv2"),
        helper.make_node("Shape", ["c2"], ["sh"], name="shape"),
        helper.make_node("Gather", ["sh", "i0"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], name="unsq", axes=[0]),
        helper.make_node("Concat", ["n1", "m1"], ["newshape"], name="concat", axis=0),
        helper.make_node("Reshape", ["c2", "newshape"], ["flat"], name="reshape"),
        helper.make_node("Reshape", ["flat", "newshape"], ["flat2"], name="reshape2"),
        helper.make_node("MatMul", ["flat2", "wm"], ["y"], name="head"),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _quantize(module):
    from edgekit.converters.onnx_torch import weight_axis
    from edgekit.converters.qat import QUANT_OPS, _ActQuant, _WeightQuant

    acts = {}
    for node, attrs in zip(module.nodes, module.node_attrs):
        if node.op_type in QUANT_OPS and node.input[1] in module.param_names:
            w = module.value_of(node.input[1])
            a = acts.setdefault(node.input[0], _ActQuant(torch, False))
            module.hooks[(node.name, 0)] = a
            module.hooks[(node.name, 1)] = _WeightQuant(torch, weight_axis(node, attrs, w.dim()))
    return acts


def test_planned_forward_folds_and_fuses_and_matches_the_interpreter_on_ppocr_rec(ppocr_rec_path):
    from edgekit.zoo import models as zoo

    feeds = zoo.resolve("zoo:ppocr-rec").eval_feeds(2, shapes={"x": [1, 3, 48, 160]})
    x = torch.from_numpy(np.concatenate([f["x"] for f in feeds]))
    module = OnnxModule(onnx.load(str(ppocr_rec_path)), "rec").eval()
    with torch.no_grad():
        ref = module(x)[0]
        module.fast = True
        got = module(x)[0]
    plan = next(iter(module._plans.values()))
    fns = [getattr(fn, "__name__", "") for _, fn, _, _ in plan]
    assert fns.count("_hardswish") >= 20 and fns.count("_addcmul") >= 40  # PP-LCNetV3's affine + hardswish chains
    assert len(plan) < 0.65 * len(module.nodes)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() < 1e-4
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("frozen", [False, True])
def test_planned_forward_and_gradients_match_the_interpreter_with_fake_quantizers(frozen):
    model = _chain_model()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32))
    outs, grads = [], []
    for fast in (False, True):
        module = OnnxModule(model, "chain").eval()
        acts = _quantize(module)
        module.fast = fast
        with torch.no_grad():
            module(x)  # observe ranges
        for a in acts.values():
            a.init_ranges()
            if frozen:
                a.scale.requires_grad_(False)
                a.zero_point.requires_grad_(False)
        y = module(x)[0]
        (y.square().sum()).backward()
        outs.append(y.detach())
        grads.append({k: p.grad.clone() for k, p in module.params.items()})
        if fast:
            fns = [getattr(fn, "__name__", "") for _, fn, _, _ in next(iter(module._plans.values()))]
            assert "_hardswish" in fns and "_addcmul" in fns
            names = {name for name, *_ in next(iter(module._plans.values()))}
            assert not names & {"shape", "gather", "unsq", "concat"}  # shape arithmetic folded into constants
    assert torch.allclose(outs[0], outs[1], atol=1e-4, rtol=1e-4)
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-3, rtol=1e-3), k


def test_plan_follows_hooks_added_after_it_was_built():
    module = OnnxModule(_chain_model(), "chain").eval()
    module.fast = True
    x = torch.ones(2, 3, 8, 8)
    with torch.no_grad():
        before = module(x)[0]
        module.hooks[("head", 0)] = lambda v: v * 0.0
        after = module(x)[0]
    assert not torch.allclose(before, after) and torch.count_nonzero(after) == 0
    assert len(module._plans) == 2


@pytest.mark.parametrize("qmin, qmax, zp", [(0, 255, 77), (-128, 127, 0)])
def test_fast_fake_quant_rounds_like_onnx_quantize_linear(qmin, qmax, zp):
    scale = 0.021
    rng = np.random.default_rng(0)
    # random values plus exact .5 ties of x / scale, in range and beyond both ends
    xs = np.concatenate([rng.normal(size=20000) * 3, (np.arange(-300, 300) + 0.5) * scale]).astype(np.float32)
    x = torch.from_numpy(xs).requires_grad_()
    got = fake_quant_per_tensor(x, scale, zp, qmin, qmax)
    # ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zp); DequantizeLinear: (q - zp) * scale
    q = np.clip(np.rint(xs / np.float32(scale)) + zp, qmin, qmax)
    want = ((q - zp) * np.float32(scale)).astype(np.float32)
    ratio = xs * np.float32(1 / scale)
    tie = np.abs(np.abs(ratio - np.floor(ratio)) - 0.5) < 1e-3
    off = np.abs(got.detach().numpy() - want) > 1e-6
    assert not (off & ~tie).any()  # only exact .5 ties may round the other way
    assert (np.abs(got.detach().numpy() - want) <= scale * 1.0001).all()
    torch_fq = torch.fake_quantize_per_tensor_affine(x.detach(), scale, zp, qmin, qmax).numpy()
    assert not ((got.detach().numpy() != torch_fq) & ~tie).any()
    (g,) = torch.autograd.grad(got.sum(), x)
    inside = (np.rint(xs / np.float32(scale)) + zp >= qmin) & (np.rint(xs / np.float32(scale)) + zp <= qmax)
    assert np.array_equal(g.numpy()[~tie], inside[~tie].astype(np.float32))  # straight-through inside the range, 0 outside
