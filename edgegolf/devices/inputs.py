"""Benchmark inputs of an exact shape, made of real text, and the ONNX benchmark itself.

Latency depends on the shape (batch x tokens), so every row is exactly `seq` real tokens:
texts are joined (and repeated if short) until a row is long enough, then the tokenizer
truncates it to `seq` (keeping its closing special token, as an app's input would end).
Padding would make the number depend on which texts were picked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgegolf.devices.latency import LatencyStats, measure_latency
from edgegolf.devices.profiles import DeviceProfile, pinned
from edgegolf.errors import DataError, RecipeError
from edgegolf.runtime.spec import ModelSpec

if TYPE_CHECKING:
    from edgegolf.runtime.models import TaskModel

log = logging.getLogger(__name__)

# encode(rows, truncate_to): feeds of the rows, truncated to `truncate_to` tokens (None: max_length)
Encode = Callable[[list[str], int | None], dict[str, np.ndarray]]


def fixed_shape_feeds(model: "TaskModel", texts: Sequence[str], *, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Int64 feeds of shape (batch, seq) for the model's inputs, every token a real one."""
    spec = model.spec
    return fixed_shape_from_encoder(lambda rows, length: model.encode(rows, pad_to=length), spec.input_names,
                                    spec.max_length, texts, batch=batch, seq=seq)


def fixed_shape_from_encoder(
    encode: Encode, input_names: Sequence[str], max_length: int, texts: Sequence[str], *, batch: int, seq: int
) -> dict[str, np.ndarray]:
    """`fixed_shape_feeds` over any tokenizer call (the PyTorch memory probe uses transformers')."""
    for name, value in (("batch", batch), ("seq", seq)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"bench {name} is {value!r}; accepted: a positive integer")
    if seq > max_length:
        raise RecipeError(f"bench seq is {seq}; accepted: at most the model's max_length, {max_length}")
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError("benchmark texts are empty; accepted: at least one non-empty string")
    rows = [_long_enough_row(encode, texts, start=r % len(texts), seq=seq) for r in range(batch)]
    encoded = encode(rows, seq)
    feeds: dict[str, np.ndarray] = {}
    for name in input_names:
        if name not in encoded:
            raise DataError(f"the tokenizer gives no {name!r}; the graph needs {list(input_names)}")
        # contiguous int64, so onnxruntime never has to convert or copy inside a timed call
        feeds[name] = np.ascontiguousarray(encoded[name], dtype=np.int64)
    mask = feeds.get("attention_mask")
    if mask is not None and not mask.all():
        raise DataError(f"could not fill {batch} rows of {seq} tokens from the benchmark texts")
    for name, array in feeds.items():
        if array.shape != (batch, seq):
            raise DataError(f"feed {name!r} has shape {array.shape}; expected ({batch}, {seq})")
    return feeds


def _long_enough_row(encode: Encode, texts: list[str], *, start: int, seq: int) -> str:
    """Join texts from `start` on (wrapping, repeating) until they give at least `seq` tokens."""
    pieces: list[str] = []
    tokens = 0
    i = start
    while True:
        before = tokens
        for _ in range(len(texts)):
            pieces.append(texts[i % len(texts)])
            i += 1
            tokens = int(np.asarray(encode([" ".join(pieces)], None)["input_ids"]).shape[1])
            if tokens >= seq:
                return " ".join(pieces)
        if tokens <= before:  # a whole pass over the texts added nothing: they cannot fill a row
            raise DataError(f"benchmark texts give only {tokens} tokens per row; accepted: texts that reach seq={seq}")


def bench_onnx(
    onnx_path: str | Path,
    tokenizer_path: str | Path,
    spec: ModelSpec,
    profile: DeviceProfile,
    texts: Sequence[str],
    *,
    batch: int = 1,
    seq: int = 128,
    warmup: int = 10,
    runs: int = 100,
    max_seconds: float | None = 10.0,
    min_runs: int = 20,
) -> LatencyStats:
    """Latency of `model.run(feeds)` through the runtime an app embeds, on the profile's threads."""
    from edgegolf.runtime.models import open_model

    # the kind says providers and threads; ssh and torch-cuda are not in-process targets and refuse here
    kind = profile.device_kind
    providers, threads = kind.providers(profile), kind.threads(profile)
    with pinned(profile):  # the session's thread pool must be born inside the mask
        model = open_model(onnx_path, tokenizer_path, spec, threads=threads, providers=providers)
        feeds = fixed_shape_feeds(model, texts, batch=batch, seq=seq)
        stats = measure_latency(lambda: model.run(feeds), warmup=warmup, runs=runs, max_seconds=max_seconds,
                                min_runs=min_runs)
    log.info("%s on %s, batch %d x %d: p50 %.3f ms, p99 %.3f ms (%d runs)", Path(onnx_path).name, profile.name,
             batch, seq, stats.p50_ms, stats.p99_ms, stats.runs)
    if stats.spread_warning:
        log.warning("%s: %s", Path(onnx_path).name, stats.spread_warning)
    return stats
