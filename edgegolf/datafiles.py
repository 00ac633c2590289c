"""Reading tabular data files (.csv, .jsonl, .parquet) into rows, with one-line errors.

One reader for every place that takes a data file: labelled evaluation data
(`edgegolf.data`) and unlabelled transfer texts for distillation
(`edgegolf.compression.distill.transfer`). Callers pick their columns; this module only
reads, says where each row came from (for messages), and checks value types.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgegolf.errors import DataError

TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")


@dataclass(frozen=True)
class Table:
    """The rows of a data file; `what` is how messages name it ("data", "distill data")."""

    path: Path
    what: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, dict[str, Any]], ...]  # (where: "line 3" / "row 3", the row)

    def __len__(self) -> int:
        return len(self.rows)

    def describe(self) -> str:
        return f"{self.what} {str(self.path)!r}"

    def values(self, column: str) -> list[tuple[str, Any]]:
        """(where, value) of `column` in every row; a row without it is an error (JSON lines may differ)."""
        out = []
        for where, row in self.rows:
            if column not in row:
                raise DataError(f"{self.describe()} {where} has no column {column!r}; every line needs it")
            out.append((where, row[column]))
        return out

    def texts(self, column: str, hint: str) -> list[str]:
        """The column's values, which must all be strings; `hint` says how to choose another column."""
        texts = []
        for where, value in self.values(column):
            if not isinstance(value, str):
                raise DataError(f"{self.describe()} {where}: column {column!r} holds {type(value).__name__} "
                                f"{str(value)[:40]!r}, not text; {hint}")
            texts.append(value)
        return texts


def read_table(path: str | Path, what: str = "data") -> Table:
    """Read a .csv (header row), .jsonl (one object per line) or .parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}
    if suffix not in readers:
        raise DataError(f"{what} {str(path)!r} has type {suffix or '(none)'!r}; accepted: {', '.join(TABLE_SUFFIXES)}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from None
    if size == 0:
        raise DataError(f"{what} file {str(path)!r} is empty; give a file with at least one row")
    try:
        columns, rows = readers[suffix](path, what)
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        "give a UTF-8 file") from None
    except OSError as exc:  # permissions, a folder named like a file, a vanished file
        raise DataError(f"cannot read {what} file {str(path)!r}: {exc.strerror or exc}") from None
    return Table(path, what, tuple(columns), tuple(rows))


def _read_jsonl(path: Path, what: str):
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{what} {str(path)!r} line {number} is not JSON ({exc.msg}); "
                            "give one JSON object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{what} {str(path)!r} line {number} is a {type(row).__name__}, not an object; "
                            'give one JSON object per line, like {"text": "..."}')
        rows.append((f"line {number}", row))
    columns = list(rows[0][1]) if rows else []
    return columns, rows


def _read_csv(path: Path, what: str):
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        # A short row's missing cells read as "" (csv gives None), as spreadsheets write them.
        rows = [(f"row {number}", {k: ("" if v is None else v) for k, v in row.items() if k is not None})
                for number, row in enumerate(reader, 1)]
    return columns, rows


def _read_parquet(path: Path, what: str):
    from edgegolf.extras import require_extra

    needed_by, otherwise = f"{what} {str(path)!r} (a parquet file)", "; or give .jsonl or .csv"
    pa = require_extra("parquet", "pyarrow", needed_by=needed_by, otherwise=otherwise)
    pq = require_extra("parquet", "pyarrow.parquet", needed_by=needed_by, otherwise=otherwise)
    try:
        table = pq.read_table(path)
    except pa.ArrowException as exc:  # ArrowInvalid & co. for a broken file
        raise DataError(f"{what} {str(path)!r} is not a readable parquet file: {str(exc).splitlines()[0]}") from None
    columns = [str(name) for name in table.column_names]
    rows = [(f"row {number}", row) for number, row in enumerate(table.to_pylist(), 1)]
    return columns, rows
