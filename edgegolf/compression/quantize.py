"""Post-training quantization of an ONNX graph.

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

import collections
import contextlib
import fnmatch
import logging
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from edgegolf.errors import DataError, RecipeError
from edgegolf.export.onnx import atomic_output
from edgegolf.settings import check_instance, setting, validate

log = logging.getLogger(__name__)

EMBEDDING_MODES = ("per-row", "per-tensor", "float")
# Blockwise 4- or 8-bit tables in GatherBlockQuantized; a tied LM head then reads the same
# initializer through MatMulNBits (edgegolf/compression/block_tables.py).
BLOCK_EMBEDDING_MODES = ("int4-block", "int8-block")
INT4_ALGORITHMS = ("rtn", "hqq", "gptq")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
BLOCKWISE_MODES = ("none", "down-proj", "all")
BLOCK_SIZES = (16, 32, 64, 128, 256)  # what onnxruntime's blockwise quantizer (MLAS) accepts


# --- the registry: scheme name -> config class ---------------------------------------------
SCHEMES: dict[str, type] = {}  # in registration order: built-ins first, then plugins
RECIPE_DEFAULT = "default"  # the recipe's alias for edgegolf's tuned int8 (default_int8)


SEARCHED: list[str] = []  # schemes a search offers (register_scheme(..., search=True))


def register_scheme(name: str, *, search: bool = False) -> Callable[[type], type]:
    """Class decorator: `name` is how recipes and --quantize call this config class; `search`
    offers it to `edgegolf search` (whose space also reads the fields' `search` values)."""
    def register(cls: type) -> type:
        if not isinstance(name, str) or not name or name == RECIPE_DEFAULT:
            raise ValueError(f"quantization scheme name {name!r} is not accepted; give a non-empty name other than "
                             f"{RECIPE_DEFAULT!r}")
        if name in SCHEMES and SCHEMES[name] is not cls:
            raise ValueError(f"quantization scheme {name!r} is already registered by {SCHEMES[name].__qualname__}")
        SCHEMES[name] = cls
        if search and name not in SEARCHED:
            SEARCHED.append(name)
        return cls
    return register


def scheme_names(*, with_default: bool = False) -> tuple[str, ...]:
    """Every registered scheme name (with the recipe alias "default" first when asked)."""
    return ((RECIPE_DEFAULT,) if with_default else ()) + tuple(SCHEMES)


def searched_scheme_names() -> tuple[str, ...]:
    """What a search tries: the tuned default first (its baseline), the searched schemes, and
    "none" (float32, the reference) last."""
    return (RECIPE_DEFAULT, *(n for n in SEARCHED if n != "none"), *(("none",) if "none" in SEARCHED else ()))


# --- configs: what to do (each field carries its rule: edgegolf/settings.py) ------------------
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
    embeddings: str = setting("per-row", kind="str", choices=EMBEDDING_MODES + BLOCK_EMBEDDING_MODES)
    # MatMuls given blockwise int8 weights (MatMulNBits, 8 bits) whose activations are
    # quantized per token and block instead of per tensor: "down-proj" (weights with more
    # rows than columns: a transformer's FFN output, fed by the GELU's long-tailed output),
    # "all", or "none".
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
    embeddings: str = setting("per-row", kind="str", choices=("per-row", "float") + BLOCK_EMBEDDING_MODES)
    # how the MatMul weights are rounded: "rtn" round to nearest, "hqq" half-quadratic
    # (no data; asymmetric, float zero points), "gptq" (calibrated on the calibration feeds);
    # onnxruntime's implementations (matmul_nbits_quantizer).
    algorithm: str = setting("rtn", kind="str", choices=INT4_ALGORITHMS)
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


QuantConfig = Any  # an instance of any class in SCHEMES (the built-ins: NoQuant, Int8Dynamic, ...)


def scheme_name(config: QuantConfig) -> str:
    for name, cls in SCHEMES.items():
        if type(config) is cls:
            return name
    raise RecipeError(f"quantization config {config!r} is not one of: {', '.join(SCHEMES)}")


def default_int8() -> Int8Dynamic:
    """edgegolf's tuned int8 recipe: per-channel dynamic int8 MatMuls, FFN down-projections
    as 8-bit blockwise MatMulNBits with per-token int8 activations, per-row int8 embeddings.

    Measured on all-MiniLM-L6-v2, 2,225 BBC News texts at batch 1 x <=128 tokens, 1 thread
    (2026-11-27): 23.2 MB, p50 0.47x the fp32 export, mean cosine 0.9976 (min 0.9925) to
    PyTorch fp32, probe accuracy drop 0.0; onnxruntime's quantize_dynamic with default
    arguments: 22.9 MB, 0.42x, 0.9574 (min 0.9094). The MatMulNBits int8 kernels need
    onnxruntime >= 1.22 on x86-64 and >= 1.23 on ARM64; blockwise="none" is the portable
    variant (0.44x, mean 0.9951, min 0.9868).
    """
    return Int8Dynamic(per_channel=True, reduce_range="auto", embeddings="per-row", blockwise="down-proj",
                       block_size=128)


def config_from_dict(d: dict[str, Any]) -> QuantConfig:
    """{"scheme": "int8-dynamic", "per_channel": true, ...} -> Int8Dynamic(per_channel=True, ...)."""
    if not isinstance(d, dict):
        raise RecipeError(f"quantize must be a table such as {{scheme = 'int8-dynamic'}}, got {d!r}")
    scheme = d.get("scheme", "none")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise RecipeError(f"quantize.scheme = {scheme!r} is not accepted; choose one of: {', '.join(SCHEMES)}")
    cls = SCHEMES[scheme]
    known = [f.name for f in fields(cls)]
    for key, value in d.items():
        if key != "scheme" and key not in known:
            accepted = ", ".join(known) or "no other fields"
            raise RecipeError(f"quantize.{key} = {value!r} is not a field of scheme {scheme!r}; accepted: {accepted}")
    return validate(cls, {k: v for k, v in d.items() if k != "scheme"}, "quantize")


def config_to_dict(config: QuantConfig) -> dict[str, Any]:
    """The config as plain data, the inverse of config_from_dict (recorded in provenance)."""
    out: dict[str, Any] = {"scheme": scheme_name(config)}
    for key, value in asdict(config).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


# --- the report ----------------------------------------------------------------------------
@dataclass
class QuantReport:
    path: Path
    scheme: str
    quantized_ops: dict[str, int]  # op_type -> count of compute nodes whose weights are not float32
    float_nodes: list[str]  # compute nodes whose weights stayed float32
    excluded: list[str]  # node names the exclude patterns matched
    settings: dict[str, Any]  # the config as plain data


# Nodes that multiply activations by a stored weight; their weight's type says whether they
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
            helper.make_node("Cast", [f"{base}_int8_out"], [f"{base}_float_out"], name=f"{base}_Cast", to=TensorProto.FLOAT),
            helper.make_node("Gather", [s_name, ids], [f"{base}_scale_out"], name=f"{base}_ScaleGather", axis=0),
            helper.make_node("Unsqueeze", [f"{base}_scale_out", axes], [f"{base}_scale_col"], name=f"{base}_ScaleUnsqueeze"),
            helper.make_node("Mul", [f"{base}_float_out", f"{base}_scale_col"], [out], name=f"{base}_RowScale"),
        ]
        rewritten.append(node.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return rewritten


# --- how: one function per config type -------------------------------------------------------
class _RootChatter(logging.Filter):
    """onnxruntime's quantizers log through the root logger (advice to pre-process, one line
    per tensor); below ERROR those become our debug lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname:
            return True
        log.debug("onnxruntime: %s", record.getMessage())
        return False


@contextlib.contextmanager
def _application_logging_kept() -> Iterator[None]:
    """Leave the application's root logger as it was: importing matmul_nbits_quantizer calls
    logging.basicConfig(level=INFO), and a module-level logging.warning() on a root logger
    without handlers installs one."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    chatter = _RootChatter()
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


Quantizer = Callable[[Any, Path, Path, list[str], "list[dict[str, np.ndarray]] | None"], None]
_REGISTRY: dict[type, Quantizer] = {}


def quantizer(config_type: type) -> Callable[[Quantizer], Quantizer]:
    """Function decorator: how graphs are quantized for `config_type` (a registered scheme).

    The function gets (config, src .onnx, dst .onnx to write, node names excluded, calibration
    feeds or None) and writes dst; `quantize` wraps it with atomic output and the report.
    """
    def register(fn: Quantizer) -> Quantizer:
        _REGISTRY[config_type] = fn
        return fn
    return register


def quantize(in_path: str | Path, out_path: str | Path, config: QuantConfig, *,
             calibration_feeds: list[dict[str, np.ndarray]] | None = None) -> QuantReport:
    """Quantize the graph at `in_path` into `out_path` as `config` says."""
    import onnx

    in_path, out_path = Path(in_path), Path(out_path)
    scheme = scheme_name(config)
    model = onnx.load(str(in_path))
    excluded = resolve_exclude(model, getattr(config, "exclude", ()))
    handler = _REGISTRY.get(type(config))
    if handler is None:
        raise RecipeError(f"quantization scheme {scheme!r} has no @quantizer function registered for "
                          f"{type(config).__qualname__}")
    with atomic_output(out_path) as tmp, _application_logging_kept():
        handler(config, in_path, tmp, excluded, calibration_feeds)
    quantized_ops, float_nodes = graph_summary(onnx.load(str(out_path)))
    log.info("quantized %s with %s: %s; %d compute nodes stayed float", in_path.name, scheme,
             ", ".join(f"{k} x{v}" for k, v in quantized_ops.items()) or "nothing", len(float_nodes))
    return QuantReport(out_path, scheme, quantized_ops, float_nodes, excluded, config_to_dict(config))


def _save(model, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path))


def _float_tensor_type() -> dict[str, Any]:
    # onnxruntime's quantizer asks shape inference for each weight's type; contrib ops of a
    # fused graph have none, and float32 is what they hold.
    from onnx import TensorProto

    return {"DefaultTensorType": TensorProto.FLOAT}


def _apply_embeddings(path: Path, mode: str, excluded: list[str]) -> None:
    import onnx

    if mode != "per-row":
        return
    model = onnx.load(str(path))
    rewritten = quantize_embedding_rows(model, exclude=excluded)
    if rewritten:
        _save(model, path)
        log.info("per-row int8 embedding tables: %s", ", ".join(rewritten))


@quantizer(NoQuant)
def _no_quant(config: NoQuant, src: Path, dst: Path, excluded: list[str], feeds) -> None:
    shutil.copyfile(src, dst)


def weight_matmuls(model) -> dict[str, tuple[int, int]]:
    """MatMul node name -> (rows, columns) of its float32 weight initializer."""
    from onnx import TensorProto

    weights = {i.name: tuple(i.dims) for i in model.graph.initializer
               if i.data_type == TensorProto.FLOAT and len(i.dims) == 2}
    return {n.name: weights[n.input[1]] for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in weights}


def _nbits_quantizer():
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line per node
    return MatMulNBitsQuantizer


def _blockwise_int8(model, mode: str, block_size: int, excluded: list[str]):
    """MatMulNBits with 8-bit symmetric blockwise weights on the chosen MatMuls; accuracy
    level 4 makes onnxruntime quantize their activations per row and block at run time."""
    matmuls = weight_matmuls(model)
    chosen = {name for name, (rows, cols) in matmuls.items()
              if name not in excluded and (mode == "all" or rows > cols)}
    quantizer = _nbits_quantizer()(model, bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=sorted(set(matmuls) - chosen), op_types_to_quantize=("MatMul",))
    quantizer.process()
    return quantizer.model.model


@quantizer(Int8Dynamic)
def _int8_dynamic(config: Int8Dynamic, src: Path, dst: Path, excluded: list[str], feeds) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if config.blockwise != "none" or config.embeddings in BLOCK_EMBEDDING_MODES:
        model = onnx.load(str(src))
        # symmetric 8-bit blocks as the blockwise MatMuls; accuracy level 4: int8 compute for a tied head
        _apply_block_tables(model, config.embeddings, config.block_size, True, excluded, 4)
        if config.blockwise != "none":
            model = _blockwise_int8(model, config.blockwise, config.block_size, excluded)
        _save(model, dst)
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
        if any(n.op_type == "EmbedLayerNormalization" for n in onnx.load(str(src), load_external_data=False).graph.node):
            log.info("the graph's embeddings are fused into EmbedLayerNormalization: quantized per tensor, not per row")
    quantize_dynamic(src, dst, op_types_to_quantize=op_types, per_channel=config.per_channel,
                     reduce_range=seven_bit_weights(config.reduce_range), weight_type=QuantType.QInt8,
                     nodes_to_exclude=excluded,
                     extra_options=_float_tensor_type())
    _apply_embeddings(dst, config.embeddings, excluded)


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], input_names: set[str]):
        self._feeds = [{k: v for k, v in f.items() if k in input_names} for f in feeds]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._feeds):
            return None
        self._next += 1
        return self._feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


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
        src = _with_tensor_types(src, Path(work) / "typed.onnx")
        calibrator = create_calibrator(src, op_types, augmented_model_path=str(Path(work) / "augmented.onnx"),
                                       calibrate_method=method, extra_options=options)
        calibrator.collect_data(_FeedReader(feeds, inputs))
        cache = Path(work) / "ranges.json"
        save_tensors_data(calibrator.compute_data(), cache)
        del calibrator
        quantize_static(src, dst, None, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                        per_channel=config.per_channel, reduce_range=seven_bit_weights(config.reduce_range),
                        activation_type=activation, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded, calibrate_method=method, calibration_cache_path=cache,
                        extra_options=_float_tensor_type())
    for line in chatter.getvalue().splitlines():
        log.debug("calibration: %s", line)
    _apply_embeddings(dst, config.embeddings, excluded)


def _with_tensor_types(src: Path, typed: Path) -> Path:
    """A copy of the graph with every tensor's type recorded, or `src` if it already has them.

    onnxruntime's fusions write graphs without intermediate tensor types; the calibrator then
    skips tensors it cannot type (the pooler's Gather input on a fused BERT classifier), and
    quantize_static fails on the missing range.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(src))
    if model.graph.value_info:
        return src
    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as exc:  # inference is best effort: the untyped graph still calibrates most tensors
        log.debug("symbolic shape inference failed (%s); calibrating the graph as written", exc)
        return src
    onnx.save(inferred, str(typed))
    return typed


@quantizer(Int4WeightOnly)
def _int4(config: Int4WeightOnly, src: Path, dst: Path, excluded: list[str], feeds) -> None:
    import onnx

    model = onnx.load(str(src))
    # block tables first: a tied LM head becomes MatMulNBits over the table before the MatMul pass
    _apply_block_tables(model, config.embeddings, config.block_size, config.symmetric, excluded,
                        config.accuracy_level)
    if config.algorithm == "gptq":
        model = _gptq(model, config, excluded, feeds)
    else:
        algo = None
        if config.algorithm == "hqq":
            from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig

            algo = HQQWeightOnlyQuantConfig(block_size=config.block_size, bits=4, op_types_to_quantize=("MatMul",))
        quantizer = _nbits_quantizer()(model, bits=4, block_size=config.block_size,
                                         is_symmetric=config.symmetric, accuracy_level=config.accuracy_level,
                                         nodes_to_exclude=excluded, op_types_to_quantize=("MatMul",), algo_config=algo)
        quantizer.process()
        model = quantizer.model.model
    if config.embeddings == "per-row":
        quantize_embedding_rows(model, exclude=excluded)
    _save(model, dst)


def _apply_block_tables(model, mode: str, block_size: int, symmetric: bool, excluded: list[str],
                        accuracy_level: int | None) -> None:
    if mode not in BLOCK_EMBEDDING_MODES:
        return
    from edgegolf.compression.block_tables import quantize_gather_blocks

    bits = 4 if mode == "int4-block" else 8
    rewritten = quantize_gather_blocks(model, bits=bits, block_size=block_size, symmetric=symmetric, exclude=excluded,
                                       accuracy_level=accuracy_level)
    if rewritten:
        log.info("%d-bit blockwise embedding tables: %s", bits, ", ".join(rewritten))


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
    complete = _complete_feeds(model, feeds)
    chatter = io.StringIO()  # it prints a progress bar to stdout
    with contextlib.redirect_stdout(chatter):
        quantized = gptq_quantize(model, ((feed, None) for feed in complete), weight_config=weight_config,
                                  group_size=config.block_size, scheme=scheme, n_samples=-1,  # -1: every feed
                                  accuracy_level=config.accuracy_level or 0)
    return quantized.model


def _complete_feeds(model, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Each feed with only the graph's inputs, and empty float inputs where it lacks one (a causal
    LM's past cache: its named dimensions are the batch, then zero)."""
    from onnx import TensorProto

    out = []
    for feed in feeds:
        batch = next(iter(feed.values())).shape[0]
        full: dict[str, np.ndarray] = {}
        for graph_input in model.graph.input:
            if graph_input.name in feed:
                full[graph_input.name] = feed[graph_input.name]
                continue
            tensor = graph_input.type.tensor_type
            if tensor.elem_type != TensorProto.FLOAT:
                raise DataError(f"the calibration feeds lack the graph input {graph_input.name!r}")
            dims = [d.dim_value if d.HasField("dim_value") else (batch if i == 0 else 0)
                    for i, d in enumerate(tensor.shape.dim)]
            full[graph_input.name] = np.zeros(dims, dtype=np.float32)
        out.append(full)
    return out


@quantizer(Fp16)
def _fp16(config: Fp16, src: Path, dst: Path, excluded: list[str], feeds) -> None:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True, node_block_list=excluded or None)
    _save(model.model, dst)
