"""Graph queries on OpenVINO models for the INT8 search: which ops NNCF quantized, attention MatMuls, ranked ancestors."""

from __future__ import annotations

from typing import Dict, List


def quantized_names(model) -> List[str]:
    """Friendly names of the ops that NNCF put a quantizer in front of."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() not in ("FakeQuantize", "Convert") and is_quantized(op)]


def attention_matmuls(model) -> List[str]:
    """Attention: fused attention ops, or MatMuls whose two inputs are both computed (Q·K^T, P·V), not a weight."""

    def is_weight(node) -> bool:
        while node.get_type_name() in ("Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze") and node.get_input_size():
            node = node.input_value(0).get_node()
        return node.get_type_name() == "Constant"

    # ov.convert_model may already have fused attention into one op (it does for the legacy-exported MiniLM)
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in ("ScaledDotProductAttention", "MultiHeadAttention")
            or (op.get_type_name() == "MatMul" and not any(is_weight(op.input_value(i).get_node()) for i in range(2)))]


def is_quantized(op) -> bool:
    """True if any input of `op` comes (possibly through a Convert) from a FakeQuantize."""
    for inp in op.inputs():
        src = inp.get_source_output().get_node()
        if src.get_type_name() == "Convert":
            src = src.input(0).get_source_output().get_node()
        if src.get_type_name() == "FakeQuantize":
            return True
    return False


def weighted_ancestors(op, order: Dict[str, int]) -> List[str]:
    """Nearest ranked (quantized) ops upstream of `op`, walking through the others."""
    seen = set()
    found: List[str] = []
    stack = [inp.get_source_output().get_node() for inp in op.inputs()]
    while stack:
        node = stack.pop()
        name = node.get_friendly_name()
        if name in seen:
            continue
        seen.add(name)
        if name in order:
            found.append(name)
            continue
        if node.get_type_name() in ("Parameter", "Constant"):
            continue
        stack.extend(inp.get_source_output().get_node() for inp in node.inputs())
    return found
