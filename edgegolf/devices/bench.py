"""`edgegolf bench`: one artifact on one or more devices, over batch sizes and sequence lengths.

For every device: the latency harness at each batch x seq shape (with throughput), the
cold start (load plus first inference) and the peak RSS of a fresh process. A causal-lm
bundle timed locally also gets "generation": prefill, time to first token and decode tokens/s
at batch 1 after a cache of each seq length (edgegolf/devices/generation.py). Local CPU and
CUDA devices run in this process through edgegolf.runtime (cold start and memory in a
child); ssh devices run runner.py on the device and send back raw samples, summarised here
by the same `latency_stats`. Everything is validated before the first timing, and the
result is returned whole: a failure leaves no partial report.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgegolf.devices.artifact import Artifact, open_artifact
from edgegolf.devices.cuda import bench_torch_cuda
from edgegolf.devices.inputs import fixed_shape_from_encoder
from edgegolf.devices.latency import LatencyStats, latency_stats, measure_latency
from edgegolf.devices.memory import probe_onnx
from edgegolf.devices.profiles import DeviceProfile, get_profile, pinned
from edgegolf.devices.remote import RemoteOptions, RemoteShape, run_remote
from edgegolf.errors import DeviceError, RecipeError

log = logging.getLogger(__name__)

BENCH_TEXTS = 64  # real texts the fixed-shape rows are made of
GENERATING_TASK = "causal-lm"  # its bench adds prefill, time to first token and decode (devices/generation.py)


@dataclass
class BenchSettings:
    batches: tuple[int, ...] = (1,)
    seqs: tuple[int, ...] = (128,)
    warmup: int = 10
    runs: int = 100
    max_seconds: float | None = 5.0  # per shape
    min_runs: int = 20
    cold_start: bool = True  # also start a fresh process for cold start and peak RSS
    keep_samples: bool = True  # raw samples go to the JSON and the HTML histograms

    def __post_init__(self) -> None:
        for name in ("batches", "seqs"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise RecipeError(f"bench {name} is {list(values)!r}; accepted: a list of positive integers, e.g. 1,8")
            setattr(self, name, tuple(dict.fromkeys(values)))

    @property
    def largest(self) -> tuple[int, int]:
        return max(self.batches), max(self.seqs)


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """'1,8' -> (1, 8), with a message naming the option when it is not a list of positive integers."""
    try:
        values = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise RecipeError(f"--{what} is {text!r}; accepted: comma-separated positive integers, e.g. 1,8")
    return values


def resolve_devices(names: str | Sequence[str], custom: Mapping[str, DeviceProfile] | None = None) -> list[DeviceProfile]:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise RecipeError("--device is empty; accepted: profile names such as cpu-1,cpu-2 or ssh://user@host")
    return [get_profile(name, custom) for name in dict.fromkeys(names)]


def bench_texts(data: str | None = None) -> list[str]:
    from edgegolf.data import load_labelled_texts

    return list(load_labelled_texts(data).texts[:BENCH_TEXTS])


def bench(
    artifact_path: str | Path,
    devices: Sequence[DeviceProfile],
    settings: BenchSettings,
    *,
    texts: Sequence[str] | None = None,
    remote: RemoteOptions | None = None,
    torch_model: str | Path | None = None,
) -> dict[str, Any]:
    """The "bench" section of a report document (schema in edgegolf/reports/schema)."""
    artifact = open_artifact(artifact_path)
    for profile in devices:  # what is missing must fail before anything is timed
        profile.device_kind.check_bench(profile, torch_model=torch_model)
    for seq in settings.seqs:
        if seq > artifact.spec.max_length:
            raise RecipeError(f"--seq {seq} is longer than {artifact.label}'s max_length {artifact.spec.max_length}; "
                              f"accepted: at most {artifact.spec.max_length}")
    texts = list(texts) if texts is not None else bench_texts()
    results = []
    for profile in devices:
        log.info("bench %s on %s", artifact.label, profile.name)
        results.append(profile.device_kind.bench(artifact, profile, settings, texts, remote=remote or RemoteOptions(),
                                                 torch_model=torch_model))
    return {
        "artifact": artifact.to_dict(),
        "settings": {"batches": list(settings.batches), "seqs": list(settings.seqs), "warmup": settings.warmup,
                     "runs": settings.runs, "max_seconds": settings.max_seconds, "min_runs": settings.min_runs},
        "inputs": f"fixed-shape rows of real text (first {len(texts)} evaluation texts), every token a real one",
        "devices": results,
    }


def shape_entry(batch: int, seq: int, stats: LatencyStats) -> dict[str, Any]:
    # throughput at the mean: the mean, not the median, is what a busy server's rate is made of
    return {"batch": batch, "seq": seq, "latency": stats.to_dict(),
            "throughput_per_s": batch * 1000.0 / stats.mean_ms if stats.mean_ms > 0 else None}


def local_runtime() -> dict[str, Any]:
    import onnxruntime as ort

    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "onnxruntime": ort.__version__, "numpy": np.__version__}


def _encoder_feeds(artifact: Artifact, texts: Sequence[str], batch: int, seq: int) -> dict[str, np.ndarray]:
    from edgegolf.runtime.tokenize import make_tokenizer

    encoder = make_tokenizer(artifact.tokenizer_path, artifact.spec)
    return fixed_shape_from_encoder(lambda rows, length: encoder.encode(rows, pad_to=length), artifact.spec.input_names,
                                    artifact.spec.max_length, texts, batch=batch, seq=seq)


def bench_local(artifact: Artifact, profile: DeviceProfile, settings: BenchSettings, texts: list[str]) -> dict:
    """A device entry timed in this process through edgegolf.runtime, on the kind's providers and threads."""
    from edgegolf.runtime.models import open_model

    kind = profile.device_kind
    providers, threads = kind.providers(profile), kind.threads(profile)
    shapes = []
    with pinned(profile):  # the session's thread pool must be born inside the mask
        model = open_model(artifact.onnx_path, artifact.tokenizer_path, artifact.spec, threads=threads,
                           providers=providers)
        for batch in settings.batches:
            for seq in settings.seqs:
                feeds = _encoder_feeds(artifact, texts, batch, seq)
                stats = measure_latency(lambda feeds=feeds: model.run(feeds), warmup=settings.warmup,
                                        runs=settings.runs, max_seconds=settings.max_seconds,
                                        min_runs=settings.min_runs, keep_samples=settings.keep_samples)
                if stats.spread_warning:
                    log.warning("%s on %s, %d x %d: %s", artifact.label, profile.name, batch, seq, stats.spread_warning)
                shapes.append(shape_entry(batch, seq, stats))
        generation = None
        if artifact.spec.task == GENERATING_TASK:  # what an app that generates waits for, at batch 1
            from edgegolf.devices.generation import bench_generation

            generation = bench_generation(model, texts, settings)
        used = model.providers
    cold = rss = None
    if settings.cold_start:
        batch, seq = settings.largest
        probe = probe_onnx(artifact.onnx_path, artifact.tokenizer_path, artifact.spec, threads=threads, batch=batch,
                           seq=seq, texts=texts, cores=profile.cores, providers=providers)
        cold = _cold(probe, batch, seq)
        rss = int(probe["peak_rss_bytes"])
    entry = {"device": profile.name, "kind": profile.kind, "where": "local", "profile": profile.to_dict(),
             "runtime": {**local_runtime(), "providers": used}, "shapes": shapes, "cold_start": cold,
             "peak_rss_bytes": rss, "estimate": False}
    if generation is not None:
        entry["generation"] = generation
    return entry


def _cold(probe: Mapping[str, Any], batch: int, seq: int) -> dict[str, Any]:
    load, first = float(probe["load_ms"]), float(probe["first_run_ms"])
    return {"load_ms": load, "first_run_ms": first, "total_ms": load + first, "batch": batch, "seq": seq}


def bench_ssh(artifact: Artifact, profile: DeviceProfile, settings: BenchSettings, texts: list[str],
              options: RemoteOptions) -> dict:
    """A device entry timed on an ssh device by runner.py; summarised here by the same latency_stats."""
    from edgegolf.devices.size import external_data_files

    shapes = [RemoteShape(b, s, _encoder_feeds(artifact, texts, b, s)) for b in settings.batches for s in settings.seqs]
    largest = settings.largest
    cold_index = next(i for i, s in enumerate(shapes) if (s.batch, s.seq) == largest)
    result = run_remote(profile, artifact.onnx_path, external_data_files(artifact.onnx_path), shapes,
                        threads=profile.threads, warmup=settings.warmup, runs=settings.runs,
                        max_seconds=settings.max_seconds, min_runs=settings.min_runs, cold=cold_index, options=options)
    load = result.get("load_avg")
    entries = []
    for shape, got in zip(shapes, result["shapes"]):
        if not got.get("samples_ms"):
            raise DeviceError(f"device {profile.name}: the runner returned no samples for {shape.batch} x {shape.seq}")
        stats = latency_stats(got["samples_ms"], load_avg=float("nan") if load is None else float(load),
                              stopped_by=got.get("stopped_by", "runs"), keep_samples=settings.keep_samples)
        entries.append(shape_entry(shape.batch, shape.seq, stats))
    runtime = {key: result.get(key) for key in ("python", "platform", "machine", "cpu_count", "onnxruntime", "numpy")}
    runtime["providers"] = ["CPUExecutionProvider"]
    return {"device": profile.name, "kind": "ssh", "where": profile.url, "profile": profile.to_dict(),
            "runtime": runtime, "shapes": entries,
            "cold_start": _cold(result["cold_start"], *largest) if result.get("cold_start") else None,
            "peak_rss_bytes": result.get("peak_rss_bytes"), "estimate": False}


def bench_torch_cuda_entry(artifact: Artifact, profile: DeviceProfile, settings: BenchSettings, texts: list[str],
                           torch_model: Path) -> dict:
    """A device entry for the PyTorch model the artifact was made from, on GPU 0."""
    import torch

    shapes = []
    for batch in settings.batches:
        for seq in settings.seqs:
            stats = bench_torch_cuda(torch_model, artifact.spec.task, texts, batch=batch, seq=seq,
                                     warmup=settings.warmup, runs=settings.runs, max_seconds=settings.max_seconds,
                                     keep_samples=settings.keep_samples)
            shapes.append(shape_entry(batch, seq, stats))
    runtime = {**local_runtime(), "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
               "providers": ["torch-cuda fp16 CUDA graph"]}
    return {"device": profile.name, "kind": profile.kind, "where": "local", "profile": profile.to_dict(),
            "runtime": runtime, "shapes": shapes, "cold_start": None, "peak_rss_bytes": None, "estimate": False,
            "note": f"the PyTorch model in {torch_model}, not the ONNX artifact"}


__all__ = ["BenchSettings", "bench", "bench_local", "bench_ssh", "bench_texts", "bench_torch_cuda_entry",
           "parse_int_list", "resolve_devices", "shape_entry"]
