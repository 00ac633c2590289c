"""Embedding tables as blockwise 4- or 8-bit rows, and one copy of a tied table.

    Gather(table, ids)           ->  GatherBlockQuantized(packed, ids, scales, zero points)
    MatMul(x, table^T)  (tied)   ->  MatMulNBits(x, packed, scales, zero points)

Both onnxruntime contrib ops read blocks of `block_size` values along a row, so a table of
[vocab, hidden] quantized in blocks along `hidden` is, byte for byte, the B input MatMulNBits
wants for a [.., hidden] x [hidden, vocab] product (B stored transposed as [N, blocks, blob];
N = vocab, K = hidden). The LM head of a model with tied embeddings then reads the very
initializer the input gather reads: the file holds the table once (an fp32 export holds it
twice: the tracer folds the head's transpose into a second initializer).

What onnxruntime 1.32's CPU kernels accept, checked here on random tables (both outputs equal
the dequantized table exactly):
- MatMulNBits: B uint8 [N, blocks, blob], scales [N, blocks] or [N * blocks], zero points
  uint8 packed along blocks ([N, ceil(blocks * bits / 8)]) -- the prepacking checks these
  shapes, so the shared B must be 3-D;
- GatherBlockQuantized: uint8 data with bits 4 (two values a byte, low nibble first) or 8,
  scales of data's rank; with 3-D data [V, blocks, blob] and quantize_axis 2 a block is one
  blob, scales are [V, blocks, 1]: a Reshape of the head's scales (no second copy in the file)
  and zero points [V, blocks, 1] one a byte (a second, small initializer: V * blocks bytes).
Contrib op reference: https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MIN_ROWS = 256  # smaller tables (token types, short position tables) weigh little


@dataclass(frozen=True)
class BlockTable:
    """A [rows, cols] table quantized in blocks of `block_size` along each row."""

    codes: np.ndarray  # uint8 [rows, blocks, block_size], each in [0, 2**bits)
    scales: np.ndarray  # float32 [rows, blocks]
    zero_points: np.ndarray  # uint8 [rows, blocks]
    bits: int
    block_size: int

    def dequantized(self) -> np.ndarray:
        rows, blocks, _ = self.codes.shape
        values = (self.codes.astype(np.float32) - self.zero_points[..., None]) * self.scales[..., None]
        return values.reshape(rows, blocks * self.block_size)

    def packed(self) -> np.ndarray:
        """uint8 [rows, blocks, blob]: the layout of MatMulNBits' B and of the gather's data."""
        if self.bits == 8:
            return self.codes
        return (self.codes[..., 0::2] | (self.codes[..., 1::2] << 4)).astype(np.uint8)

    def packed_zero_points(self) -> np.ndarray:
        """uint8 [rows, ceil(blocks * bits / 8)]: MatMulNBits' zero points."""
        if self.bits == 8:
            return self.zero_points
        rows, blocks = self.zero_points.shape
        padded = np.zeros((rows, blocks + blocks % 2), dtype=np.uint8)
        padded[:, :blocks] = self.zero_points
        return (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)


def block_quantize(table: np.ndarray, *, bits: int, block_size: int, symmetric: bool) -> BlockTable:
    """Round-to-nearest blockwise quantization of a float [rows, cols] table (cols % block_size == 0).

    Asymmetric blocks span [min(block, 0), max(block, 0)] so that zero stays exact; symmetric
    ones use the zero point 2**(bits-1), which is also what both ops assume when none is given.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, not {bits}")
    rows, cols = table.shape
    if cols % block_size:
        raise ValueError(f"a row of {cols} values does not split into blocks of {block_size}")
    top = 2**bits - 1
    blocks = table.astype(np.float32).reshape(rows, cols // block_size, block_size)
    if symmetric:
        half = 2 ** (bits - 1)
        scales = np.abs(blocks).max(axis=-1) / (half - 1)
        zero_points = np.full(scales.shape, half, dtype=np.uint8)
    else:
        low, high = np.minimum(blocks.min(axis=-1), 0), np.maximum(blocks.max(axis=-1), 0)
        scales = (high - low) / top
        zero_points = np.clip(np.rint(-low / np.where(scales == 0, 1, scales)), 0, top).astype(np.uint8)
    scales = np.where(scales == 0, 1.0, scales).astype(np.float32)  # an all-zero block stays zero
    codes = np.clip(np.rint(blocks / scales[..., None]) + zero_points[..., None], 0, top).astype(np.uint8)
    return BlockTable(codes, scales, zero_points, bits, block_size)


def _tied_heads(nodes: list, table: np.ndarray, initializers: dict) -> list[int]:
    """Indices of the MatMul nodes whose weight is `table` transposed (a tied LM head), compared
    value by value."""
    from onnx import TensorProto, numpy_helper

    heads = []
    for index, node in enumerate(nodes):
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        weight = initializers.get(node.input[1])
        if (weight is None or weight.data_type != TensorProto.FLOAT or list(weight.dims) != list(table.shape[::-1])):
            continue
        if np.array_equal(numpy_helper.to_array(weight), table.T):
            heads.append(index)
    return heads


def _fitting_block(cols: int, block_size: int) -> int | None:
    """`block_size`, or the largest power-of-two fraction of it (>= 16, what MatMulNBits takes)
    that divides a row of `cols` values."""
    block = block_size
    while block >= 16:
        if cols % block == 0:
            return block
        block //= 2
    return None


def _gathered_table(node, initializers: dict, readers: collections.Counter, skip: set[str], min_rows: int):
    """The float [rows >= min_rows, cols] table `node` gathers rows of, if it is a Gather that
    alone reads it (and not excluded); else None."""
    from onnx import TensorProto

    table = initializers.get(node.input[0]) if node.op_type == "Gather" and node.input else None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if (table is None or node.name in skip or table.data_type != TensorProto.FLOAT or len(table.dims) != 2
            or table.dims[0] < min_rows or axis != 0 or readers[table.name] != 1):
        return None
    return table


def gather_table_candidates(model, *, block_size: int, exclude=(), min_rows: int = MIN_ROWS) -> list[tuple]:
    """(Gather node, table initializer) for each table quantize_gather_blocks would rewrite."""
    initializers = {i.name: i for i in model.graph.initializer}
    readers = collections.Counter(inp for n in model.graph.node for inp in n.input)
    found = []
    for node in model.graph.node:
        table = _gathered_table(node, initializers, readers, set(exclude), min_rows)
        if table is not None and _fitting_block(table.dims[1], block_size) is not None:
            found.append((node, table))
    return found


def quantize_gather_blocks(model, *, bits: int, block_size: int, symmetric: bool = False, exclude=(),
                           accuracy_level: int | None = None, tie_heads: bool = True,
                           min_rows: int = MIN_ROWS) -> list[str]:
    """Rewrite every Gather of a float [rows >= min_rows, cols] initializer as GatherBlockQuantized,
    in place; a MatMul that multiplies by the same table transposed (a tied LM head) becomes a
    MatMulNBits over the same packed initializer when `tie_heads`. Returns the rewritten node names.

    A row splits into blocks of `block_size`, or of the largest power-of-two fraction of it that
    divides the row; tables that split into no block of 16 or more, or that something else
    reads, stay float.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    readers = collections.Counter(inp for n in graph.node for inp in n.input)
    skip = set(exclude)
    nodes = list(graph.node)
    replaced: dict[int, list] = {}  # index in `nodes` -> its replacement nodes
    dropped: set[str] = set()
    rewritten: list[str] = []
    for index, node in enumerate(nodes):
        table_proto = _gathered_table(node, initializers, readers, skip, min_rows)
        if table_proto is None:
            continue
        rows, cols = table_proto.dims
        block = _fitting_block(cols, block_size)
        if block is None:
            log.info("embedding table %s stays float: its %d columns do not split into blocks of %d or fewer (>= 16)",
                     table_proto.name, cols, block_size)
            continue
        table = numpy_helper.to_array(table_proto)
        heads = [h for h in _tied_heads(nodes, table, initializers) if nodes[h].name not in skip] if tie_heads else []
        quantized = block_quantize(table, bits=bits, block_size=block, symmetric=symmetric)
        blocks = cols // block
        base = table_proto.name
        names = {k: f"{base}_q{bits}_{k}" for k in ("data", "scales", "gather_scales_shape", "gather_zero_points",
                                                    "head_zero_points", "out_shape_tail")}
        new_inits = [numpy_helper.from_array(quantized.packed(), names["data"]),
                     numpy_helper.from_array(quantized.scales, names["scales"]),
                     numpy_helper.from_array(np.array([rows, blocks, 1], dtype=np.int64), names["gather_scales_shape"]),
                     numpy_helper.from_array(np.array([cols], dtype=np.int64), names["out_shape_tail"])]
        gather_inputs = [names["data"], node.input[1], f"{base}_q{bits}_scales_3d"]
        if not symmetric:
            new_inits.append(numpy_helper.from_array(quantized.zero_points[..., None], names["gather_zero_points"]))
            gather_inputs.append(names["gather_zero_points"])
        ids, out, prefix = node.input[1], node.output[0], node.name or base
        replaced[index] = [
            helper.make_node("Reshape", [names["scales"], names["gather_scales_shape"]], [f"{base}_q{bits}_scales_3d"],
                             name=f"{prefix}_ScalesAsBlocks"),
            helper.make_node("GatherBlockQuantized", gather_inputs, [f"{prefix}_blocks"], name=node.name,
                             domain="com.microsoft", gather_axis=0, quantize_axis=2, block_size=block, bits=bits),
            helper.make_node("Shape", [ids], [f"{prefix}_ids_shape"], name=f"{prefix}_IdsShape"),
            helper.make_node("Concat", [f"{prefix}_ids_shape", names["out_shape_tail"]], [f"{prefix}_rows_shape"],
                             name=f"{prefix}_RowsShape", axis=0),
            helper.make_node("Reshape", [f"{prefix}_blocks", f"{prefix}_rows_shape"], [out], name=f"{prefix}_Rows"),
        ]
        for head_index in heads:
            head = nodes[head_index]
            head_inputs = [head.input[0], names["data"], names["scales"]]
            if not symmetric:
                head_inputs.append(names["head_zero_points"])
            extra = {} if accuracy_level is None else {"accuracy_level": accuracy_level}
            replaced[head_index] = [helper.make_node("MatMulNBits", head_inputs, list(head.output), name=head.name,
                                                   domain="com.microsoft", K=cols, N=rows, bits=bits,
                                                   block_size=block, **extra)]
            if readers[head.input[1]] == 1:
                dropped.add(head.input[1])
            rewritten.append(head.name)
        if heads and not symmetric:
            new_inits.append(numpy_helper.from_array(quantized.packed_zero_points(), names["head_zero_points"]))
        dropped.add(table_proto.name)
        graph.initializer.extend(new_inits)
        rewritten.append(node.name)
        if heads:
            log.info("tied LM head %s reads the %d-bit table of %s (one copy)", ", ".join(nodes[h].name for h in heads),
                     bits, node.name)
    if not replaced:
        return []
    new_nodes = []
    for index, node in enumerate(nodes):
        new_nodes += replaced.get(index, [node])
    del graph.node[:]
    graph.node.extend(new_nodes)
    for name in dropped:
        graph.initializer.remove(initializers[name])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return rewritten
