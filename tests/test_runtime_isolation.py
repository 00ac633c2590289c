"""edgegolf.runtime loads and runs bundles in a process where torch & co. cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgegolf.runtime import load
from tests.builders.bundles import build_bundle
from tests.builders.isolation import APP, BLOCKED

REPO = Path(__file__).resolve().parents[1]


def test_runtime_runs_where_torch_transformers_and_onnx_cannot_be_imported(tmp_path):
    embedder = build_bundle(tmp_path / "embed")
    classifier = build_bundle(tmp_path / "classify", task="text-classification")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", APP, ",".join(BLOCKED), str(embedder.folder), str(classifier.folder)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch"] == "torch is not installed on this device"  # the blocker was live
    assert result["blocked_loaded"] == []
    # what an app pulls in: the runtime's own dependencies (and what they import) only
    assert {"edgegolf", "numpy", "onnxruntime", "tokenizers"} <= set(result["third_party"])
    assert not set(result["third_party"]) & {"torch", "transformers", "optimum", "onnx", "typer", "rich"}
    texts = ["the bank shares fell", "new album released"]
    np.testing.assert_allclose(result["vectors"], load(embedder.folder).embed(texts), atol=1e-6)
    assert result["labels"] == [p.label for p in load(classifier.folder).classify(texts)]
