"""Write a causal LM's cached graph with fused ops and check it against PyTorch before it is used.

The optimize stage's causal-lm branch: edgegolf/export/llm_graph.py writes the graph, this
module saves it and verifies it against `CausalWithCache` (the module the traced export runs)
as the runtime uses it: every feed with an empty cache (a prompt; a right-padded batch, as
scoring runs), and for feeds padded on the left (as generation runs) or not at all, one cached
step fed the graph's own cache. Only positions that hold tokens are compared: the logits of
padding positions and the cache rows of padding keys are masked out of every later use, and
each graph fills them its own way; the cache is compared where the graph's rotary positions
are PyTorch's (rows without left padding, see llm_graph).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from edgegolf.errors import ExportError
from edgegolf.export.causal import TEXT_INPUTS, CausalWithCache, cache_names, step_feed, with_cache_feeds
from edgegolf.export.llm_graph import build_fused_decoder, fused_op_counts, unsupported_reason
from edgegolf.publish import atomic_output

log = logging.getLogger(__name__)
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with room: larger graphs keep weights beside them


@dataclass(frozen=True)
class FusedGraph:
    path: Path
    fused_ops: dict[str, int]
    max_abs_diff: float  # logits and cache, token positions only, over every checked feed


def fusable(config) -> str | None:
    """Why a model with `config` gets no fused graph, or None when it does."""
    return unsupported_reason(config)


def left_padded(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same rows with their padding moved to the left (a right-padded batch becomes the
    layout the runtime's batched generation uses)."""
    ids, mask = feeds["input_ids"].copy(), feeds["attention_mask"].copy()
    for row in range(ids.shape[0]):
        shift = int(mask.shape[1] - mask[row].sum())
        ids[row], mask[row] = np.roll(ids[row], shift), np.roll(mask[row], shift)
    return {**feeds, "input_ids": ids, "attention_mask": mask}


def right_padded_only(mask: np.ndarray) -> np.ndarray:
    """Per row: whether its tokens come first (padding, if any, only after them)."""
    return np.all(np.diff(mask, axis=1) <= 0, axis=1)


def logits_diff(got: np.ndarray, want: np.ndarray, mask: np.ndarray) -> float:
    """Max abs difference of logits [batch, seq, vocab] at this call's token positions."""
    rows = mask[:, -got.shape[1]:] == 1
    return float(np.max(np.abs(got - want)[rows])) if rows.any() else 0.0


def cache_diff(got: list[np.ndarray], want: list[np.ndarray], mask: np.ndarray) -> float:
    """Max abs difference of the presents at token keys, over the rows whose tokens sit at their
    true positions (unpadded or right-padded; see llm_graph on rotary positions)."""
    keys = (mask == 1) & right_padded_only(mask)[:, None]
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            raise ExportError(f"a fused graph's cache has shape {g.shape} where PyTorch's has {w.shape}")
        if keys.any():
            worst = max(worst, float(np.max(np.abs(g - w).transpose(0, 2, 1, 3)[keys])))
    return worst


def verify_fused(path: Path, model, feeds: list[dict[str, np.ndarray]], atol: float) -> float:
    """Max difference to PyTorch over `feeds` (empty cache) and, for feeds without right padding
    (what the runtime generates from), one cached step on the graph's own cache."""
    import onnxruntime as ort

    module = CausalWithCache(model).eval()
    past = cache_names(module.num_layers)[0]
    names = [*TEXT_INPUTS, *past]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def torch_run(full: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.float().numpy() for t in module(*(torch.from_numpy(full[n]) for n in names))]

    def check(diff: float, index: int, kind: str, batch: int) -> float:
        if not np.isfinite(diff) or diff > atol:
            raise ExportError(f"the fused graph differs from PyTorch by {diff:.2e} (> {atol:g}) on feed {index} "
                              f"({kind}, batch {batch})")
        return diff

    worst = 0.0
    for index, feed in enumerate(feeds):
        full = with_cache_feeds(model.config, feed)
        batch = full["input_ids"].shape[0]
        got, want = session.run(None, {n: full[n] for n in names}), torch_run(full)
        worst = max(worst, check(max(logits_diff(got[0], want[0], full["attention_mask"]),
                                     cache_diff(got[1:], want[1:], full["attention_mask"])), index, "prompt", batch))
        if not (feed["attention_mask"][:, -1] == 1).all():
            continue  # right padding: scored, never generated from
        step = step_feed(module, feed, feed["input_ids"][:, :1])  # PyTorch's step on PyTorch's cache
        own = {**step, **dict(zip(past, got[1:], strict=True))}  # the graph's step on the graph's cache
        got_step = session.run(None, {n: own[n] for n in names})
        worst = max(worst, check(logits_diff(got_step[0], torch_run(step)[0], step["attention_mask"]), index,
                                 "cached step", batch))
    return worst


def write_fused_causal_lm(model, out_path: Path, *, verify_feeds: list[dict[str, np.ndarray]],
                          atol: float) -> FusedGraph:
    """The fused graph of `model` at `out_path`, verified on `verify_feeds` and on the left-padded
    copies of its batches (with a cached step each)."""
    graph = build_fused_decoder(model)
    with atomic_output(out_path) as tmp:
        large = graph.ByteSize() > EXTERNAL_DATA_BYTES
        onnx.save(graph, str(tmp), save_as_external_data=large, location=out_path.name + ".data" if large else None)
        diff = verify_fused(tmp, model, _with_left_padding(verify_feeds), atol)
    counts = fused_op_counts(graph)
    log.info("fused graph: %s; max abs diff to PyTorch %.2e", counts, diff)
    return FusedGraph(out_path, counts, diff)


def fuse_traced_causal_lm(traced: Path, model, out_path: Path, *, model_type: str,
                          verify_feeds: list[dict[str, np.ndarray]], atol: float) -> FusedGraph:
    """onnxruntime's transformer optimizer over the traced cached graph, for the decoders whose
    family names an optimizer model type (GPT-2: LayerNorm with its residual Add into
    SkipLayerNormalization, the tanh Gelu into FastGelu; its attention fusion looks for
    onnxruntime's own export layout, one packed past per layer, and leaves ours unfused),
    verified like `write_fused_causal_lm`'s graph; nothing is left at `out_path` when the
    check fails."""
    from edgegolf.compression.prune import attention_dims
    from edgegolf.export.optimize import optimize_graph

    num_heads, hidden_size = attention_dims(model.config)
    report = optimize_graph(traced, out_path, model_type=model_type, num_heads=num_heads, hidden_size=hidden_size)
    try:
        diff = verify_fused(out_path, model, _with_left_padding(verify_feeds), atol)
    except ExportError:
        out_path.unlink(missing_ok=True)
        raise
    log.info("traced graph fused by onnxruntime: %s; max abs diff to PyTorch %.2e", report.fused_ops, diff)
    return FusedGraph(out_path, report.fused_ops, diff)


def _with_left_padding(feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The feeds and the left-padded copies of their batches: scoring's layout and generation's."""
    return list(feeds) + [left_padded(f) for f in feeds if f["input_ids"].shape[0] > 1]


def decode_ratio(fused: Path, traced: Path, tokenizer_json: Path, spec, texts: list[str], *, cache: int = 128,
                 rounds: int = 5, runs: int = 4) -> float:
    """p50 of one decode step (batch 1, one token after `cache` tokens, one thread) of the fused
    graph over the traced one's, timed interleaved through the runtime: what generation costs,
    which the stage's fixed-shape prefill timing does not show."""
    import statistics
    import time

    from edgegolf.runtime.models import open_model

    models = [open_model(path, tokenizer_json, spec, threads=1) for path in (fused, traced)]
    ids = models[0].text_tokenizer.encode("\n\n".join(texts)).ids
    cache = max(1, min(cache, spec.max_length - 1, len(ids)))
    feeds = []
    for model in models:
        logits, state = model.prefill(ids[:cache])
        feeds.append({"input_ids": np.asarray([[int(logits.argmax())]], dtype=np.int64),
                      "attention_mask": np.ones((1, cache + 1), dtype=np.int64), **state})
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for index, model in enumerate(models):
            model.run(feeds[index])  # warm
            for _ in range(runs):
                started = time.perf_counter()
                model.run(feeds[index])
                times[index].append(time.perf_counter() - started)
    return statistics.median(times[0]) / statistics.median(times[1])
