"""Post-training quantization of an ONNX graph (one module per job: registry, configs, graph,
embeddings, calibration, int8, int4, floats, api).

A config says *what* (plain frozen dataclass); one registered function per config type says
*how* (the torchao `quantize_(model, Config())` style). Adding a scheme is one
`@register_scheme("name")` config class and one `@quantizer(Config)` function, in any
module (a plugin too: see edgegolf/plugins.py); the recipe's and the CLI's scheme choices
are read from SCHEMES, so nothing else changes.

    quantize(in_path, out_path, Int8Dynamic(per_channel=True), calibration_feeds=None)

Every scheme leaves graph inputs and outputs float32, and reports which compute nodes it
quantized and which stayed float, read back from the graph it wrote.
"""

from __future__ import annotations

# importing the scheme modules registers their @quantizer functions
from edgegolf.compression.quantize import floats, int4, int8  # noqa: F401
from edgegolf.compression.quantize.api import QuantReport, quantize
from edgegolf.compression.quantize.configs import (
    BLOCK_EMBEDDING_MODES,
    BLOCK_SIZES,
    BLOCKWISE_MODES,
    CALIBRATION_METHODS,
    EMBEDDING_MODES,
    INT4_ALGORITHMS,
    Fp16,
    Int4WeightOnly,
    Int8Dynamic,
    Int8Static,
    NoQuant,
    default_int8,
    resolve_blockwise,
    seven_bit_weights,
)
from edgegolf.compression.quantize.embeddings import quantize_embedding_rows
from edgegolf.compression.quantize.graph import COMPUTE_OPS, graph_summary, resolve_exclude, weight_matmuls
from edgegolf.compression.quantize.registry import (
    RECIPE_DEFAULT,
    SCHEMES,
    SEARCHED,
    QuantConfig,
    Quantizer,
    config_from_dict,
    config_to_dict,
    quantizer,
    register_scheme,
    scheme_name,
    scheme_names,
    searched_scheme_names,
)

__all__ = [
    "BLOCK_EMBEDDING_MODES", "BLOCK_SIZES", "BLOCKWISE_MODES", "CALIBRATION_METHODS", "COMPUTE_OPS", "EMBEDDING_MODES",
    "INT4_ALGORITHMS", "RECIPE_DEFAULT", "SCHEMES", "SEARCHED", "Fp16", "Int4WeightOnly", "Int8Dynamic",
    "Int8Static", "NoQuant", "QuantConfig", "QuantReport", "Quantizer", "config_from_dict", "config_to_dict",
    "default_int8", "graph_summary", "quantize", "quantize_embedding_rows", "quantizer", "register_scheme",
    "resolve_blockwise", "resolve_exclude", "scheme_name", "scheme_names", "searched_scheme_names",
    "seven_bit_weights", "weight_matmuls",
]
