"""The bundled all-MiniLM-L6-v2 as a plain fp32 bundle, built by edgegolf's own pipeline.

The runtime and harness benchmarks (benchmarks/) and two slow tests time or check this bundle, so it is
made by the same export path users get, not by a second export written for the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

# max_length 256: the model's own sentence_bert_config.json; no quantization, no fusions.
RECIPE = {
    "export": {"max_length": 256},
    "optimize": {"mode": "off"},
    "quantize": {"scheme": "none"},
    "evaluate": {"limit": 20},
    "bench": {"runs": 5, "warmup": 1, "max_seconds": 1.0},
}


def fp32_minilm_bundle(folder: Path) -> Path:
    """Build (or reuse) the bundle at `folder`; returns `folder`."""
    import edgegolf

    folder = Path(folder)
    if not (folder / "manifest.json").exists():
        edgegolf.compress(None, output=folder, recipe=RECIPE, force=True)
    return folder
