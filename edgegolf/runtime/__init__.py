"""What an application embeds: load an edgegolf bundle and run it.

    from edgegolf.runtime import load
    model = load("out/")
    vectors = model.embed(["a sentence", "another"])      # feature-extraction bundles
    predictions = model.classify(["a headline"])          # text-classification bundles
    model.generate("The economy", max_new_tokens=20)      # causal-lm bundles (also .score(texts))

Imports only the standard library, numpy, onnxruntime and tokenizers: an app needs neither
torch nor transformers (tests/test_runtime_isolation.py enforces this).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgegolf.runtime.causal_lm import CausalLM, Generation, LMScore
from edgegolf.runtime.manifest import read_manifest
from edgegolf.runtime.models import ClassificationModel, EmbeddingModel, Prediction, TaskModel, open_model
from edgegolf.runtime.spec import ModelSpec

__all__ = ["CausalLM", "ClassificationModel", "Generation", "LMScore", "EmbeddingModel", "ModelSpec", "Prediction",
           "TaskModel", "load", "open_model"]

log = logging.getLogger(__name__)


def load(bundle_dir: str | os.PathLike[str], *, threads: int | None = None,
         providers: list[str] | None = None) -> TaskModel:
    """The bundle's task model, after checking every file against the manifest's sha256.

    threads: onnxruntime intra-op threads (None: its default, one per core).
    providers: None runs on CPU; ["cuda"] needs onnxruntime-gpu.
    """
    folder = Path(bundle_dir)
    manifest = read_manifest(folder, verify=True)
    spec = ModelSpec.from_dict(manifest["model"])
    model = open_model(folder / spec.onnx_file, folder / spec.tokenizer_file, spec, threads=threads,
                       providers=providers)
    model.manifest = manifest
    log.info("loaded %s bundle %s", spec.task, folder)
    return model
