"""Feeds, latency and peak memory of real ONNX graphs run through edgegolf.runtime.

The graphs are tiny embedding models built with onnx.helper; the tokenizer is a real
WordPiece tokenizer (the `tokenizers` library) over the most frequent words of BBC News.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from tokenizers import Tokenizer

from edgegolf.data import load_labelled_texts
from edgegolf.devices.inputs import (
    bench_onnx,
    fixed_shape_feeds,
    fixed_shape_from_encoder,
)
from edgegolf.devices.memory import peak_rss_onnx
from edgegolf.devices.profiles import DeviceProfile, get_profile
from edgegolf.errors import BundleError, DataError, RecipeError
from edgegolf.runtime.models import open_model
from tests.builders.embedder import (
    MAX_LENGTH,
    NAMES,
    embedder_spec,
    save_embedder,
    save_wordpiece_tokenizer,
)
from tests.builders.models import bbc_vocabulary

MB = 1 << 20


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("devices-onnx")
    vocab = bbc_vocabulary()
    tokenizer = save_wordpiece_tokenizer(folder / "tokenizer.json", vocab)
    save_embedder(folder / "small.onnx", len(vocab), 32)
    save_embedder(folder / "big.onnx", len(vocab), 8192)  # 1505 x 8192 float32: ~47 MB of weights
    return folder, tokenizer


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return list(load_labelled_texts().texts[:8])


def test_feeds_have_the_exact_shape_and_real_tokens(artifact, texts):
    folder, tokenizer = artifact
    model = open_model(folder / "small.onnx", folder / "tokenizer.json", embedder_spec(), threads=1)
    feeds = fixed_shape_feeds(model, texts, batch=3, seq=128)
    assert set(feeds) == set(NAMES)
    for array in feeds.values():
        assert array.shape == (3, 128) and array.dtype == np.int64 and array.flags.c_contiguous
    assert feeds["attention_mask"].all() and not feeds["token_type_ids"].any()
    # each row is its own article truncated to 128 tokens, exactly as the tokenizer gives them
    truncating = Tokenizer.from_str(tokenizer.to_str())
    truncating.enable_truncation(128)
    for row in range(3):
        assert len(tokenizer.encode(texts[row]).ids) > 128
        assert feeds["input_ids"][row].tolist() == truncating.encode(texts[row]).ids
    assert (feeds["input_ids"][:, 0] == 2).all() and (feeds["input_ids"][:, -1] == 3).all()  # [CLS] ... [SEP]
    assert (feeds["input_ids"][:, 1:] != 1).mean() > 0.5  # mostly known words, not [UNK]
    outputs = model.run(feeds)
    assert outputs[0].shape == (3, 128, 32)


def test_short_texts_are_joined_and_repeated(artifact):
    folder, tokenizer = artifact
    model = open_model(folder / "small.onnx", folder / "tokenizer.json", embedder_spec(), threads=1)
    short = ["Shares rose in London.", "The film won an award."]
    feeds = fixed_shape_feeds(model, short, batch=2, seq=40)
    assert feeds["input_ids"].shape == (2, 40) and feeds["attention_mask"].all()
    truncating = Tokenizer.from_str(tokenizer.to_str())
    truncating.enable_truncation(40)
    joined = truncating.encode(" ".join(short * 10)).ids
    assert feeds["input_ids"][0].tolist() == joined
    assert feeds["input_ids"][1].tolist() != joined  # the second row starts at the second text


def test_feeds_refuse_impossible_requests(artifact, texts):
    folder, _ = artifact
    model = open_model(folder / "small.onnx", folder / "tokenizer.json", embedder_spec(), threads=1)
    with pytest.raises(RecipeError, match=f"seq is 300; accepted: at most the model's max_length, {MAX_LENGTH}"):
        fixed_shape_feeds(model, texts, batch=1, seq=300)
    with pytest.raises(RecipeError, match="batch is 0"):
        fixed_shape_feeds(model, texts, batch=0, seq=8)
    with pytest.raises(DataError, match="at least one non-empty string"):
        fixed_shape_feeds(model, ["", "   "], batch=1, seq=8)


def test_encoder_that_cannot_fill_a_row(artifact):
    _, tokenizer = artifact
    tokenizer = Tokenizer.from_str(tokenizer.to_str())
    tokenizer.enable_truncation(10)  # a tokenizer that never gives more than 10 tokens

    def encode(rows, length):
        encodings = tokenizer.encode_batch(rows)
        return {"input_ids": np.array([e.ids for e in encodings]),
                "attention_mask": np.array([e.attention_mask for e in encodings])}

    with pytest.raises(DataError, match="only 10 tokens per row"):
        fixed_shape_from_encoder(encode, ("input_ids", "attention_mask"), 64, ["some words here"], batch=1, seq=20)


def test_bench_onnx_times_the_runtime(artifact, texts):
    folder, _ = artifact
    stats = bench_onnx(folder / "small.onnx", folder / "tokenizer.json", embedder_spec(), get_profile("cpu-1"), texts,
                       batch=2, seq=64, warmup=2, runs=15, max_seconds=None)
    assert stats.runs == 15
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p99_ms <= stats.max_ms < 1000


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_bench_onnx_with_pinned_core(artifact, texts):
    folder, _ = artifact
    before = os.sched_getaffinity(0)
    profile = DeviceProfile("pinned", threads=1, cores=(min(before),))
    stats = bench_onnx(folder / "small.onnx", folder / "tokenizer.json", embedder_spec(), profile, texts,
                       batch=1, seq=32, warmup=1, runs=5, max_seconds=None)
    assert stats.runs == 5 and os.sched_getaffinity(0) == before


def test_peak_rss_of_a_fresh_process_grows_with_the_model(artifact, texts):
    folder, _ = artifact
    small = peak_rss_onnx(folder / "small.onnx", folder / "tokenizer.json", embedder_spec(), threads=1, batch=1, seq=64,
                          texts=texts)
    big = peak_rss_onnx(folder / "big.onnx", folder / "tokenizer.json", embedder_spec(), threads=1, batch=1, seq=64,
                        texts=texts)
    assert small > 10 * MB
    assert big - small > 30 * MB  # the big graph holds ~47 MB more weights


def test_peak_rss_child_errors_keep_their_class(artifact, texts, tmp_path):
    folder, _ = artifact
    with pytest.raises(RecipeError, match="seq is 999"):
        peak_rss_onnx(folder / "small.onnx", folder / "tokenizer.json", embedder_spec(), threads=1, seq=999, texts=texts)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(BundleError, match="broken.onnx"):
        peak_rss_onnx(broken, folder / "tokenizer.json", embedder_spec(), threads=1, seq=16, texts=texts)
