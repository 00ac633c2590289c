"""Calibration feeds as onnxruntime's quantizers want them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgegolf.errors import DataError

log = logging.getLogger(__name__)

class FeedReader:
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


def with_tensor_types(src: Path, typed: Path) -> Path:
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


def complete_feeds(model, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
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
