"""Reading a graph: which compute nodes hold quantized weights, which nodes the exclude
patterns name, which MatMuls multiply by a stored weight; and saving it."""

from __future__ import annotations

import collections
import fnmatch
from collections.abc import Sequence
from pathlib import Path

from edgegolf.errors import RecipeError

# were quantized (MatMul between two activations has no weight and is not counted).
COMPUTE_OPS = frozenset({
    "MatMul", "Gemm", "Conv", "Gather", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QGemm", "QLinearConv",
    "MatMulNBits", "GatherBlockQuantized", "DynamicQuantizeMatMul", "Attention", "QAttention",
    "EmbedLayerNormalization", "QEmbedLayerNormalization",
})
# A weight reaches its node through these (QDQ, fp16 casts, per-row scaling).
_PASS_THROUGH = frozenset({"DequantizeLinear", "Cast", "Transpose", "Reshape", "Mul"})


def graph_summary(model) -> tuple[dict[str, int], list[str]]:
    """(quantized op_type counts, names of compute nodes whose weights are float32)."""
    from onnx import TensorProto

    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:  # constants folded into Constant nodes count as weights too
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == node.attribute[0].TENSOR:
            initializers.setdefault(node.output[0], node.attribute[0].t)
    producer = {out: n for n in model.graph.node for out in n.output}

    def weight_types(name: str, depth: int = 0) -> set[int]:
        if name in initializers:
            tensor = initializers[name]
            return {tensor.data_type} if len(tensor.dims) >= 2 else set()
        node = producer.get(name)
        if node is None or depth > 3 or node.op_type not in _PASS_THROUGH:
            return set()
        found: set[int] = set()
        for inp in node.input:
            found |= weight_types(inp, depth + 1)
        return found

    quantized: collections.Counter[str] = collections.Counter()
    float_nodes: list[str] = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        types: set[int] = set()
        for inp in node.input:
            types |= weight_types(inp)
        if not types:
            continue
        if types == {TensorProto.FLOAT}:
            float_nodes.append(node.name)
        else:
            quantized[node.op_type] += 1
    return dict(sorted(quantized.items())), float_nodes


# --- exclude patterns --------------------------------------------------------------------------
def resolve_exclude(model, patterns: Sequence[str]) -> list[str]:
    """Node names matched by `patterns` (exact names or fnmatch patterns); a pattern that
    matches nothing is an error, so a typo cannot silently quantize a node meant to stay float."""
    names = [n.name for n in model.graph.node if n.name]
    matched: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            example = next((n for n in names if n.endswith("MatMul")), names[0] if names else "")
            raise RecipeError(f"quantize.exclude pattern {pattern!r} matches no node of the graph; give node names "
                              f"or patterns such as {example!r} or '*/layer.0/*'")
        matched.extend(h for h in hits if h not in matched)
    return matched


def weight_matmuls(model) -> dict[str, tuple[int, int]]:
    """MatMul node name -> (rows, columns) of its float32 weight initializer."""
    from onnx import TensorProto

    weights = {i.name: tuple(i.dims) for i in model.graph.initializer
               if i.data_type == TensorProto.FLOAT and len(i.dims) == 2}
    return {n.name: weights[n.input[1]] for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in weights}


def save_model(model, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path))
