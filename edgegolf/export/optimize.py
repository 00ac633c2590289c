"""onnxruntime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu, ...).

Only the offline fusions (opt_level 0/1) are saved: level-2+ graphs hold hardware-specific
nodes that onnxruntime documents as not portable. Whether the fused graph is kept is the
pipeline's decision, after measuring it.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from edgegolf.errors import ExportError, RecipeError
from edgegolf.publish import atomic_output

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
        with fusion_messages_at_debug():
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


class _ToDebug(logging.Handler):
    """Re-emits a third-party record through our logger at DEBUG."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("onnxruntime fusion (%s, %s): %s", record.name, record.levelname, record.getMessage())


def _fusion_loggers() -> list[logging.Logger]:
    """The loggers of onnxruntime's transformer scripts. They import each other as top-level
    modules (onnxruntime/transformers/__init__.py puts its folder on sys.path), so their loggers
    are named "fusion_attention", "onnx_model", ...: found by where their module lives."""
    import onnxruntime.transformers as package

    folder = str(Path(package.__file__).parent)
    names = {"onnxruntime.transformers"}
    for name, module in list(sys.modules.items()):
        if module is not None and str(getattr(module, "__file__", None) or "").startswith(folder):
            names.add(name)
    known = logging.root.manager.loggerDict
    return [logging.getLogger(name) for name in sorted(names) if name in known]


@contextlib.contextmanager
def fusion_messages_at_debug():
    """While onnxruntime's fusion scripts run, what they log (e.g. "Input hidden size (192) is not
    same as weight matrix dimension of q,k,v (384)" once per head-pruned graph: expected, since
    we pass the pruned attention width) and what they print go to our log at DEBUG, not to the
    terminal: they reached it through logging's last-resort handler and bare print() calls."""
    loggers = _fusion_loggers()
    handler = _ToDebug()
    saved = [(logger, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False  # not to the root logger (nor, without handlers there, to stderr)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for logger, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
        for line in printed.getvalue().splitlines():
            if line.strip():
                log.debug("onnxruntime fusion printed: %s", line)
