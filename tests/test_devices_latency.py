"""The latency harness on real callables (sleeps of known length) and on known samples."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegolf.devices.latency import bootstrap_mean_ci, latency_stats, measure_latency
from edgegolf.errors import RecipeError


def _ordered(stats) -> bool:
    return stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms


def test_sleep_of_known_length_is_timed_sanely():
    stats = measure_latency(lambda: time.sleep(0.002), warmup=2, runs=30, max_seconds=None)
    assert stats.runs == 30 and stats.stopped_by == "runs"
    # sleep never returns early; the upper bound only has to survive a busy shared box
    assert 2.0 <= stats.min_ms <= stats.p50_ms < 50.0
    assert _ordered(stats)
    low, high = stats.mean_ci95_ms
    assert low <= stats.mean_ms <= high
    assert stats.load_avg >= 0.0


def test_warmup_calls_are_made_but_not_timed():
    calls = []
    stats = measure_latency(lambda: calls.append(1), warmup=4, runs=6, max_seconds=None)
    assert len(calls) == 10 and stats.runs == 6


def test_time_budget_stops_timing_early():
    started = time.perf_counter()
    stats = measure_latency(lambda: time.sleep(0.01), warmup=0, runs=10_000, max_seconds=0.2, min_runs=5)
    elapsed = time.perf_counter() - started
    assert 5 <= stats.runs < 10_000 and stats.stopped_by == "time"
    assert elapsed < 5.0  # 10 000 sleeps of 10 ms would take 100 s


def test_min_runs_outlasts_the_time_budget():
    stats = measure_latency(lambda: time.sleep(0.005), warmup=0, runs=100, max_seconds=0.001, min_runs=7)
    assert stats.runs == 7 and stats.stopped_by == "time"


def test_runs_caps_min_runs():
    stats = measure_latency(lambda: None, warmup=0, runs=3, max_seconds=0.001, min_runs=20)
    assert stats.runs == 3 and stats.stopped_by == "runs"


def test_percentiles_of_known_samples():
    stats = latency_stats(np.arange(1, 101, dtype=float), load_avg=0.5)
    assert stats.runs == 100
    assert stats.p50_ms == pytest.approx(50.5) and stats.p99_ms == pytest.approx(99.01)
    assert stats.mean_ms == pytest.approx(50.5) and stats.min_ms == 1.0 and stats.max_ms == 100.0
    low, high = stats.mean_ci95_ms
    # the standard error of the mean of 1..100 is about 2.9: the interval must be near +/-1.96 of that
    assert 44.0 < low < 50.5 < high < 57.0


def test_bootstrap_interval_is_reproducible():
    x = np.random.default_rng(3).gamma(2.0, 1.0, size=500)
    assert bootstrap_mean_ci(x) == bootstrap_mean_ci(x)
    low, high = bootstrap_mean_ci(x)
    assert low < x.mean() < high


def test_tight_samples_carry_no_warning():
    x = 10.0 + np.random.default_rng(0).normal(0, 0.05, size=200)
    assert latency_stats(x, load_avg=0.1).spread_warning is None


def test_heavy_tail_is_flagged():
    x = np.concatenate([np.full(95, 10.0), np.full(5, 40.0)])
    warning = latency_stats(x, load_avg=3.5).spread_warning
    assert warning is not None and warning.startswith("spread too wide to trust")
    assert "p99 is 4.0x p50" in warning and "3.50" in warning


def test_wide_confidence_interval_is_flagged():
    x = np.random.default_rng(1).uniform(1.0, 3.0, size=10)  # p99/p50 < 2 but few, scattered samples
    stats = latency_stats(x, load_avg=0.0)
    assert stats.p99_ms / stats.p50_ms < 2.0
    assert stats.spread_warning is not None and "CI of the mean" in stats.spread_warning


def test_to_dict_is_json():
    stats = measure_latency(lambda: None, warmup=0, runs=5, max_seconds=None)
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["runs"] == 5 and len(data["mean_ci95_ms"]) == 2
    assert set(data) >= {"p50_ms", "p90_ms", "p95_ms", "p99_ms", "spread_warning", "load_avg"}


@pytest.mark.parametrize("kwargs, field", [
    ({"runs": 0}, "runs"), ({"warmup": -1}, "warmup"), ({"min_runs": 0}, "min_runs"),
    ({"max_seconds": 0}, "max_seconds"), ({"runs": 2.5}, "runs"),
])
def test_bad_arguments_are_named(kwargs, field):
    with pytest.raises(RecipeError, match=field):
        measure_latency(lambda: None, **kwargs)


def test_empty_samples_are_refused():
    with pytest.raises(RecipeError, match="non-empty"):
        latency_stats([], load_avg=0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1e-4, max_value=1e4, allow_nan=False), min_size=1, max_size=300))
def test_summary_invariants_hold_for_any_samples(samples):
    stats = latency_stats(samples, load_avg=0.0)
    assert stats.runs == len(samples) and _ordered(stats)
    low, high = stats.mean_ci95_ms
    assert low <= stats.mean_ms <= high
    # a mean of equal values may round one ulp past them
    assert stats.min_ms * (1 - 1e-12) <= low and high <= stats.max_ms * (1 + 1e-12)
