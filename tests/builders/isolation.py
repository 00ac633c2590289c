"""A small app that runs edgegolf.runtime where torch & co. cannot be imported."""

from __future__ import annotations

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

