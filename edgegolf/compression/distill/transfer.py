"""Transfer data: the texts the student learns the teacher's outputs on.

Accepted: "train-split" (the train half of the task's evaluation split; BBC News's default
split when the caller passes none), "bbc-news" (the train half of BBC News's default split,
30% test, seed 0), a .txt file (one
text per line), .jsonl, .csv or .parquet (with a text column), or a folder written by
`datasets.Dataset.save_to_disk`. The split the accuracy is measured on is never used: texts
that also occur in it are dropped, and the report says how many.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgegolf.data import DEFAULT_DATA as BBC
from edgegolf.datafiles import read_table
from edgegolf.data import Split
from edgegolf.errors import DataError

log = logging.getLogger(__name__)

TRAIN_SPLIT = "train-split"
ACCEPTED = "train-split, bbc-news, or a .txt/.jsonl/.csv/.parquet file or a folder saved by datasets"
COLUMN_GUESSES = ("text", "sentence", "content", "document")


@dataclass(frozen=True)
class TransferData:
    texts: tuple[str, ...]
    labels: tuple[str, ...] | None  # class names where the source has them (the task's train split)
    source: str
    dropped_test_overlap: int = 0

    @property
    def sha256(self) -> str:
        """Hash of the texts in order, each followed by a NUL: what the report records."""
        digest = hashlib.sha256()
        for text in self.texts:
            digest.update(text.encode("utf-8") + b"\0")
        return digest.hexdigest()

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "texts": len(self.texts), "sha256": self.sha256,
                "labelled": self.labels is not None, "dropped_test_overlap": self.dropped_test_overlap}


def default_split() -> Split:
    """BBC News's default evaluation split (the [evaluate] defaults: edgegolf.measure.evaluate)."""
    from edgegolf.measure.evaluate import default_split as split_of

    return split_of()


def load_transfer(spec: str, column: str | None = None, *, split: Split | None = None) -> TransferData:
    """Read transfer data from `spec`; `split` is the evaluation split (its test half is excluded)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"distill data {spec!r} is empty; give {ACCEPTED}")
    spec = spec.strip()
    if spec == TRAIN_SPLIT and split is not None:
        return TransferData(split.train.texts, split.train.labels, f"{split.train.source}:train")
    if spec in (TRAIN_SPLIT, BBC):
        # BBC's whole default train half; a caller's (smaller, limited) split may test on some of it
        train = default_split().train
        data = TransferData(train.texts, train.labels, f"{train.source}:train")
        return exclude_test(data, split) if split is not None else data
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"distill data {spec!r} does not exist; give {ACCEPTED}")
    texts = _read_path(path, column)
    data = TransferData(tuple(texts), None, str(path))
    return exclude_test(data, split) if split is not None else data


def load_transfer_texts(spec: str, column: str | None = None) -> list[str]:
    """The texts of `load_transfer(spec, column)` (the API sketch's form)."""
    return list(load_transfer(spec, column).texts)


def exclude_test(data: TransferData, split: Split) -> TransferData:
    test = set(split.test.texts)
    keep = [i for i, t in enumerate(data.texts) if t not in test]
    dropped = len(data.texts) - len(keep)
    if dropped:
        log.warning("dropped %d transfer texts that are in the evaluation test split", dropped)
    if not keep:
        raise DataError(f"distill data {data.source!r} holds only texts of the evaluation test split; "
                        "give texts the accuracy is not measured on")
    labels = tuple(data.labels[i] for i in keep) if data.labels is not None else None
    return TransferData(tuple(data.texts[i] for i in keep), labels, data.source, dropped)


def _read_path(path: Path, column: str | None) -> list[str]:
    if path.is_dir():
        if not any((path / marker).exists() for marker in ("state.json", "dataset_dict.json", "dataset_info.json")):
            raise DataError(f"distill data folder {str(path)!r} is not a folder saved by datasets (no state.json or "
                            f"dataset_dict.json); give {ACCEPTED}")
        return _finish(path, _read_datasets(path, column))
    suffix = path.suffix.lower()
    readers = {".txt": _read_txt, ".jsonl": _read_table, ".csv": _read_table, ".parquet": _read_table}
    if suffix not in readers:
        raise DataError(f"distill data {str(path)!r} has type {suffix or '(none)'!r}; accepted: "
                        ".txt, .jsonl, .csv, .parquet, or a folder saved by datasets")
    if path.stat().st_size == 0:
        raise DataError(f"distill data file {str(path)!r} is empty; give a file with at least one text")
    if suffix == ".txt" and column is not None:
        raise DataError(f"distill.column = {column!r} does not apply to a .txt file (one text per line); drop it")
    try:
        return _finish(path, readers[suffix](path, column))
    except UnicodeDecodeError as exc:
        raise DataError(f"distill data file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        "give a UTF-8 file") from None


def _finish(path: Path, texts: list[str]) -> list[str]:
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise DataError(f"distill data {str(path)!r} has no non-empty texts; give at least one")
    return texts


def _read_txt(path: Path, column: str | None) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _pick_column(path: Path, names: list[str], column: str | None) -> str:
    if column is not None:
        if column not in names:
            raise DataError(f"distill.column = {column!r} is not a column of {str(path)!r}; its columns: "
                            f"{', '.join(map(str, names)) or '(none)'}")
        return column
    for guess in COLUMN_GUESSES:
        if guess in names:
            return guess
    raise DataError(f"distill data {str(path)!r} has no column named {', '.join(COLUMN_GUESSES)}; set distill.column "
                    f"to one of: {', '.join(map(str, names)) or '(none)'}")


def _text_of(path: Path, where: str, column: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DataError(f"distill data {str(path)!r} {where}: column {column!r} holds {type(value).__name__} "
                        f"{str(value)[:40]!r}, not text; choose a text column with distill.column")
    return value


def _read_table(path: Path, column: str | None) -> list[str]:
    """A .jsonl/.csv/.parquet file, through the reader labelled evaluation data uses too."""
    table = read_table(path, "distill data")
    if not table.rows:
        return []
    return table.texts(_pick_column(path, list(table.columns), column), "choose a text column with distill.column")


def _read_datasets(path: Path, column: str | None) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"distill data {str(path)!r} is a datasets folder, which needs the package datasets: "
                        "pip install datasets (or give .txt, .jsonl or .csv)") from None
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"distill data {str(path)!r} has splits {', '.join(loaded)} but no 'train'; "
                            "save the train split alone or name it 'train'")
        loaded = loaded["train"]
    name = _pick_column(path, list(loaded.column_names), column)
    return [_text_of(path, f"row {i}", name, v) for i, v in enumerate(loaded[name])]
