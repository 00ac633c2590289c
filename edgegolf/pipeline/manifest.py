"""The bundle's manifest.json: everything needed to load the bundle and to rerun exactly the
same pipeline (the recipe, the budget, the provenance of every stage, the package versions)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import TYPE_CHECKING, Any

from edgegolf import __version__
from edgegolf.data import Split
from edgegolf.tasks import get_task

if TYPE_CHECKING:
    from edgegolf.pipeline.compress import CompressResult
    from edgegolf.pipeline.runner import Outcome


def build_manifest(result: "CompressResult", outcome: "Outcome", split: Split, *, trust_remote_code: bool,
                   allow_pickle: bool, seconds: float) -> dict[str, Any]:
    recipe, src, artifact = result.recipe, result.source, outcome.artifact
    source_arg = "" if src.kind == "default" else f" {src.name}"
    return {
        "created_by": f"edgegolf {__version__}",
        "task": result.task,
        "model": artifact.spec.to_dict(),
        "source": src.to_dict(),
        "recipe": recipe.to_dict(),
        "budget": result.budget.to_dict(),
        "device_profile": result.profile.name,
        "device": result.profile.to_dict(),  # threads and cores: what the report names
        "trust_remote_code": trust_remote_code,
        "allow_pickle": allow_pickle,
        "export": {"exporter": recipe.export.exporter, "opset": recipe.export.opset,
                   "max_abs_diff": artifact.export_report.max_abs_diff, "atol": recipe.export.atol},
        "evaluation": {"data": recipe.evaluate.data, "train_texts": len(split.train), "test_texts": len(split.test),
                       "classes": sorted(set(split.train.labels) | set(split.test.labels)),
                       # texts per padded batch each stage was evaluated at (1: one at a time)
                       "batch": {s.name: s.eval_batch for s in result.stages},
                       "limit": recipe.evaluate.limit,
                       "accuracy_meaning": get_task(result.task).accuracy_meaning},
        "stages": {s.name: s.summary() for s in result.stages},
        "stage_order": [s.name for s in result.stages],  # the declared flow's order (JSON readers may sort keys)
        "metrics": result.final.metrics,
        "verdict": result.verdict.to_dict(),
        "provenance": outcome.provenance,
        "rerun": f"edgegolf compress{source_arg} --recipe recipe.toml -o OUT",
        "versions": versions(),
        "seconds": round(seconds, 1),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found
