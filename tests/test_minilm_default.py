"""The README's main job on the real all-MiniLM-L6-v2: the default recipe end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgegolf
from edgegolf.runtime import load


@pytest.mark.slow
def test_default_recipe_on_the_real_minilm(tmp_path):
    out = tmp_path / "out"
    recipe = {"evaluate": {"limit": 300}, "bench": {"runs": 30, "max_seconds": 3.0}}
    result = edgegolf.compress(None, output=out, recipe=recipe, budget="size<=24MB,drop<=2")
    names = [s.name for s in result.stages]
    assert names[:2] == ["teacher", "onnx-fp32"] and names[-1] == "quantized"
    teacher, fp32, final = result.stages[0], result.stages[1], result.final
    assert fp32.metrics["fidelity_min_cosine"] > 0.9999  # the export computes what PyTorch computes
    assert final.size.raw_bytes <= 24e6 < fp32.size.raw_bytes / 3
    # better than naive int8 (whose mean cosine to the teacher is about 0.957, min 0.915)
    assert final.metrics["fidelity_mean_cosine"] >= 0.99
    assert final.metrics["fidelity_min_cosine"] >= 0.97
    assert teacher.metrics["accuracy"] > 90  # the linear probe on BBC News is a real signal
    assert result.verdict.fits

    manifest = json.loads((out / "manifest.json").read_text())
    quantize = next(r for r in manifest["provenance"] if r["stage"] == "quantize")
    assert quantize["settings"]["scheme"] == "int8-dynamic" and quantize["measured"]["quantized_ops"]
    model = load(out, threads=1)
    vectors = model.embed(["Oil prices rose sharply on Monday.", "The striker scored twice in the final."])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
