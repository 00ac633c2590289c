"""Recipes shared by tests."""

from __future__ import annotations

# A quick recipe for tests: a small stratified evaluation subset and short latency runs.
QUICK = {
    "evaluate": {"limit": 60, "calibration_size": 8},
    "bench": {"runs": 10, "warmup": 2, "max_seconds": 2.0},
}

