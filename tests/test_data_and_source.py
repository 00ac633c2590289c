"""Evaluation data and model sources: the real BBC News, real folders, a real hub lookup."""

from __future__ import annotations

import collections

import pytest

from edgegolf.data import load_labelled_texts, stratified_split
from edgegolf.errors import DataError, SourceError
from edgegolf.source import resolve_source


def test_bbc_news_is_complete_and_split_stratified():
    data = load_labelled_texts()
    assert len(data) == 2225
    assert collections.Counter(data.labels) == {
        "business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    split = stratified_split(data, test_fraction=0.3, seed=0)
    assert len(split.train) + len(split.test) == 2225
    test_counts = collections.Counter(split.test.labels)
    assert test_counts["business"] == 153 and test_counts["entertainment"] == 116
    again = stratified_split(data, test_fraction=0.3, seed=0)
    assert again.test.texts == split.test.texts  # seeded: every run sees the same held-out texts
    assert not set(split.train.texts) & set(split.test.texts) - {t for t in data.texts if data.texts.count(t) > 1}


def test_limited_split_keeps_every_class():
    split = stratified_split(load_labelled_texts(), test_fraction=0.3, seed=0, limit=60)
    assert 55 <= len(split.train) + len(split.test) <= 65
    assert set(split.test.labels) == {"business", "entertainment", "politics", "sports", "tech"}


def test_bad_data_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist; give 'bbc-news', a folder"):
        load_labelled_texts(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no non-empty .txt files"):
        load_labelled_texts(tmp_path / "empty")
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    (one / "a.txt").write_text("some text")
    with pytest.raises(DataError, match="at least two are needed"):
        load_labelled_texts(tmp_path / "one")


def test_sources(tmp_path, tiny_bert):
    assert resolve_source(None).kind == "default"
    assert (resolve_source(None).path / "config.json").is_file()
    assert resolve_source(str(tiny_bert)).kind == "folder"
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source(str(tmp_path / "missing-model"))
    (tmp_path / "no-config").mkdir()
    with pytest.raises(SourceError, match="has no config.json"):
        resolve_source(str(tmp_path / "no-config"))
    file = tmp_path / "weights.onnx"
    file.write_bytes(b"x")
    with pytest.raises(SourceError, match="is a file"):
        resolve_source(str(file))


def test_unreachable_hub_is_a_clear_error():
    # This machine cannot reach the hub: the id is well-formed, the fetch fails cleanly.
    with pytest.raises(SourceError, match="cannot fetch 'bert-base-uncased' from the Hugging Face hub"):
        resolve_source("bert-base-uncased")
