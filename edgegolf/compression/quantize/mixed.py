"""Mixed 4/8-bit weights from measured sensitivity, under a size limit (Int4WeightOnly.mixed_size_mb).

1. Units: the MatMuls of each transformer block (or each MatMul, `mixed_unit = "matmul"`), and
   the blockwise embedding table with its tied LM head (one unit: they share one initializer).
2. Sensitivity, measured: each unit alone is rounded to 4 bits (round to nearest in blocks, as
   MatMulNBits stores it) while the rest of the graph stays float, and the graph runs on the
   calibration feeds (train-split text). For a graph whose output is `logits` (a causal LM, a
   classifier) the cost is the mean KL divergence of its distribution from the float graph's,
   in bits per token (or text): for a causal LM, the expected growth of the cross entropy, i.e.
   of bits/byte, times tokens per byte. For an encoder's hidden states or embedding it is the
   mean cosine distance (1 - cos) from the float graph's, per token. 8 bits is taken as lossless: its rounding
   error is 1/16 of 4 bits' (a 256th of the squared error). One onnxruntime session serves
   every unit: the unit's weights are graph inputs with the float weights as defaults, so a run
   overrides only the unit's.
3. Plan: the graph is quantized to 4 bits (the configured algorithm) and measured; then units
   move to 8 bits in order of measured cost per extra byte, each while the graph stays within
   the limit. A 8-bit MatMul is rounded to nearest from the float weights (MatMulNBits, bits 8).
The plan (every unit's cost, size and bits) is returned to the manifest.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgegolf.compression.block_tables import block_quantize
from edgegolf.errors import DataError

log = logging.getLogger(__name__)

SENSITIVITY_TOKENS = 512  # calibration tokens each unit is measured on (whole feeds, at least one)
MB = 1e6
SLACK = 8  # bytes a tensor planned beyond its serialized size: the graph's framing of it
# a transformer block's index in a node name: /model/layers.3/..., /transformer/h.3/..., /encoder/layer.3/...,
# and model.layers.3.self_attn.qkv_proj/MatMul (the fused causal-lm graph of export/llm_graph.py)
_BLOCK = re.compile(r"(?:^|/)(?:[A-Za-z_]+\.)?(?:layers?|h|blocks?)\.(\d+)(?=[/.]|$)")


@dataclass
class Unit:
    """Weights that change bits together."""

    name: str
    matmuls: list[str] = field(default_factory=list)  # MatMul node names
    table: bool = False  # the blockwise embedding table(s) and tied head(s)
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # initializer name -> its 4-bit rounding (float)
    cost: float = 0.0  # measured with this unit alone at 4 bits: KL bits or cosine distance per token (measure())
    extra_bytes: int = 0  # what 8 bits costs over 4 bits in the file
    bits: int = 4


def unit_key(node_name: str, granularity: str) -> str:
    if granularity == "block":
        match = _BLOCK.search(node_name)
        if match:
            return node_name[: match.end()]
    return node_name


def fake_quantized(weight: np.ndarray, *, bits: int, block_size: int, symmetric: bool) -> np.ndarray:
    """A MatMul weight [K, N] after MatMulNBits' rounding (blocks of `block_size` along K), as float."""
    k, n = weight.shape
    padded = np.zeros((n, math.ceil(k / block_size) * block_size), dtype=np.float32)
    padded[:, :k] = weight.T
    table = block_quantize(padded, bits=bits, block_size=block_size, symmetric=symmetric)
    return table.dequantized()[:, :k].T.copy()


def nbits_inputs(weight: np.ndarray, *, bits: int, block_size: int, symmetric: bool):
    """(B uint8 [N, blocks, blob], scales float [N * blocks], zero points uint8 or None) of a [K, N] weight."""
    k, n = weight.shape
    padded = np.zeros((n, math.ceil(k / block_size) * block_size), dtype=np.float32)
    padded[:, :k] = weight.T
    table = block_quantize(padded, bits=bits, block_size=block_size, symmetric=symmetric)
    return table.packed(), table.scales.reshape(-1), None if symmetric else table.packed_zero_points()


def find_units(model, *, granularity: str, block_size: int, symmetric: bool, excluded: list[str],
               tables: bool) -> list[Unit]:
    """The units of a float graph, each with the 4-bit rounding of its weights."""
    from onnx import TensorProto, numpy_helper

    from edgegolf.compression.block_tables import _fitting_block, _tied_heads, gather_table_candidates

    initializers = {i.name: i for i in model.graph.initializer}
    units: dict[str, Unit] = {}
    taken: set[str] = set()  # MatMul nodes in the table unit
    if tables:
        nodes = list(model.graph.node)
        for _, table_proto in gather_table_candidates(model, block_size=block_size, exclude=excluded):
            table = numpy_helper.to_array(table_proto).astype(np.float32)
            block = _fitting_block(table.shape[1], block_size)
            assert block is not None  # gather_table_candidates keeps only tables that split
            rounded = block_quantize(table, bits=4, block_size=block, symmetric=symmetric).dequantized()
            unit = units.setdefault("embedding table", Unit("embedding table", table=True))
            unit.weights[table_proto.name] = rounded
            for head in _tied_heads(nodes, table, initializers):
                if nodes[head].name not in excluded:
                    unit.weights[nodes[head].input[1]] = rounded.T.copy()
                    unit.matmuls.append(nodes[head].name)
                    taken.add(nodes[head].name)
    for node in model.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if (weight is None or weight.data_type != TensorProto.FLOAT or len(weight.dims) != 2
                or node.name in excluded or node.name in taken):
            continue
        key = unit_key(node.name, granularity)
        unit = units.setdefault(key, Unit(key))
        unit.matmuls.append(node.name)
        if weight.name not in unit.weights:
            unit.weights[weight.name] = fake_quantized(numpy_helper.to_array(weight).astype(np.float32), bits=4,
                                                       block_size=block_size, symmetric=symmetric)
    return list(units.values())


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _kl_bits(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """KL divergence of softmax(output) from softmax(reference) over the last axis, in bits."""
    ref, out = _log_softmax(reference), _log_softmax(output)
    return (np.exp(ref) * (ref - out)).sum(axis=-1) / math.log(2)


def _cosine_distance(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """1 - cos between the vectors of the last axis (hidden states, embeddings)."""
    norms = np.linalg.norm(reference, axis=-1) * np.linalg.norm(output, axis=-1)
    return 1.0 - (reference * output).sum(axis=-1) / np.maximum(norms, 1e-12)


def sensitivity_metric(output_name: str):
    """(how a unit's output is compared with the float graph's, its description for the manifest)."""
    if output_name == "logits":
        return _kl_bits, "KL bits/token from the float graph's logits"
    return _cosine_distance, f"cosine distance (1 - cos) per token from the float graph's {output_name}"


def measure(model, units: list[Unit], feeds: list[dict[str, np.ndarray]]) -> tuple[int, str]:
    """Set each unit's `cost` (sensitivity_metric of the graph's first output, against the float
    graph, with the unit alone at 4 bits); returns the tokens measured on and the metric's words."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from edgegolf.compression.quantize.calibration import complete_feeds

    if not feeds:
        raise DataError("quantize.mixed_size_mb needs calibration feeds (tokenized train-split text) to measure "
                        "each layer's sensitivity; none were given — set evaluate.calibration_size >= 1")
    chosen, tokens = [], 0
    for feed in complete_feeds(model, feeds):
        chosen.append(feed)
        ids = feed.get("input_ids", next(iter(feed.values())))
        tokens += int(ids.shape[0] * ids.shape[-1])
        if tokens >= SENSITIVITY_TOKENS:
            break
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    for name in sorted({w for u in units for w in u.weights}):
        # an initializer that is also a graph input is a default a run may override (ONNX IR >= 4)
        probe.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shapes[name]))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not a warning per overridable initializer
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del probe
    output = session.get_outputs()[0].name
    divergence, metric = sensitivity_metric(output)
    masks = [f.get("attention_mask") for f in chosen]
    reference = [session.run([output], f)[0].astype(np.float32) for f in chosen]
    started = time.perf_counter()
    for index, unit in enumerate(units):
        total, count = 0.0, 0
        for feed, ref, mask in zip(chosen, reference, masks, strict=True):
            gap = divergence(ref, session.run([output], {**feed, **unit.weights})[0].astype(np.float32))
            # [batch, seq] (or [batch]): padding positions do not count
            keep = mask[..., -gap.shape[-1]:].astype(bool) if mask is not None and mask.shape == gap.shape else None
            total += float(gap[keep].sum() if keep is not None else gap.sum())
            count += int(keep.sum() if keep is not None else gap.size)
        unit.cost = total / max(count, 1)
        if index == 0:
            log.info("mixed precision: measuring %d units on %d calibration tokens (~%.0f s)", len(units), tokens,
                     (time.perf_counter() - started) * len(units))
    return tokens, metric


def _eight_bit_tensors(node, weight: np.ndarray, *, block_size: int, symmetric: bool) -> list:
    """B, scales (and zero points) of an 8-bit MatMulNBits for `weight` [K, N], under the names
    the 4-bit node's tensors have (so the node's inputs and the file's names do not change)."""
    from onnx import numpy_helper

    b, scales, zero_points = nbits_inputs(weight, bits=8, block_size=block_size, symmetric=symmetric)
    tensors = [numpy_helper.from_array(b, node.input[1]), numpy_helper.from_array(scales, node.input[2])]
    if zero_points is not None:
        name = node.input[3] if len(node.input) > 3 and node.input[3] else f"{node.input[1]}_zero_points"
        tensors.append(numpy_helper.from_array(zero_points, name))
    return tensors


def _old_tensors(model, node) -> list:
    names = {n for n in node.input[1:4] if n}
    return [t for t in model.graph.initializer if t.name in names]


def matmul_to_8bit(model, node, weight: np.ndarray, *, block_size: int, symmetric: bool) -> None:
    """Make the 4-bit MatMulNBits `node` an 8-bit one rounded to nearest from `weight` [K, N]."""
    from onnx import helper

    new = _eight_bit_tensors(node, weight, block_size=block_size, symmetric=symmetric)
    for tensor in _old_tensors(model, node):  # each MatMulNBits has its own (onnxruntime's quantizer)
        model.graph.initializer.remove(tensor)
    model.graph.initializer.extend(new)
    inputs = [node.input[0], new[0].name, new[1].name, new[2].name if len(new) > 2 else ""] + list(node.input[4:])
    while inputs and not inputs[-1]:
        inputs.pop()
    del node.input[:]
    node.input.extend(inputs)
    for attribute in node.attribute:
        if attribute.name == "bits":
            attribute.CopyFrom(helper.make_attribute("bits", 8))


def quantized_node(model4, output: str):
    """The MatMulNBits that writes `output` in the 4-bit graph (onnxruntime's quantizer renames the
    MatMul it replaces), or None."""
    return next((n for n in model4.graph.node if n.op_type == "MatMulNBits" and n.output[0] == output), None)


def eight_bit_cost(model4, fp32_weights: dict[str, np.ndarray], unit: Unit, *, outputs: dict[str, str],
                   node_weight: dict[str, str], block_size: int, symmetric: bool) -> int:
    """Bytes that 8 bits adds to `unit`'s MatMuls in the 4-bit graph `model4`: the serialized
    tensors the swap writes less those it drops (plus SLACK a tensor for the graph's framing)."""
    extra = 0
    for name in unit.matmuls:
        node = quantized_node(model4, outputs[name])
        if node is None:
            continue
        new = _eight_bit_tensors(node, fp32_weights[node_weight[name]], block_size=block_size, symmetric=symmetric)
        extra += sum(t.ByteSize() + SLACK for t in new) - sum(t.ByteSize() for t in _old_tensors(model4, node))
    return extra


def table_extra_bytes(model, *, block_size: int, symmetric: bool, excluded: list[str]) -> int:
    """Bytes an 8-bit table (and tied head zero points) adds over a 4-bit one, from the shapes."""
    from edgegolf.compression.block_tables import _fitting_block, gather_table_candidates

    extra = 0
    for _, table in gather_table_candidates(model, block_size=block_size, exclude=excluded):
        rows, cols = table.dims
        block = _fitting_block(cols, block_size)
        assert block is not None
        blocks = cols // block
        extra += rows * blocks * block // 2 + SLACK  # 8 vs 4 bits of data
        if not symmetric:  # head zero points: one a byte instead of two
            extra += rows * blocks - rows * math.ceil(blocks / 2) + SLACK
    return extra


def choose(units: list[Unit], base_bytes: int, limit_bytes: int) -> int:
    """Greedy: units to 8 bits by measured cost per extra byte while the total stays within the limit;
    returns the planned total."""
    total = base_bytes
    for unit in sorted(units, key=lambda u: u.cost / max(u.extra_bytes, 1), reverse=True):
        if unit.cost > 0 and total + unit.extra_bytes <= limit_bytes:
            unit.bits = 8
            total += unit.extra_bytes
    return total


def plan_record(units: list[Unit], *, limit_mb: float, planned: int, tokens: int, metric: str,
                granularity: str) -> dict[str, Any]:
    return {"mixed_precision": {
        "size_limit_mb": limit_mb, "planned_mb": round(planned / MB, 3), "unit": granularity,
        "sensitivity": f"{metric}, the unit alone at 4 bits, {tokens} calibration tokens",
        "units": [{"name": u.name, "bits": u.bits, "cost": round(u.cost, 6),
                   "extra_mb_at_8_bits": round(u.extra_bytes / MB, 4), "matmuls": len(u.matmuls)} for u in units]}}


class BelowAllFourBitError(DataError):
    """The mixed plan's size limit is below the graph with every unit at 4 bits."""

    def __init__(self, message: str, floor_mb: float) -> None:
        super().__init__(message)
        self.floor_mb = floor_mb  # the all-4-bit graph's size


def check_fits(base_bytes: int, limit_bytes: int) -> None:
    if base_bytes > limit_bytes:
        raise BelowAllFourBitError(f"quantize.mixed_size_mb = {limit_bytes / MB:g} is below the all-4-bit graph's "
                        f"{base_bytes / MB:.1f} MB; give a limit of at least {math.ceil(base_bytes / MB * 10) / 10:g} "
                        f"or a larger quantize.block_size", floor_mb=base_bytes / MB)
