"""The built-in schemes' configs: what to do. Each is a plain frozen dataclass whose fields
carry their rules (edgegolf/settings.py); `register_scheme` makes it a recipe/CLI choice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from edgegolf.compression.quantize.registry import register_scheme
from edgegolf.errors import RecipeError
from edgegolf.settings import check_instance, setting

log = logging.getLogger(__name__)

EMBEDDING_MODES = ("per-row", "per-tensor", "float")
# Blockwise 4- or 8-bit tables in GatherBlockQuantized; a tied LM head then reads the same
# initializer through MatMulNBits (edgegolf/compression/block_tables.py).
BLOCK_EMBEDDING_MODES = ("int4-block", "int8-block")
SEARCHED_EMBEDDINGS = ("per-row", "int4-block")  # what `edgegolf search` offers: 8-bit rows or 4-bit blocks
INT4_ALGORITHMS = ("rtn", "hqq", "gptq")
MIXED_UNITS = ("block", "matmul")  # what changes bits together: a transformer block's MatMuls, or one MatMul
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
BLOCKWISE_MODES = ("none", "down-proj", "all", "auto")
BLOCK_SIZES = (16, 32, 64, 128, 256)  # what onnxruntime's blockwise quantizer (MLAS) accepts


def seven_bit_weights(reduce_range: bool | str) -> bool:
    """The reduce_range onnxruntime gets: "auto" decides by this machine's CPU."""
    if reduce_range != "auto":
        return bool(reduce_range)
    from edgegolf.devices.cpu_features import int8_saturates

    saturates = int8_saturates()
    if saturates:
        log.info("int8 with 7-bit weights: this x86 CPU has no VNNI, and its int8 kernels saturate with 8-bit "
                 "weights (set quantize.reduce_range = false for a VNNI or ARM target)")
    return saturates



_EXCLUDE = "give a list of node names or patterns such as '*/layer.0/*'"


def _exclude() -> Any:
    return setting((), kind="strings", accepts=_EXCLUDE, cli="--exclude",
                   help="nodes kept float: names or fnmatch patterns")


def _reduce_range() -> Any:
    # 7-bit weights: "auto" uses them where this CPU's int8 kernels would saturate (x86 without
    # VNNI, edgegolf/devices/cpu_features.py); true/false force it for another target.
    return setting("auto", choices=("auto", True, False), help="7-bit weights: auto (by this CPU), true, false")


@register_scheme("none", search=True)
@dataclass(frozen=True)
class NoQuant:
    """Leave the graph float32 (the output is a copy of the input)."""

    batch_independent: ClassVar[bool] = True  # evaluation may batch texts (edgegolf/measure/evaluate.py)


@register_scheme("int8-dynamic", search=True)
@dataclass(frozen=True)
class Int8Dynamic:
    """int8 weights, activations quantized at run time per tensor (onnxruntime quantize_dynamic).

    `embeddings`: how float embedding tables read by Gather are stored — "per-row" is our
    rewrite (int8 rows, one float scale per row), "per-tensor" onnxruntime's (one scale for
    the whole table), "int8-block"/"int4-block" blockwise rows in GatherBlockQuantized that a
    tied LM head shares (blocks of `block_size`), "float" leaves them as they are.
    """

    per_channel: bool = setting(True, kind="bool")
    reduce_range: bool | str = _reduce_range()
    exclude: tuple[str, ...] = _exclude()
    embeddings: str = setting("per-row", kind="str", choices=EMBEDDING_MODES + BLOCK_EMBEDDING_MODES,
                              search=SEARCHED_EMBEDDINGS)
    # MatMuls given blockwise int8 weights (MatMulNBits, 8 bits) whose activations are
    # quantized per token and block instead of per tensor: "down-proj" (weights with more
    # rows than columns: a transformer's FFN output, fed by the GELU's long-tailed output),
    # "all", "none", or "auto" (the default recipe's: see resolve_blockwise).
    blockwise: str = setting("none", kind="str", choices=BLOCKWISE_MODES)
    block_size: int = setting(128, kind="int", choices=BLOCK_SIZES, cli="--block-size")
    # activation scales come from the whole input tensor: a text's result changes with its batch neighbours
    batch_independent: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_instance(self, "quantize")


@register_scheme("int8-static")
@dataclass(frozen=True)
class Int8Static:
    """int8 weights and activations in QDQ format, activation ranges calibrated on real feeds."""

    method: str = setting("minmax", kind="str", choices=CALIBRATION_METHODS, cli="--calibration")
    per_channel: bool = setting(True, kind="bool")
    exclude: tuple[str, ...] = _exclude()
    embeddings: str = setting("per-row", kind="str", choices=EMBEDDING_MODES)
    percentile: float = setting(99.999, kind="float", minimum=90.0, maximum=100.0, help='only for method "percentile"')
    # histogram size for percentile and entropy; 2048 is TensorRT's entropy recipe (GTC 2017,
    # S7310). Entropy's search is quadratic in it: MiniLM calibrates in ~1 min at 2048.
    histogram_bins: int = setting(2048, kind="int", minimum=256)
    # U8S8: onnxruntime's recommended pair on x86 (quantization docs)
    activation_type: str = setting("uint8", kind="str", choices=("uint8", "int8"))
    # quantizing Add/LayerNorm/Softmax costs accuracy
    op_types: tuple[str, ...] = setting(("MatMul", "Gemm"), kind="strings",
                                        accepts="give operator types such as ['MatMul']")
    reduce_range: bool | str = _reduce_range()  # as Int8Dynamic's: 7-bit weights where int8 kernels saturate
    batch_independent: ClassVar[bool] = True  # calibrated, fixed activation scales

    def __post_init__(self) -> None:
        check_instance(self, "quantize")
        if not self.op_types:
            raise RecipeError("quantize.op_types = () is not accepted; give operator types such as ['MatMul']")


@register_scheme("int4", search=True)
@dataclass(frozen=True)
class Int4WeightOnly:
    """4-bit blockwise weights in MatMulNBits (onnxruntime MatMulNBitsQuantizer); activations float."""

    block_size: int = setting(32, kind="int", choices=BLOCK_SIZES, cli="--block-size", search=(32, 64, 128))
    symmetric: bool = setting(True, kind="bool")
    # onnxruntime: 0/None unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute. 4 by measurement: on
    # SmolLM2-135M (benchmarks/smollm2.py, AVX2 without VNNI, 1 thread) decode 51.0 -> 24.8 ms,
    # bits/byte 1.3095 -> 1.3105.
    accuracy_level: int | None = setting(4, kind="int", optional=True, choices=(0, 1, 2, 3, 4))
    exclude: tuple[str, ...] = _exclude()
    # int8 rows: the word table is the largest tensor of a small encoder; "int4-block" /
    # "int8-block": blockwise rows in GatherBlockQuantized, shared by a tied LM head.
    embeddings: str = setting("per-row", kind="str", choices=("per-row", "float") + BLOCK_EMBEDDING_MODES,
                              search=SEARCHED_EMBEDDINGS)
    # how the MatMul weights are rounded: "rtn" round to nearest, "hqq" half-quadratic
    # (no data; asymmetric, float zero points), "gptq" (calibrated on the calibration feeds);
    # onnxruntime's implementations (matmul_nbits_quantizer).
    algorithm: str = setting("rtn", kind="str", choices=INT4_ALGORITHMS)
    # mixed precision: with a limit, the units (each transformer block's MatMuls, or each MatMul)
    # whose 4-bit rounding costs the most bits/byte on the calibration feeds, per extra byte, get
    # 8 bits while the graph stays within this many MB; the plan goes to the manifest (mixed.py)
    mixed_size_mb: float | None = setting(None, kind="float", optional=True, minimum=0.001,
                                          help="size limit in MB for mixed 4/8-bit weights (unset: all 4-bit)")
    mixed_unit: str = setting("block", kind="str", choices=MIXED_UNITS)
    batch_independent: ClassVar[bool] = True  # weight-only (accuracy_level 4 quantizes activations per row)

    def __post_init__(self) -> None:
        check_instance(self, "quantize")


@register_scheme("fp16")
@dataclass(frozen=True)
class Fp16:
    """float16 weights and compute, float32 graph inputs and outputs."""

    exclude: tuple[str, ...] = _exclude()
    batch_independent: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_instance(self, "quantize")


def default_int8() -> Int8Dynamic:
    """edgegolf's tuned int8 recipe: per-channel dynamic int8 MatMuls (7-bit weights where the
    CPU's int8 kernels saturate), per-row int8 embeddings, every MatMul a plain dynamic one.

    FFN down-projections as blockwise MatMulNBits (blockwise="down-proj") are the default for
    decoder LMs only (blockwise="auto", resolve_blockwise): on an encoder, on an AVX2 CPU
    without VNNI, their int8 kernels cost what the rest of int8 saves.
    benchmarks/int8_speed.py on all-MiniLM-L6-v2 (2026-11-30, 1 thread, batch 1 x 128, fused
    input, loaded machine; p50 ratio to the fp32 export, mean/min cosine to it on 100 BBC texts):
    blockwise "none" 0.71x, 0.9939/0.9889; "down-proj" 1.01x, 0.9968/0.9951; onnxruntime's
    quantize_dynamic with default arguments 0.67x, 0.9578/0.9232. The README's compress
    (benchmarks/compress_default.py --eval-limit 200, same day): 23.8 MB, p50 0.68x the fp32
    export, cosine 0.9941/0.9877 to PyTorch fp32, probe accuracy drop 0.0 (quantize_dynamic
    defaults: 0.70x, 0.9577/0.9274). Ask for
    quantize.blockwise = "down-proj" where the last 0.003 of cosine matters more than latency.
    """
    return Int8Dynamic(per_channel=True, reduce_range="auto", embeddings="per-row", blockwise="auto",
                       block_size=128)


def resolve_blockwise(mode: str, graph_inputs: list[str]) -> str:
    """"auto": down-projections blockwise in a decoder LM's graph (one with a key/value cache
    input), none elsewhere. A decoder's FFN down-projection input has outliers that one
    activation scale per tensor cannot hold: on SmolLM2-135M (benchmarks/smollm2.py,
    2026-11-30) dynamic int8 with "none" lost +0.217 bits/byte to fp32 [+0.169, +0.296],
    with "down-proj" +0.030 [+0.022, +0.039], decode 34.4 vs 33.0 ms. On encoders "none" is
    the faster one (see default_int8)."""
    if mode != "auto":
        return mode
    return "down-proj" if any(name.startswith("past.") for name in graph_inputs) else "none"
