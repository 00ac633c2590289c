"""Transfer data: every accepted form reads, every bad one fails with one clear line."""

from __future__ import annotations

import importlib.util
import json

import pytest

from edgegolf.compression.distill import load_transfer, load_transfer_texts
from edgegolf.data import LabelledTexts, Split
from edgegolf.errors import DataError, MissingExtraError


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_text_jsonl_and_csv_files(tmp_path):
    (tmp_path / "a.txt").write_text("first text\n\n  second text  \n", encoding="utf-8")
    assert load_transfer_texts(str(tmp_path / "a.txt")) == ["first text", "second text"]
    (tmp_path / "a.jsonl").write_text('{"text": "one", "n": 1}\n\n{"text": "two", "n": 2}\n', encoding="utf-8")
    assert load_transfer_texts(str(tmp_path / "a.jsonl")) == ["one", "two"]
    (tmp_path / "a.csv").write_text('id,body\n1,"hello, world"\n2,bye\n', encoding="utf-8")
    assert load_transfer_texts(str(tmp_path / "a.csv"), "body") == ["hello, world", "bye"]
    data = load_transfer(str(tmp_path / "a.csv"), "body")
    assert data.record()["texts"] == 2 and len(data.sha256) == 64 and data.labels is None


def test_bbc_train_split_is_the_default_and_never_the_test_split():
    data = load_transfer("train-split")
    assert data.source == "bbc-news:train" and len(data.texts) == 1558 and data.labels is not None
    assert load_transfer("bbc-news").sha256 == data.sha256


def test_a_callers_split_is_used_and_its_test_texts_are_dropped_from_files(tmp_path):
    split = Split(LabelledTexts(("a b", "c d"), ("x", "y"), "mine"), LabelledTexts(("e f",), ("x",), "mine"))
    data = load_transfer("train-split", split=split)
    assert data.texts == ("a b", "c d") and data.source == "mine:train"
    (tmp_path / "t.txt").write_text("a b\ne f\ng h\n", encoding="utf-8")
    data = load_transfer(str(tmp_path / "t.txt"), split=split)
    assert data.texts == ("a b", "g h") and data.dropped_test_overlap == 1
    (tmp_path / "only_test.txt").write_text("e f\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_transfer(str(tmp_path / "only_test.txt"), split=split)
    assert "only texts of the evaluation test split" in one_line(info)


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path / "nope.jsonl"))
    assert "nope.jsonl' does not exist" in one_line(info) and "train-split" in str(info.value)


@pytest.mark.parametrize("name, content", [("empty.txt", ""), ("empty.jsonl", ""), ("blank.txt", "\n  \n")])
def test_empty_files(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path / name))
    assert "empty" in one_line(info) or "no non-empty texts" in str(info.value)


def test_missing_column(tmp_path):
    (tmp_path / "a.csv").write_text("id,body\n1,hi\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path / "a.csv"), "text_col")
    assert "distill.column = 'text_col' is not a column" in one_line(info) and "id, body" in str(info.value)
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path / "a.csv"))  # no column named and no usual name
    assert "set distill.column to one of: id, body" in one_line(info)
    (tmp_path / "b.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path / "b.jsonl"))
    assert "line 2 has no column 'text'" in one_line(info)


def test_wrong_types(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "a"}\n{"text": 42}\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path / "a.jsonl"))
    assert "line 2: column 'text' holds int '42', not text" in one_line(info)
    (tmp_path / "b.jsonl").write_text('["a list"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1 is a list, not an object"):
        load_transfer_texts(str(tmp_path / "b.jsonl"))
    (tmp_path / "c.jsonl").write_text('{"text": \n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1 is not JSON"):
        load_transfer_texts(str(tmp_path / "c.jsonl"))
    (tmp_path / "d.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path / "d.xlsx"))
    assert "type '.xlsx'" in one_line(info) and ".txt, .jsonl, .csv, .parquet" in str(info.value)
    (tmp_path / "e.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        load_transfer_texts(str(tmp_path / "e.txt"))
    (tmp_path / "f.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(DataError, match="distill.column = 'body' does not apply to a .txt file"):
        load_transfer_texts(str(tmp_path / "f.txt"), "body")


def test_a_folder_that_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path))
    assert "is not a folder saved by datasets" in one_line(info)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_a_saved_dataset_without_the_datasets_package_says_what_to_install(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"_data_files": []}), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_transfer_texts(str(tmp_path))
    assert "needs the package datasets: pip install datasets" in one_line(info)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_without_pyarrow_says_what_to_install(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"PAR1\x00\x00PAR1")
    with pytest.raises(MissingExtraError) as info:
        load_transfer_texts(str(tmp_path / "a.parquet"), "text")
    assert "needs the 'parquet' extra (pyarrow is not installed)" in one_line(info)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")
def test_parquet_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["one", "two"], "n": [1, 2]}), tmp_path / "a.parquet")
    assert load_transfer_texts(str(tmp_path / "a.parquet"), "body") == ["one", "two"]
    with pytest.raises(DataError, match="column 'n' holds int"):
        load_transfer_texts(str(tmp_path / "a.parquet"), "n")


def test_bbc_news_with_a_callers_split_drops_what_that_split_tests_on():
    train = load_transfer("bbc-news")
    split = Split(LabelledTexts(train.texts[:2], train.labels[:2], "bbc-news"),
                  LabelledTexts(train.texts[5:8], train.labels[5:8], "bbc-news"))
    data = load_transfer("bbc-news", split=split)
    assert data.dropped_test_overlap == 3 and len(data.texts) == len(train.texts) - 3
    assert not set(data.texts) & set(split.test.texts) and len(data.labels) == len(data.texts)
