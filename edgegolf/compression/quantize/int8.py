"""int8 schemes: dynamic (onnxruntime quantize_dynamic, optionally with blockwise 8-bit
MatMulNBits) and static QDQ calibrated on real feeds."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from edgegolf.compression.quantize.calibration import FeedReader, with_tensor_types
from edgegolf.compression.quantize.configs import (
    BLOCK_EMBEDDING_MODES,
    Int8Dynamic,
    Int8Static,
    resolve_blockwise,
    seven_bit_weights,
)
from edgegolf.compression.quantize.embeddings import apply_block_tables, apply_embeddings
from edgegolf.compression.quantize.graph import save_model, weight_matmuls
from edgegolf.compression.quantize.int4 import nbits_quantizer
from edgegolf.compression.quantize.registry import quantizer
from edgegolf.errors import DataError

log = logging.getLogger(__name__)

def float_tensor_type() -> dict[str, Any]:
    # onnxruntime's quantizer asks shape inference for each weight's type; contrib ops of a
    # fused graph have none, and float32 is what they hold.
    from onnx import TensorProto

    return {"DefaultTensorType": TensorProto.FLOAT}


def _blockwise_int8(model, mode: str, block_size: int, excluded: list[str]):
    """MatMulNBits with 8-bit symmetric blockwise weights on the chosen MatMuls; accuracy
    level 4 makes onnxruntime quantize their activations per row and block at run time."""
    matmuls = weight_matmuls(model)
    chosen = {name for name, (rows, cols) in matmuls.items()
              if name not in excluded and (mode == "all" or rows > cols)}
    quantizer = nbits_quantizer()(model, bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=sorted(set(matmuls) - chosen), op_types_to_quantize=("MatMul",))
    quantizer.process()
    return quantizer.model.model


@quantizer(Int8Dynamic)
def _int8_dynamic(config: Int8Dynamic, src: Path, dst: Path, excluded: list[str], feeds) -> dict[str, str]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # read once: the inputs and op types, which the rewrites below leave as they are
    graph = onnx.load(str(src), load_external_data=False).graph
    blockwise = resolve_blockwise(config.blockwise, [i.name for i in graph.input])
    if blockwise != "none" or config.embeddings in BLOCK_EMBEDDING_MODES:
        model = onnx.load(str(src))
        # symmetric 8-bit blocks as the blockwise MatMuls; accuracy level 4: int8 compute for a tied head
        apply_block_tables(model, config.embeddings, config.block_size, True, excluded, 4)
        if blockwise != "none":
            model = _blockwise_int8(model, blockwise, config.block_size, excluded)
        save_model(model, dst)
        src = dst  # quantize_dynamic reads the whole file before it writes, so in place is safe
    # Embeddings read by Gather: onnxruntime quantizes them per tensor; leave them to our
    # per-row rewrite (or float) unless asked for onnxruntime's way. A fused graph's
    # EmbedLayerNormalization holds its tables inside, out of the rewrite's reach: there
    # "per-row" falls back to onnxruntime's per-tensor QEmbedLayerNormalization.
    op_types = ["MatMul", "Gemm", "Attention", "Conv"]
    if config.embeddings == "per-tensor":
        op_types += ["Gather", "EmbedLayerNormalization"]
    elif config.embeddings == "per-row":
        op_types += ["EmbedLayerNormalization"]
        if any(n.op_type == "EmbedLayerNormalization" for n in graph.node):
            log.info("the graph's embeddings are fused into EmbedLayerNormalization: quantized per tensor, not per row")
    quantize_dynamic(src, dst, op_types_to_quantize=op_types, per_channel=config.per_channel,
                     reduce_range=seven_bit_weights(config.reduce_range), weight_type=QuantType.QInt8,
                     nodes_to_exclude=excluded,
                     extra_options=float_tensor_type())
    apply_embeddings(dst, config.embeddings, excluded)
    return {"blockwise": blockwise}  # what "auto" chose for this graph, into the manifest


@quantizer(Int8Static)
def _int8_static(config: Int8Static, src: Path, dst: Path, excluded: list[str], feeds) -> None:
    import io
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if not feeds:
        raise DataError("int8-static needs calibration feeds (tokenized real text); none were given — "
                        "set evaluate.calibration_size >= 1 or use int8-dynamic")
    inputs = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[config.method]
    op_types = list(config.op_types) + (["Gather"] if config.embeddings == "per-tensor" else [])
    # We run the calibrator ourselves and hand quantize_static its ranges as a cache:
    # quantize_static (onnxruntime 1.32) does not pass the histogram size on, and with its
    # default (128 bins for 128 quantized bins) entropy can only choose the full range, i.e.
    # it silently gives minmax.
    options: dict[str, Any] = {}
    if config.method == "percentile":
        options.update(num_bins=config.histogram_bins, percentile=config.percentile)
    elif config.method == "entropy":
        options.update(num_bins=config.histogram_bins, num_quantized_bins=128)
    activation = QuantType.QUInt8 if config.activation_type == "uint8" else QuantType.QInt8
    chatter = io.StringIO()  # the histogram calibrators print progress to stdout
    with tempfile.TemporaryDirectory(prefix="edgegolf-calib-") as work, contextlib.redirect_stdout(chatter):
        src = with_tensor_types(src, Path(work) / "typed.onnx")
        calibrator = create_calibrator(src, op_types, augmented_model_path=str(Path(work) / "augmented.onnx"),
                                       calibrate_method=method, extra_options=options)
        calibrator.collect_data(FeedReader(feeds, inputs))
        cache = Path(work) / "ranges.json"
        save_tensors_data(calibrator.compute_data(), cache)
        del calibrator
        quantize_static(src, dst, None, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                        per_channel=config.per_channel, reduce_range=seven_bit_weights(config.reduce_range),
                        activation_type=activation, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded, calibrate_method=method, calibration_cache_path=cache,
                        extra_options=float_tensor_type())
    for line in chatter.getvalue().splitlines():
        log.debug("calibration: %s", line)
    apply_embeddings(dst, config.embeddings, excluded)
