"""`edgegolf compare A B`: two artifacts timed in the same run, interleaved, with the ratio.

Both are opened in one process on one device profile (here, or in one runner process on an
ssh device) and timed in alternating blocks (A B, B A, A B...), so a load change on the
machine hits both alike. The verdict is the
ratio of medians B/A with a bootstrap 95% interval: the difference is "larger than the
noise" only when that interval excludes 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgegolf.devices.artifact import open_artifact
from edgegolf.devices.bench import (
    _encoder_feeds,
    bench_texts,
    shape_entry,
)
from edgegolf.devices.latency import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    _load_average,
    latency_stats,
    measure_latency,
)
from edgegolf.devices.profiles import DeviceProfile, pinned
from edgegolf.devices.remote import RemoteOptions, run_remote_compare
from edgegolf.errors import DeviceError, RecipeError

log = logging.getLogger(__name__)

PHASES = ("prefill", "decode")  # what is timed: the graph on seq tokens, or (causal-lm) one step after them


def ratio_of_medians_ci(a: np.ndarray, b: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """median(b) / median(a) and its percentile-bootstrap 95% interval (each side resampled on its own)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise RecipeError("compare needs samples of both artifacts; accepted: at least one run each")
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, size=(resamples, b.size))], axis=1)
    low, high = np.percentile(mb / ma, [2.5, 97.5])
    return float(np.median(b) / np.median(a)), float(low), float(high)


def compare(
    a_path: str | Path,
    b_path: str | Path,
    profile: DeviceProfile,
    *,
    batch: int = 1,
    seq: int = 128,
    rounds: int = 10,
    runs_per_round: int = 10,
    warmup: int = 10,
    texts: list[str] | None = None,
    remote: RemoteOptions | None = None,
    phase: str = "prefill",
) -> dict[str, Any]:
    """The "compare" section of a report document. Local profiles run here; an ssh device runs
    both graphs in one runner process on the device, in the same alternating blocks.

    `phase` "decode" (causal-lm bundles, batch 1) times one generation step after a cache of
    `seq` tokens instead of the graph on `seq` tokens (the prefill, for a causal LM)."""
    kind = profile.device_kind
    if not kind.compares:
        raise RecipeError(f"compare runs both ONNX artifacts on one onnxruntime; device {profile.name!r} (kind "
                          f"{profile.kind}) is not accepted: use cpu-1, cpu-2, ..., cuda or ssh://user@host")
    for name, value in (("rounds", rounds), ("runs_per_round", runs_per_round), ("batch", batch), ("seq", seq)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"compare {name} is {value!r}; accepted: a positive integer")
    if phase not in PHASES:
        raise RecipeError(f"--phase is {phase!r}; accepted: {', '.join(PHASES)}")
    artifacts = [open_artifact(a_path), open_artifact(b_path)]
    for art in artifacts:
        if seq > art.spec.max_length:
            raise RecipeError(f"--seq {seq} is longer than {art.label}'s max_length {art.spec.max_length}")
    texts = texts if texts is not None else bench_texts()
    if phase == "decode":
        feeds = [_decode_feeds(art, texts, batch, seq) for art in artifacts]
    else:
        feeds = [_encoder_feeds(art, texts, batch, seq) for art in artifacts]
    samples, load, runtime = kind.compare_samples(artifacts, feeds, profile, warmup, rounds, runs_per_round,
                                                  remote or RemoteOptions())
    stats = [latency_stats(s, load_avg=load, keep_samples=True) for s in samples]
    ratio, low, high = ratio_of_medians_ci(np.array(samples[0]), np.array(samples[1]))
    beyond = not (low <= 1.0 <= high)
    if beyond:
        faster = "faster" if ratio < 1 else "slower"
        verdict = (f"B is {abs(1 - ratio):.1%} {faster} than A (median ratio {ratio:.3f}, 95% CI {low:.3f}-{high:.3f}): "
                   "larger than the noise")
    else:
        verdict = (f"no difference beyond the noise: median ratio B/A {ratio:.3f}, 95% CI {low:.3f}-{high:.3f} "
                   "includes 1")
    return {
        "device": profile.name, "where": profile.url or "local", "profile": profile.to_dict(), "runtime": runtime,
        "batch": batch, "seq": seq, "phase": phase, "rounds": rounds, "runs_per_round": runs_per_round,
        "a": {"artifact": artifacts[0].to_dict(), **shape_entry(batch, seq, stats[0])},
        "b": {"artifact": artifacts[1].to_dict(), **shape_entry(batch, seq, stats[1])},
        "ratio_b_over_a": ratio, "ratio_ci95": [low, high], "beyond_noise": beyond, "verdict": verdict,
    }


def interleaved_ratio(a, b, profile: DeviceProfile, texts: list[str], *, batch: int, seq: int, rounds: int = 6,
                      runs_per_round: int = 5, warmup: int = 3) -> tuple[float, float, float] | None:
    """median(B) / median(A) and its 95% interval, the two graphs timed as `compare` times them
    (alternating blocks, one process): a decision inside a run that two timings taken minutes
    apart on a shared machine cannot carry. None where the profile's kind cannot time ONNX
    graphs side by side."""
    kind = profile.device_kind
    if not kind.compares:
        return None
    feeds = [_encoder_feeds(art, texts, batch, seq) for art in (a, b)]
    samples, _, _ = kind.compare_samples([a, b], feeds, profile, warmup, rounds, runs_per_round, RemoteOptions())
    return ratio_of_medians_ci(np.array(samples[0]), np.array(samples[1]))


def _decode_feeds(artifact, texts: list[str], batch: int, seq: int) -> dict[str, np.ndarray]:
    """One decode step's feeds after `seq` prompt tokens, from the artifact's own prefill."""
    from edgegolf.devices.bench import GENERATING_TASK
    from edgegolf.devices.generation import cache_lengths, decode_feeds
    from edgegolf.runtime.models import open_model

    if artifact.spec.task != GENERATING_TASK or batch != 1:
        raise RecipeError(f"--phase decode times a causal-lm bundle at batch 1; {artifact.label} is a "
                          f"{artifact.spec.task} artifact at batch {batch}: accepted: --phase prefill")
    lm = open_model(artifact.onnx_path, artifact.tokenizer_path, artifact.spec, threads=1)
    return decode_feeds(lm, texts, cache_lengths(lm, [seq])[0])


def local_samples(artifacts, feeds, profile: DeviceProfile, warmup: int, rounds: int,
                  runs_per_round: int) -> tuple[list[list[float]], float]:
    """Interleaved samples of both graphs in this process, on the kind's providers and threads."""
    from edgegolf.runtime.models import open_model

    kind = profile.device_kind
    providers, threads = kind.providers(profile), kind.threads(profile)
    samples: list[list[float]] = [[], []]
    load = _load_average()  # recorded before timing, as measure_latency does
    with pinned(profile):
        models = [open_model(a.onnx_path, a.tokenizer_path, a.spec, threads=threads, providers=providers)
                  for a in artifacts]
        calls = [lambda model=model, f=f: model.run(f) for model, f in zip(models, feeds)]
        for call in calls:  # warm both before the first timed block
            for _ in range(warmup):
                call()
        for r in range(rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)  # alternate who goes first
            for i in order:
                block = measure_latency(calls[i], warmup=1, runs=runs_per_round, max_seconds=None,
                                        min_runs=runs_per_round, keep_samples=True)
                samples[i].extend(block.samples_ms or [])
    return samples, load


def remote_samples(artifacts, feeds, profile: DeviceProfile, warmup: int, rounds: int, runs_per_round: int,
                   options: RemoteOptions) -> tuple[list[list[float]], float, dict[str, Any]]:
    from edgegolf.devices.size import external_data_files

    result = run_remote_compare(
        profile, [(a.onnx_path, external_data_files(a.onnx_path), f) for a, f in zip(artifacts, feeds)],
        threads=profile.threads, warmup=warmup, rounds=rounds, runs_per_round=runs_per_round, options=options)
    samples = result["compare"]["samples_ms"]
    if len(samples) != 2 or not all(samples):
        raise DeviceError(f"device {profile.name}: the runner returned no compare samples")
    runtime = {key: result.get(key) for key in ("python", "platform", "machine", "cpu_count", "onnxruntime", "numpy")}
    runtime["providers"] = ["CPUExecutionProvider"]
    load = result.get("load_avg")
    return samples, float("nan") if load is None else float(load), runtime
