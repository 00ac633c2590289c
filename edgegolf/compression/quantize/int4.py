"""4-bit weight-only MatMulNBits (onnxruntime's MatMulNBitsQuantizer: RTN, HQQ, GPTQ)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from edgegolf.compression.quantize.calibration import complete_feeds
from edgegolf.compression.quantize.configs import BLOCK_EMBEDDING_MODES, Int4WeightOnly
from edgegolf.compression.quantize.embeddings import apply_block_tables, quantize_embedding_rows
from edgegolf.compression.quantize.graph import save_model
from edgegolf.compression.quantize.registry import quantizer
from edgegolf.errors import DataError

log = logging.getLogger(__name__)

def nbits_quantizer():
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line per node
    return MatMulNBitsQuantizer


@quantizer(Int4WeightOnly)
def _int4(config: Int4WeightOnly, src: Path, dst: Path, excluded: list[str], feeds) -> dict[str, Any] | None:
    import onnx

    model = onnx.load(str(src))
    if config.mixed_size_mb is not None:
        return _mixed(model, config, dst, excluded, feeds)
    save_model(four_bit(model, config, excluded, feeds, config.embeddings), dst)
    return None


def four_bit(model, config: Int4WeightOnly, excluded: list[str], feeds, embeddings: str):
    """The float graph `model` (changed in place) with 4-bit MatMuls by the configured algorithm and
    its embedding tables as `embeddings` says."""
    # block tables first: a tied LM head becomes MatMulNBits over the table before the MatMul pass
    apply_block_tables(model, embeddings, config.block_size, config.symmetric, excluded, config.accuracy_level)
    if config.algorithm == "gptq":
        model = _gptq(model, config, excluded, feeds)
    else:
        algo = None
        if config.algorithm == "hqq":
            from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig

            algo = HQQWeightOnlyQuantConfig(block_size=config.block_size, bits=4, op_types_to_quantize=("MatMul",))
        quantizer = nbits_quantizer()(model, bits=4, block_size=config.block_size,
                                      is_symmetric=config.symmetric, accuracy_level=config.accuracy_level,
                                      nodes_to_exclude=excluded, op_types_to_quantize=("MatMul",), algo_config=algo)
        quantizer.process()
        model = quantizer.model.model
    if embeddings == "per-row":
        quantize_embedding_rows(model, exclude=excluded)
    return model


def _copy(model):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _mixed(fp32, config: Int4WeightOnly, dst: Path, excluded: list[str], feeds) -> dict[str, Any]:
    """4 bits everywhere, then 8 bits on the units whose measured cost per extra byte is highest
    while the graph stays within config.mixed_size_mb (edgegolf/compression/quantize/mixed.py)."""
    from onnx import numpy_helper

    from edgegolf.compression.quantize import mixed

    assert config.mixed_size_mb is not None
    limit = int(config.mixed_size_mb * mixed.MB)
    blocks = dict(block_size=config.block_size, symmetric=config.symmetric)
    # a 4-bit table is a unit that may get 8 bits; an 8-bit one stays as asked
    units = mixed.find_units(fp32, granularity=config.mixed_unit, excluded=excluded,
                             tables=config.embeddings in BLOCK_EMBEDDING_MODES, **blocks)
    if config.embeddings == "int8-block":
        units = [u for u in units if not u.table]
    model = four_bit(_copy(fp32), config, excluded, feeds, config.embeddings)
    base = model.ByteSize()
    if feeds:  # a limit below 4 bits everywhere fails before the measurement (without feeds, measure says why)
        mixed.check_fits(base, limit)
    tokens, metric = mixed.measure(fp32, units, feeds)
    initializers = {i.name: i for i in fp32.graph.initializer}
    node_weight = {n.name: n.input[1] for n in fp32.graph.node if n.op_type == "MatMul" and len(n.input) == 2}
    outputs = {n.name: n.output[0] for n in fp32.graph.node if n.name in node_weight}

    def weight(node_name: str):
        return numpy_helper.to_array(initializers[node_weight[node_name]]).astype("float32")

    for unit in units:
        unit.extra_bytes = (mixed.table_extra_bytes(fp32, excluded=excluded, **blocks) if unit.table else
                            mixed.eight_bit_cost(model, {node_weight[m]: weight(m) for m in unit.matmuls}, unit,
                                                 outputs=outputs, node_weight=node_weight, **blocks))
    planned = mixed.choose(units, base, limit)
    if any(u.table and u.bits == 8 for u in units):
        model = four_bit(_copy(fp32), config, excluded, feeds, "int8-block")
    for unit in units:
        if unit.bits == 8 and not unit.table:
            for name in unit.matmuls:
                node = mixed.quantized_node(model, outputs[name])
                if node is not None:
                    mixed.matmul_to_8bit(model, node, weight(name), **blocks)
    written = model.ByteSize()
    upgraded = [u.name for u in units if u.bits == 8]
    log.info("mixed precision: %d of %d units at 8 bits (%s), %.1f MB (limit %g MB)", len(upgraded), len(units),
             ", ".join(upgraded) or "none", written / mixed.MB, config.mixed_size_mb)
    save_model(model, dst)
    record = mixed.plan_record(units, limit_mb=config.mixed_size_mb, planned=planned, tokens=tokens, metric=metric,
                               granularity=config.mixed_unit)
    record["mixed_precision"]["written_mb"] = round(written / mixed.MB, 3)
    return record


def _gptq(model, config: Int4WeightOnly, excluded: list[str], feeds):
    """GPTQ through onnxruntime's copy of Intel Neural Compressor's implementation, called
    directly so that excluded nodes stay float (MatMulNBitsQuantizer passes them on for RTN only)."""
    import io

    from onnxruntime.quantization.neural_compressor import gptq_quantize

    if not feeds:
        raise DataError("int4 with algorithm 'gptq' needs calibration feeds (tokenized real text); none were given — "
                        "set evaluate.calibration_size >= 1 or use algorithm 'rtn' or 'hqq'")
    weights = {i.name for i in model.graph.initializer}
    scheme = "sym" if config.symmetric else "asym"
    weight_config: dict[str, Any] = {
        n.name: "fp32" if n.name in excluded else {"bits": 4, "group_size": config.block_size, "scheme": scheme}
        for n in model.graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)}
    complete = complete_feeds(model, feeds)
    chatter = io.StringIO()  # it prints a progress bar to stdout
    with contextlib.redirect_stdout(chatter):
        quantized = gptq_quantize(model, ((feed, None) for feed in complete), weight_config=weight_config,
                                  group_size=config.block_size, scheme=scheme, n_samples=-1,  # -1: every feed
                                  accuracy_level=config.accuracy_level or 0)
    return quantized.model
