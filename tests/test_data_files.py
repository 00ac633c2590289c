"""Labelled evaluation data from .csv, .jsonl and .parquet files: every form reads, every bad one fails in one line."""

from __future__ import annotations

import json
import os

import pytest

from edgegolf.data import load_labelled_texts, stratified_split
from edgegolf.errors import DataError, MissingExtraError

ROWS = [("Shares fell sharply.", "business"), ("The striker scored twice.", "sport"),
        ("Profits rose again.", "business"), ("The keeper saved a penalty.", "sport")]


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def write_csv(path, header="text,label", rows=ROWS):
    path.write_text(header + "\n" + "".join(f'"{t}",{label}\n' for t, label in rows), encoding="utf-8")
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_csv_jsonl_and_parquet_read_the_same_data(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_data = load_labelled_texts(write_csv(tmp_path / "a.csv"))
    jsonl = load_labelled_texts(write_jsonl(tmp_path / "a.jsonl", [{"text": t, "label": lab} for t, lab in ROWS]))
    pq.write_table(pa.table({"text": [t for t, _ in ROWS], "label": [lab for _, lab in ROWS]}), tmp_path / "a.parquet")
    parquet = load_labelled_texts(tmp_path / "a.parquet")
    for data in (csv_data, jsonl, parquet):
        assert data.texts == tuple(t for t, _ in ROWS) and data.labels == tuple(lab for _, lab in ROWS)
        assert data.classes == ["business", "sport"]
    split = stratified_split(csv_data, test_fraction=0.5, seed=0)
    assert len(split.train) == 2 and len(split.test) == 2 and set(split.test.labels) == {"business", "sport"}


def test_named_columns_integer_labels_and_blank_texts(tmp_path):
    rows = [{"body": "one", "y": 0, "id": 1}, {"body": "  ", "y": 1, "id": 2}, {"body": "three", "y": 1, "id": 3}]
    data = load_labelled_texts(write_jsonl(tmp_path / "a.jsonl", rows), text_column="body", label_column="y")
    assert data.texts == ("one", "three") and data.labels == ("0", "1")  # class ids become names "0", "1"


def test_missing_column_names_the_columns_that_exist(tmp_path):
    path = write_csv(tmp_path / "a.csv", header="body,label")
    with pytest.raises(DataError) as info:
        load_labelled_texts(path)
    message = one_line(info)
    assert "has no column 'text'" in message and "--text-column" in message and "its columns: body, label" in message
    with pytest.raises(DataError) as info:
        load_labelled_texts(path, text_column="body", label_column="topic")
    assert "has no column 'topic'" in one_line(info) and "evaluate.label_column" in str(info.value)


def test_a_jsonl_line_without_the_label(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(DataError) as info:
        load_labelled_texts(path)
    assert "line 2 has no column 'label'" in one_line(info)


def test_wrong_types(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": "x"}, {"text": 7, "label": "y"}])
    with pytest.raises(DataError) as info:
        load_labelled_texts(path)
    assert "line 2: column 'text' holds int '7', not text" in one_line(info)
    path = write_jsonl(tmp_path / "b.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": [1]}])
    with pytest.raises(DataError) as info:
        load_labelled_texts(path)
    assert "line 2: column 'label' holds list" in one_line(info) and "not a class name or class id" in str(info.value)
    path = write_csv(tmp_path / "c.csv", rows=[("a", "x"), ("b", "")])
    with pytest.raises(DataError) as info:
        load_labelled_texts(path)
    assert "row 2: column 'label' holds str ''" in one_line(info)


def test_empty_file_single_class_and_no_texts(tmp_path):
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_labelled_texts(tmp_path / "empty.csv")
    assert "is empty" in one_line(info)
    with pytest.raises(DataError) as info:
        load_labelled_texts(write_csv(tmp_path / "one.csv", rows=[("a", "x"), ("b", "x")]))
    assert "has one class ('x'); at least two are needed" in one_line(info)
    with pytest.raises(DataError) as info:
        load_labelled_texts(write_csv(tmp_path / "header-only.csv", rows=[]))
    assert "no non-empty texts in column 'text'" in one_line(info)


def test_unknown_extension_missing_broken_and_non_utf8_files(tmp_path):
    (tmp_path / "a.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError) as info:
        load_labelled_texts(tmp_path / "a.xlsx")
    assert "type '.xlsx'" in one_line(info) and ".csv, .jsonl or .parquet" in str(info.value)
    with pytest.raises(DataError) as info:
        load_labelled_texts(tmp_path / "nope.csv")
    assert "does not exist" in one_line(info)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError) as info:
        load_labelled_texts(tmp_path / "bad.parquet")
    assert "is not a readable parquet file" in one_line(info)
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ncaf\xe9,x\n")
    with pytest.raises(DataError) as info:
        load_labelled_texts(tmp_path / "latin1.csv")
    assert "is not UTF-8 text" in one_line(info)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-0 file")
def test_unreadable_file(tmp_path):
    locked = write_csv(tmp_path / "locked.csv")
    locked.chmod(0)
    try:
        with pytest.raises(DataError) as info:
            load_labelled_texts(locked)
        assert "cannot read data file" in one_line(info)
    finally:
        locked.chmod(0o644)


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    import sys

    (tmp_path / "a.parquet").write_bytes(b"PAR1\x00\x00PAR1")
    # pyarrow is installed here; hide it as a user without the extra would lack it.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtraError) as info:
        load_labelled_texts(tmp_path / "a.parquet")
    assert "needs the 'parquet' extra (pyarrow is not installed)" in one_line(info)
    assert "edgegolf[parquet]" in str(info.value)
