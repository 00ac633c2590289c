"""The latency harness: warm up, time many calls, summarise with percentiles and a CI.

It times any zero-argument callable, so the PyTorch teacher and every ONNX artifact are
timed by the same loop. It never decides what is called: that is the caller's job.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgegolf.errors import RecipeError

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same samples always give the same interval
# Spread limits beyond which a number is reported with a warning: too wide to trust.
MAX_TAIL_RATIO = 2.0  # p99 / p50
MAX_CI_HALF_WIDTH = 0.05  # CI half-width / mean


@dataclass
class LatencyStats:
    runs: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    mean_ci95_ms: tuple[float, float]  # bootstrap interval of the mean
    min_ms: float
    max_ms: float
    spread_warning: str | None  # set when the numbers are too spread out to trust
    load_avg: float  # 1-minute load average when timing started
    stopped_by: str = "runs"  # "runs" (the count was reached) or "time" (max_seconds was spent)
    samples_ms: list[float] | None = field(default=None, repr=False)  # kept only when asked (plots)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mean_ci95_ms"] = list(self.mean_ci95_ms)
        if self.samples_ms is None:
            del data["samples_ms"]  # manifests stay as they were
        return data


def measure_latency(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    runs: int = 100,
    max_seconds: float | None = 10.0,
    min_runs: int = 20,
    keep_samples: bool = False,
) -> LatencyStats:
    """Call `fn` `warmup` times untimed, then time it up to `runs` times.

    Timing stops early once `max_seconds` of timed calls are spent, but never before
    `min_runs` calls (capped at `runs`). The budget covers the timed phase only.
    """
    _check_int("warmup", warmup, 0)
    _check_int("runs", runs, 1)
    _check_int("min_runs", min_runs, 1)
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise RecipeError(f"latency max_seconds is {max_seconds!r}; accepted: a positive number of seconds or None")
    floor = min(min_runs, runs)
    load = _load_average()
    for _ in range(warmup):
        fn()
    budget_ns = None if max_seconds is None else int(max_seconds * 1e9)
    samples = np.empty(runs, dtype=np.int64)
    count = 0
    stopped_by = "runs"
    # A cyclic collection inside one call would be charged to the model; timeit does the same.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        clock = time.perf_counter_ns
        started = clock()
        while count < runs:
            t0 = clock()
            fn()
            t1 = clock()
            samples[count] = t1 - t0
            count += 1
            if budget_ns is not None and count >= floor and t1 - started >= budget_ns:
                stopped_by = "time" if count < runs else "runs"
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    stats = latency_stats(samples[:count] / 1e6, load_avg=load, stopped_by=stopped_by, keep_samples=keep_samples)
    log.debug("timed %d runs (stopped by %s): p50 %.3f ms", stats.runs, stopped_by, stats.p50_ms)
    return stats


def latency_stats(samples_ms: Sequence[float] | np.ndarray, *, load_avg: float, stopped_by: str = "runs",
                  keep_samples: bool = False) -> LatencyStats:
    """Summarise per-call times in milliseconds."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise RecipeError(f"latency samples have shape {x.shape}; accepted: a non-empty 1-D sequence")
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, [50, 90, 95, 99]))
    mean = float(x.mean())
    low, high = bootstrap_mean_ci(x)
    return LatencyStats(
        runs=int(x.size), p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99, mean_ms=mean,
        mean_ci95_ms=(low, high), min_ms=float(x.min()), max_ms=float(x.max()),
        spread_warning=_spread_warning(p50, p99, mean, low, high, load_avg),
        load_avg=load_avg, stopped_by=stopped_by,
        samples_ms=[round(float(v), 6) for v in x] if keep_samples else None,
    )


def bootstrap_mean_ci(x: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (resampling with replacement)."""
    rng = np.random.default_rng(seed)
    n = x.size
    means = np.empty(resamples)
    # Resample in chunks so that a long run (many thousand samples) stays within a few MB.
    chunk = max(1, 2_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    # equal samples can resample to a mean one ulp off the sample mean: keep the mean inside
    mean = float(x.mean())
    return min(float(low), mean), max(float(high), mean)


def _spread_warning(p50: float, p99: float, mean: float, low: float, high: float, load: float) -> str | None:
    reasons = []
    if p50 > 0 and p99 / p50 > MAX_TAIL_RATIO:
        reasons.append(f"p99 is {p99 / p50:.1f}x p50 (limit {MAX_TAIL_RATIO:g}x)")
    half = (high - low) / 2
    if mean > 0 and half / mean > MAX_CI_HALF_WIDTH:
        reasons.append(f"95% CI of the mean is +/-{100 * half / mean:.1f}% (limit {100 * MAX_CI_HALF_WIDTH:g}%)")
    if not reasons:
        return None
    return (f"spread too wide to trust: {'; '.join(reasons)}; load average was {load:.2f} on "
            f"{os.cpu_count()} cores: rerun on a quiet machine or with more runs")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecipeError(f"latency {name} is {value!r}; accepted: an integer >= {minimum}")


def _load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):  # not available on every platform (Windows)
        return float("nan")
