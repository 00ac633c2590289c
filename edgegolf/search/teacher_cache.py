"""The teacher's evaluation outputs, kept in files beside the study storage so that every
trial and every worker on the machine computes them once.

The teacher is the same model on the same split in every trial of a search; its outputs on
the evaluation split are the reference every trial is scored against. Inside one process the
stage cache already keeps them; this file cache shares them between processes (workers on one
storage, a rerun of a search). An entry is keyed by the model's files, the task, the scored
split's texts and labels, the input length and the evaluation batch, written atomically
(temporary file, then rename), and computed under a lock: a second worker waits for the first
one's entry instead of computing it too. Plain arrays and JSON: nothing is unpickled.

    folder/<key>.npz, <key>.json   the outputs' arrays, and the metrics
    folder/events.log              one line per computed or read entry: "computed <key> <pid>"
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgegolf.publish import atomic_output

log = logging.getLogger(__name__)

SKIPPED_DIRS = {".git", "__pycache__", "onnx", "openvino"}  # not what PyTorch loads


def folder_beside(storage_url: str, search_dir: Path) -> Path:
    """Beside a SQLite storage's file (every worker on it sees the folder); for a server
    storage, in the search folder of this machine."""
    if storage_url.startswith("sqlite:///"):
        db = Path(storage_url[len("sqlite:///"):])
        return db.parent / f"{db.name}.teacher-outputs"
    return search_dir / "teacher-outputs"


def _fingerprint(source_dir: Path) -> str:
    """sha256 over the model folder's files (weights, config, tokenizer, pooling): its identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(source_dir).rglob("*")
                       if p.is_file() and not SKIPPED_DIRS & set(p.relative_to(source_dir).parts)):
        digest.update(str(path.relative_to(source_dir)).encode())
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class TeacherOutputs:
    """`fetch` gives the teacher's (outputs, metrics) from the folder, or computes and stores them."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._fingerprints: dict[str, str] = {}

    def key(self, source_dir: Path, evaluation, max_length: int) -> str:
        split = evaluation.split
        source = str(Path(source_dir).resolve())
        if source not in self._fingerprints:
            self._fingerprints[source] = _fingerprint(Path(source_dir))
        blob = json.dumps([self._fingerprints[source], evaluation.adapter.name, max_length, evaluation.teacher_batch(),
                           split.train.texts, split.train.labels, split.test.texts, split.test.labels])
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def fetch(self, key: str, compute: Callable[[], tuple[Any, dict[str, float]]]) -> tuple[Any, dict[str, float]]:
        from edgegolf.tasks.base import Outputs

        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked(key):
            stored = self._read(key)
            if stored is not None:
                self._event("read", key)
                log.info("teacher outputs read from %s (computed by an earlier trial or another worker)", self.folder)
                return stored
            outputs, metrics = compute()
            if type(outputs) is Outputs:  # a task's own outputs type: not known to be plain arrays
                self._write(key, outputs, metrics)
                self._event("computed", key)
            return outputs, metrics

    @contextlib.contextmanager
    def _locked(self, key: str):
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no lock; two workers may both compute, each write is atomic
            yield
            return
        with open(self.folder / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, key: str):
        from edgegolf.tasks.base import Outputs

        arrays_path, metrics_path = self.folder / f"{key}.npz", self.folder / f"{key}.json"
        if not (arrays_path.exists() and metrics_path.exists()):
            return None
        try:
            with np.load(arrays_path, allow_pickle=False) as arrays:
                outputs = Outputs(arrays["train"], arrays["test"])
                outputs.correct = arrays["correct"] if "correct" in arrays.files else None
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as exc:  # a damaged entry is computed again
            log.warning("teacher outputs cache entry %s cannot be read (%s); computing it again", key, exc)
            return None
        return outputs, metrics

    def _write(self, key: str, outputs, metrics: dict[str, float]) -> None:
        arrays = {"train": outputs.train, "test": outputs.test}
        if outputs.correct is not None:
            arrays["correct"] = outputs.correct
        with atomic_output(self.folder / f"{key}.npz") as partial, open(partial, "wb") as file:
            np.savez(file, **arrays)  # a file object: given a name, savez would append ".npz" to it
        with atomic_output(self.folder / f"{key}.json") as partial:  # last: an entry counts once both files are there
            partial.write_text(json.dumps(metrics), encoding="utf-8")

    def _event(self, what: str, key: str) -> None:
        with open(self.folder / "events.log", "a", encoding="utf-8") as log_file:  # appends of one short line
            log_file.write(f"{what} {key} {os.getpid()}\n")
