"""quantize(): a registered scheme's function run with atomic output and onnxruntime's
logging kept off the application's root logger, and the report read back from the result."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgegolf.compression.quantize.graph import graph_summary, resolve_exclude
from edgegolf.compression.quantize.registry import _REGISTRY, QuantConfig, config_to_dict, scheme_name
from edgegolf.errors import RecipeError
from edgegolf.publish import atomic_output

log = logging.getLogger(__name__)

@dataclass
class QuantReport:
    path: Path
    scheme: str
    quantized_ops: dict[str, int]  # op_type -> count of compute nodes whose weights are not float32
    float_nodes: list[str]  # compute nodes whose weights stayed float32
    excluded: list[str]  # node names the exclude patterns matched
    settings: dict[str, Any]  # the config as plain data
    details: dict[str, Any] = field(default_factory=dict)  # what the scheme chose (mixed precision's plan)


# Nodes that multiply activations by a stored weight; their weight's type says whether they


class _RootChatter(logging.Filter):
    """onnxruntime's quantizers log through the root logger (advice to pre-process, one line
    per tensor); below ERROR those become our debug lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname:
            return True
        log.debug("onnxruntime: %s", record.getMessage())
        return False


@contextlib.contextmanager
def application_logging_kept() -> Iterator[None]:
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


def quantize(in_path: str | Path, out_path: str | Path, config: QuantConfig, *,
             calibration_feeds: list[dict[str, np.ndarray]] | None = None,
             beside: Sequence[Path] = ()) -> QuantReport:
    """Quantize the graph at `in_path` into `out_path` as `config` says. `beside`: the files the
    runtime needs next to the graph (the tokenizer), which a size limit counts (choose.SchemeChoice)."""
    import onnx

    from edgegolf.compression.quantize.choose import SchemeChoice, choose_and_quantize

    in_path, out_path = Path(in_path), Path(out_path)
    if isinstance(config, SchemeChoice):  # no scheme asked for: the size limit picks one of ours
        return choose_and_quantize(in_path, out_path, config, calibration_feeds=calibration_feeds, beside=beside)
    scheme = scheme_name(config)
    model = onnx.load(str(in_path))
    excluded = resolve_exclude(model, getattr(config, "exclude", ()))
    handler = _REGISTRY.get(type(config))
    if handler is None:
        raise RecipeError(f"quantization scheme {scheme!r} has no @quantizer function registered for "
                          f"{type(config).__qualname__}")
    with atomic_output(out_path) as tmp, application_logging_kept():
        details = handler(config, in_path, tmp, excluded, calibration_feeds) or {}
    quantized_ops, float_nodes = graph_summary(onnx.load(str(out_path)))
    log.info("quantized %s with %s: %s; %d compute nodes stayed float", in_path.name, scheme,
             ", ".join(f"{k} x{v}" for k, v in quantized_ops.items()) or "nothing", len(float_nodes))
    return QuantReport(out_path, scheme, quantized_ops, float_nodes, excluded, config_to_dict(config), details)
