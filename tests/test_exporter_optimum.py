"""`--exporter optimum`: runs in its own environment (transformers<4.58, see .ci/run);
in the main environment it checks the clear message instead."""

from __future__ import annotations

import importlib.util
import os

import pytest

import edgegolf.pipeline as pipeline
from edgegolf.errors import MissingExtraError

HAS_OPTIMUM = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.exporters") is not None
RECIPE = {
    "export": {"exporter": "optimum"},
    "optimize": {"mode": "off"},
    "quantize": {"scheme": "int8-dynamic", "per_channel": True},
    "evaluate": {"limit": 40, "calibration_size": 4},
    "bench": {"runs": 10, "warmup": 2, "max_seconds": 2.0},
}


@pytest.mark.skipif(HAS_OPTIMUM, reason="optimum is installed here")
def test_without_optimum_the_message_names_the_extra(tmp_path):
    with pytest.raises(MissingExtraError, match="optimum"):
        pipeline.compress(None, output=tmp_path / "out", recipe=RECIPE)
    assert not (tmp_path / "out").exists()


@pytest.mark.optimum
# .ci/run sets EDGEGOLF_REQUIRE_OPTIMUM in the optimum environment, so a broken install fails there.
@pytest.mark.skipif(not HAS_OPTIMUM and not os.environ.get("EDGEGOLF_REQUIRE_OPTIMUM"),
                    reason="needs the optimum environment (.ci/run builds it)")
def test_optimum_export_of_the_real_minilm(tmp_path):
    result = pipeline.compress(None, output=tmp_path / "out", recipe=RECIPE)
    fp32 = result.stages[1]
    assert fp32.metrics["fidelity_min_cosine"] > 0.9999
    assert result.manifest["export"]["exporter"] == "optimum"
    assert result.manifest["export"]["max_abs_diff"] < 1e-3
    assert result.stages[-1].size.raw_bytes < fp32.size.raw_bytes / 3
