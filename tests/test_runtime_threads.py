"""One model, many threads: the same outputs as serial calls, and no errors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tokenizers import Tokenizer

from edgegolf.runtime import load
from tests.builders.bundles import WORDS, build_bundle

THREADS = 8
ROUNDS = 25


def texts_for(i: int) -> list[str]:
    """A different list (length, words, batch size) for each call, all from the vocabulary."""
    words = WORDS[5:28]
    return [" ".join(words[(i + j) % len(words): (i + j) % len(words) + 1 + (i * j) % 11]) for j in range(1 + i % 7)]


def hammer(call, calls: int) -> list:
    """`call(i)` for i in range(calls), from THREADS threads that start together."""
    barrier = threading.Barrier(THREADS)

    def worker(start: int) -> list:
        barrier.wait()
        return [(i, call(i)) for i in range(start, calls, THREADS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for part in pool.map(worker, range(THREADS)) for r in part]
    return [result for _, result in sorted(results, key=lambda r: r[0])]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("threads")
    return (load(build_bundle(root / "e").folder, threads=1),
            load(build_bundle(root / "c", task="text-classification").folder, threads=1))


def test_threads_embed_what_serial_calls_embed(models):
    embed, _ = models
    calls = THREADS * ROUNDS
    serial = [embed.embed(texts_for(i), batch_size=1 + i % 3) for i in range(calls)]
    threaded = hammer(lambda i: embed.embed(texts_for(i), batch_size=1 + i % 3), calls)
    for i, (a, b) in enumerate(zip(serial, threaded)):
        np.testing.assert_array_equal(a, b, err_msg=f"call {i}")


def test_threads_classify_and_encode_like_serial_calls(models):
    _, classify = models
    calls = THREADS * ROUNDS
    # pad_to varies too: the first call for each length builds its tokenizer, under a lock
    call = lambda i: (classify.classify(texts_for(i)), classify.encode(texts_for(i), pad_to=2 + i % 13))  # noqa: E731
    threaded = hammer(call, calls)
    serial = [call(i) for i in range(calls)]
    for i, ((preds_a, feeds_a), (preds_b, feeds_b)) in enumerate(zip(serial, threaded)):
        assert [p.label for p in preds_a] == [p.label for p in preds_b], f"call {i}"
        np.testing.assert_array_equal([p.score for p in preds_a], [p.score for p in preds_b])
        for name in feeds_a:
            np.testing.assert_array_equal(feeds_a[name], feeds_b[name])


def test_a_tokenizer_is_safe_to_share_for_encoding(models):
    # The runtime holds no lock around encode_batch_fast; this is the property it relies on.
    embed, _ = models
    tokenizer: Tokenizer = embed.tokenizer
    batches = [texts_for(i) for i in range(64)]
    serial = [[e.ids for e in tokenizer.encode_batch_fast(b)] for b in batches]
    threaded = hammer(lambda i: [e.ids for e in tokenizer.encode_batch_fast(batches[i % 64])], 64 * 4)
    assert threaded == [serial[i % 64] for i in range(64 * 4)]
