"""edgegolf.runtime loads and runs bundles in a process where torch & co. cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgegolf.runtime import load
from tests.test_runtime_bundles import build_bundle

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ["torch", "transformers", "optimum", "onnx", "onnxscript", "sklearn", "safetensors", "edgegolf.pipeline"]

# Installed before anything else runs: any import of a blocked package (or of its submodules)
# raises, as it would on a device where they are not installed.
APP = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is not installed on this device")
        return None
sys.meta_path.insert(0, Blocker())

import json
from edgegolf.runtime import load
embedder, classifier = load(sys.argv[2], threads=1), load(sys.argv[3], threads=1)
texts = ["the bank shares fell", "new album released"]
result = {
    "vectors": embedder.embed(texts).tolist(),
    "labels": [p.label for p in classifier.classify(texts)],
    "blocked_loaded": sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)),
    "third_party": sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names) - {"__main__"}),
}
try:
    import torch
    result["torch"] = "imported"
except ImportError as exc:
    result["torch"] = str(exc)
print(json.dumps(result))
"""


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
