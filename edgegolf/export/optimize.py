"""onnxruntime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu, ...).

Only the offline fusions (opt_level 0/1) are saved: level-2+ graphs hold hardware-specific
nodes that onnxruntime documents as not portable. Whether the fused graph is kept is the
pipeline's decision, after measuring it.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path

from edgegolf.errors import ExportError, RecipeError
from edgegolf.export.onnx import atomic_output

log = logging.getLogger(__name__)

# Fusions emit onnxruntime contrib ops (Attention, SkipLayerNormalization, BiasGelu, ...),
# all in this domain; a plain torch export has none.
FUSED_DOMAIN = "com.microsoft"
MODEL_TYPES = ("bert", "gpt2", "bart", "t5", "vit", "clip")


@dataclass
class OptimizeReport:
    path: Path
    fused_ops: dict[str, int]  # op_type -> count of fused (com.microsoft) nodes in the new graph


def fused_op_counts(model) -> dict[str, int]:
    counts = collections.Counter(n.op_type for n in model.graph.node if n.domain == FUSED_DOMAIN)
    return dict(sorted(counts.items()))


def optimize_graph(in_path: str | Path, out_path: str | Path, *, model_type: str = "bert",
                   num_heads: int, hidden_size: int, opt_level: int = 0) -> OptimizeReport:
    """Fuse `in_path` into `out_path` with float32 inputs and outputs kept as they were."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if model_type not in MODEL_TYPES:
        raise RecipeError(f"optimize model_type = {model_type!r} is not supported; choose one of: {', '.join(MODEL_TYPES)}")
    if opt_level not in (0, 1):
        raise RecipeError(f"optimize opt_level = {opt_level!r} is not accepted; choose 0 or 1 (higher levels are hardware-specific)")
    in_path, out_path = Path(in_path), Path(out_path)
    # The embedding Gathers stay unfused: inside EmbedLayerNormalization the tables are out of
    # reach of the per-row int8 rewrite and of int4, and a fused MiniLM classifier's int4
    # bundle stayed 64.7 MB instead of 20.2 MB.
    options = FusionOptions(model_type)
    options.enable_embed_layer_norm = False
    # num_heads/hidden_size 0 lets onnxruntime read them from the graph
    try:
        model = optimize_model(str(in_path), model_type=model_type, num_heads=max(num_heads, 0),
                               hidden_size=max(hidden_size, 0), opt_level=opt_level, use_gpu=False,
                               optimization_options=options)
    except Exception as exc:  # a graph onnxruntime's fusion scripts cannot read
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"graph fusion of {in_path.name} failed: {first}") from exc
    fused = fused_op_counts(model.model)
    with atomic_output(out_path) as tmp:
        model.save_model_to_file(str(tmp))
    log.info("optimized %s -> %s: %s", in_path.name, out_path.name,
             ", ".join(f"{k} x{v}" for k, v in fused.items()) or "nothing fused")
    return OptimizeReport(out_path, fused)
