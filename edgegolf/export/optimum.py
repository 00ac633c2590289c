"""The optional exporter backend: Hugging Face Optimum (`--exporter optimum`).

optimum's ONNX exporter lives in the package optimum-onnx, whose releases need
transformers<4.58 (0.1.0 pins optimum~=2.1.0), so it cannot share an environment with transformers 5: it is
the `optimum` extra, used in its own environment. Its graph is checked against PyTorch the
same way as our own export.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgegolf.errors import ExportError
from edgegolf.export.onnx import ExportReport, verify_onnx

log = logging.getLogger(__name__)

# our task names -> optimum's task names
_TASKS = {"feature-extraction": "feature-extraction", "text-classification": "text-classification"}


def require_optimum():
    """optimum's export entry point, or a message naming the extra to install."""
    from edgegolf.extras import require_extra

    return require_extra("optimum", "optimum.exporters.onnx", needed_by="--exporter optimum").main_export


def export_with_optimum(model_dir: Path, out_dir: Path, *, task: str, opset: int,
                        reference: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                        verify_feeds: list[dict[str, np.ndarray]], atol: float,
                        input_names: list[str], output_names: list[str],
                        trust_remote_code: bool = False) -> ExportReport:
    main_export = require_optimum()
    started = time.perf_counter()
    try:
        main_export(str(model_dir), output=str(out_dir), task=_TASKS[task], opset=opset, device="cpu",
                    trust_remote_code=trust_remote_code, do_validation=False,
                    library_name="transformers")  # not sentence-transformers: the runtime pools
    except Exception as exc:  # optimum raises many types; all mean "this model did not export"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"optimum could not export {str(model_dir)!r} for {task}: {first}") from exc
    path = Path(out_dir) / "model.onnx"
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    got_inputs = [i.name for i in graph.input]
    got_outputs = [o.name for o in graph.output]
    if sorted(got_inputs) != sorted(input_names) or list(output_names) != got_outputs[: len(output_names)]:
        raise ExportError(f"optimum's graph has inputs {got_inputs} and outputs {got_outputs}; "
                          f"the runtime feeds {input_names} and reads {output_names}")
    diff = verify_onnx(path, reference, verify_feeds, atol=atol, output_names=output_names)
    seconds = time.perf_counter() - started
    log.info("optimum exported %s in %.1f s; max abs diff to PyTorch %.2e", path.name, seconds, diff)
    return ExportReport(path, opset, diff, atol, seconds, list(input_names), list(output_names))
