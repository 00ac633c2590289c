"""Export a torch module to ONNX (legacy tracer) and check the graph against PyTorch.

The exporter is `torch.onnx.export(dynamo=False)`: onnxruntime's transformer fusions only
recognise the legacy exporter's graphs (seen with onnxruntime 1.32: no fusion on dynamo
exports), and it writes one self-contained file (dynamo adds model.onnx.data by default).
Verification runs a real onnxruntime CPU session on real tokenized feeds.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgegolf.errors import ExportError
from edgegolf.publish import atomic_output

log = logging.getLogger(__name__)

DYNAMIC_AXES = {0: "batch", 1: "sequence"}


@dataclass
class ExportReport:
    path: Path
    opset: int
    max_abs_diff: float
    tolerance: float
    seconds: float
    input_names: list[str]
    output_names: list[str]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def export_onnx(
    module,
    out_path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    sample_feeds: dict[str, np.ndarray],
    verify_feeds: list[dict[str, np.ndarray]],
    opset: int = 17,
    atol: float = 1e-4,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> ExportReport:
    """Trace `module` (forward(*inputs in input_names order) -> tuple in output_names order)
    to `out_path`, then verify it on every feed of `verify_feeds`.

    The file appears only once export and verification both succeeded. `dynamic_axes`
    (default: batch and sequence, dims 0 and 1, of every input and output) names the dims
    that vary, for graphs with other shapes (a causal LM's key/value cache).
    """
    import torch

    started = time.perf_counter()
    out_path = Path(out_path)
    missing = [n for n in input_names if n not in sample_feeds]
    if missing:
        raise ExportError(f"sample_feeds lacks input {missing[0]!r}; it must hold every input of {input_names}")
    if not verify_feeds:
        raise ExportError("verify_feeds is empty; give at least one feed of real tokenized text to check the export")
    module.eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample_feeds[n])) for n in input_names)
    with atomic_output(out_path) as tmp:
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning and tracer warnings
                torch.onnx.export(
                    module, args, str(tmp), dynamo=False, input_names=list(input_names),
                    output_names=list(output_names), opset_version=opset, do_constant_folding=True,
                    dynamic_axes=dynamic_axes or {name: DYNAMIC_AXES for name in [*input_names, *output_names]},
                )
        except Exception as exc:  # the tracer raises many types; all mean "this model did not export"
            inner = getattr(module, "model", module)
            raise ExportError(
                f"torch.onnx export of {type(inner).__name__} failed: {_first_line(exc)}"
            ) from exc

        def reference(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            with torch.no_grad():
                outputs = module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names))
            return [o.detach().float().numpy() for o in outputs]

        diff = verify_onnx(tmp, reference, verify_feeds, atol=atol, output_names=output_names)
    seconds = time.perf_counter() - started
    log.info("exported %s (opset %d) in %.1f s; max abs diff to PyTorch %.2e", out_path.name, opset, seconds, diff)
    return ExportReport(out_path, opset, diff, atol, seconds, list(input_names), list(output_names))


def verify_onnx(
    onnx_path: str | Path,
    reference: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    feeds: list[dict[str, np.ndarray]],
    atol: float,
    output_names: Sequence[str],
) -> float:
    """Max abs difference between the graph's outputs and `reference` over all feeds.

    Raises ExportError naming the first output (and feed) whose difference exceeds `atol`.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in session.get_inputs()}
    worst = 0.0
    for index, feed in enumerate(feeds):
        got = session.run(list(output_names), {k: v for k, v in feed.items() if k in graph_inputs})
        want = reference(feed)
        if len(want) != len(got):
            raise ExportError(
                f"the reference gave {len(want)} outputs for feed {index} but the graph has {len(got)} ({list(output_names)})"
            )
        for name, g, w in zip(output_names, got, want):
            if g.shape != w.shape:
                raise ExportError(f"output {name!r} has shape {g.shape} in ONNX but {w.shape} in PyTorch (feed {index})")
            diff = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) if g.size else 0.0
            if not np.isfinite(diff) or diff > atol:
                raise ExportError(
                    f"output {name!r} differs from PyTorch by {diff:.3g} on feed {index} (shape {g.shape}); "
                    f"tolerance is atol={atol:g}"
                )
            worst = max(worst, diff)
    return worst
