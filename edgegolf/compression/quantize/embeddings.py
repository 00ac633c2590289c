"""Embedding tables read by Gather: per-row int8 (our rewrite), or blockwise 4/8-bit rows
shared with a tied LM head (edgegolf/compression/block_tables.py)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgegolf.compression.quantize.configs import BLOCK_EMBEDDING_MODES
from edgegolf.compression.quantize.graph import save_model

log = logging.getLogger(__name__)

# --- our graph rewrite: per-row int8 embedding tables ---------------------------------------
def quantize_embedding_rows(model, *, exclude: Sequence[str] = (), min_rows: int = 256) -> list[str]:
    """Store every float32 embedding table read by a Gather as int8 rows with one float32
    scale per row, in place; returns the rewritten Gather names.

        Gather(table, ids)  ->  Cast(Gather(table_int8, ids)) * Unsqueeze(Gather(scale[V], ids), -1)

    Token embeddings differ in norm by an order of magnitude from row to row, so one scale
    for the whole table (onnxruntime's Gather quantization) wastes most of the 8 bits on
    ordinary rows. Tables with fewer than `min_rows` rows (token types) stay float: they
    weigh nothing.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    readers = collections.Counter(inp for n in graph.node for inp in n.input)
    skip = set(exclude)
    rewritten: list[str] = []
    new_nodes = []
    for node in graph.node:
        table = initializers.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (table is None or node.name in skip or table.data_type != TensorProto.FLOAT or len(table.dims) != 2
                or table.dims[0] < min_rows or axis != 0 or readers[table.name] != 1):
            new_nodes.append(node)
            continue
        weights = numpy_helper.to_array(table).astype(np.float32)
        scale = np.abs(weights).max(axis=1, keepdims=True) / 127.0  # symmetric: zero stays zero
        scale[scale == 0] = 1.0  # an all-zero row (padding) stays exactly zero
        rows = np.clip(np.rint(weights / scale), -127, 127).astype(np.int8)
        base = node.name or table.name
        q_name, s_name, axes = f"{table.name}_int8_rows", f"{table.name}_row_scale", f"{base}_last_axis"
        graph.initializer.remove(table)
        graph.initializer.extend([numpy_helper.from_array(rows, q_name),
                                  numpy_helper.from_array(scale[:, 0].astype(np.float32), s_name),
                                  numpy_helper.from_array(np.array([-1], dtype=np.int64), axes)])
        ids, out = node.input[1], node.output[0]
        new_nodes += [
            helper.make_node("Gather", [q_name, ids], [f"{base}_int8_out"], name=node.name, axis=0),
            helper.make_node("Cast", [f"{base}_int8_out"], [f"{base}_float_out"], name=f"{base}_Cast",
                             to=TensorProto.FLOAT),
            helper.make_node("Gather", [s_name, ids], [f"{base}_scale_out"], name=f"{base}_ScaleGather", axis=0),
            helper.make_node("Unsqueeze", [f"{base}_scale_out", axes], [f"{base}_scale_col"],
                             name=f"{base}_ScaleUnsqueeze"),
            helper.make_node("Mul", [f"{base}_float_out", f"{base}_scale_col"], [out], name=f"{base}_RowScale"),
        ]
        rewritten.append(node.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return rewritten


def apply_embeddings(path: Path, mode: str, excluded: list[str]) -> None:
    import onnx

    if mode != "per-row":
        return
    model = onnx.load(str(path))
    rewritten = quantize_embedding_rows(model, exclude=excluded)
    if rewritten:
        save_model(model, path)
        log.info("per-row int8 embedding tables: %s", ", ".join(rewritten))


def apply_block_tables(model, mode: str, block_size: int, symmetric: bool, excluded: list[str],
                        accuracy_level: int | None) -> None:
    if mode not in BLOCK_EMBEDDING_MODES:
        return
    from edgegolf.compression.block_tables import quantize_gather_blocks

    bits = 4 if mode == "int4-block" else 8
    rewritten = quantize_gather_blocks(model, bits=bits, block_size=block_size, symmetric=symmetric, exclude=excluded,
                                       accuracy_level=accuracy_level)
    if rewritten:
        log.info("%d-bit blockwise embedding tables: %s", bits, ", ".join(rewritten))
