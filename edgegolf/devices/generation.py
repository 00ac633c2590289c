"""What a causal-lm bundle costs an app that generates: prefill, time to first token, decode speed.

At batch 1, for each cache length L (the bench's --seq values):
- prefill: the graph on a prompt of L real tokens with an empty cache (`CausalLM.prefill`);
- time to first token: `generate(prompt_text, max_new_tokens=1)` end to end, the public call an
  app makes (tokenize, prefill, choose, detokenize), on a prompt text of about L tokens;
- decode: one step of one token after a cache of L tokens (`CausalLM.step`), and tokens/s =
  1000 / its p50 ms (one step per token; the cache grows by one, which this holds fixed at L).
Every number goes through edgegolf.runtime, the code the app embeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgegolf.devices.latency import measure_latency
from edgegolf.errors import RecipeError

log = logging.getLogger(__name__)

TASK = "causal-lm"


def prompt_of(lm, texts: Sequence[str], length: int) -> tuple[list[int], str]:
    """The first `length` token ids of the joined `texts`, and the text they cover."""
    text = "\n\n".join(texts)
    encoding = lm.text_tokenizer.encode(text)
    if len(encoding.ids) < length:
        raise RecipeError(f"--seq {length} asks for a prompt of {length} tokens; the bench texts give "
                          f"{len(encoding.ids)}: accepted: at most {len(encoding.ids)}")
    return list(encoding.ids[:length]), text[:encoding.offsets[length - 1][1]]


def cache_lengths(lm, seqs: Sequence[int]) -> list[int]:
    """The bench's sequence lengths as cache lengths, each leaving room for one more token."""
    return list(dict.fromkeys(min(int(s), lm.spec.max_length - 1) for s in seqs))


def decode_feeds(lm, texts: Sequence[str], cache: int) -> dict[str, np.ndarray]:
    """The graph's feeds of one decode step after a prefilled cache of `cache` tokens."""
    ids, _ = prompt_of(lm, texts, cache)
    logits, state = lm.prefill(ids)
    return {"input_ids": np.asarray([[int(logits.argmax())]], dtype=np.int64),
            "attention_mask": np.ones((1, cache + 1), dtype=np.int64), **state}


def bench_generation(lm, texts: Sequence[str], settings) -> list[dict[str, Any]]:
    """One entry per cache length: prefill, time to first token and decode latency, at batch 1."""
    timing = {"warmup": settings.warmup, "runs": settings.runs, "max_seconds": settings.max_seconds,
              "min_runs": settings.min_runs, "keep_samples": False}
    entries = []
    for cache in cache_lengths(lm, settings.seqs):
        ids, text = prompt_of(lm, texts, cache)
        prefill = measure_latency(lambda ids=ids: lm.prefill(ids), **timing)
        first = lm.generate(text, max_new_tokens=1)
        ttft = measure_latency(lambda text=text: lm.generate(text, max_new_tokens=1), **timing)
        logits, state = lm.prefill(ids)
        token = int(logits.argmax())
        decode = measure_latency(lambda state=state, token=token: lm.step(token, state), **timing)
        for name, stats in (("prefill", prefill), ("time to first token", ttft), ("decode", decode)):
            if stats.spread_warning:
                log.warning("%s after %d tokens: %s", name, cache, stats.spread_warning)
        entries.append({
            "batch": 1, "cache": cache, "prompt_tokens": len(first.prompt_ids),
            "prefill": prefill.to_dict(), "ttft": ttft.to_dict(), "decode": decode.to_dict(),
            "prefill_tokens_per_s": cache * 1000.0 / prefill.p50_ms if prefill.p50_ms > 0 else None,
            "decode_tokens_per_s": 1000.0 / decode.p50_ms if decode.p50_ms > 0 else None,
        })
    return entries
