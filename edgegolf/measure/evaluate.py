"""Evaluation: a model's task score over the held-out half of the evaluation split.

The split's defaults (test fraction, seed) are `EvaluateSettings`' defaults, and every
place that means "the pipeline's default split" (`edgegolf prune`, `edgegolf distill`, the
distillation transfer data) takes them from here, so that a text compress scores on is never
one another command calibrated or trained on.

The teacher (PyTorch) and every ONNX artifact (through `edgegolf.runtime`, the code an app
embeds) are fed the same tokenized texts. A stage whose outputs do not depend on their batch
neighbours (fp32 PyTorch and ONNX, fp16, int4 weight-only, static int8: the padding mask keeps
texts apart) is fed padded batches of EVAL_BATCH texts of similar length; one that does
(dynamic int8 scales activations per input tensor, so a text's result changes with its
neighbours) is fed one text at a time. docs/evaluation.md gives the measured differences.

Every accuracy comes with its 95 % interval (Wilson, over the test texts) and every drop with
a paired bootstrap interval, since a default run scores a stratified subset of the data.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgegolf.data import Split, load_labelled_texts, stratified_split
from edgegolf.progress import track
from edgegolf.recipe import EvaluateSettings

if TYPE_CHECKING:  # tasks import torch; the split defaults above must not need it
    from edgegolf.tasks.base import Outputs, TaskAdapter

DEFAULTS = EvaluateSettings()


def default_split(data: str | Path | None = None, *, seed: int = DEFAULTS.seed) -> Split:
    """The evaluation split compress uses by default, of `data` (BBC News when None)."""
    return stratified_split(load_labelled_texts(data), test_fraction=DEFAULTS.test_fraction, seed=seed)


def work_threads() -> int:
    """Threads for the work that is not timed (evaluation, pruning, export checks).

    Half the cores: intra-op thread pools that spin (torch's, onnxruntime's) collapse when
    another process wants the same cores. Measured on a 2-core box beside one busy
    process: a MiniLM forward took 137 ms on 1 torch thread and 1770 ms on 2.
    """
    return max(1, (os.cpu_count() or 2) // 2)


@contextmanager
def torch_threads(threads: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


EVAL_BATCH = DEFAULTS.batch  # texts per padded batch where a stage's outputs do not depend on their neighbours
CONFIDENCE_Z = 1.96  # 95 % intervals
BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(correct: int, n: int, z: float = CONFIDENCE_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion, in percent (Wilson 1927; it stays inside
    [0, 100] and is honest near 100 %, where the normal approximation is not)."""
    if n <= 0:
        return (0.0, 100.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100.0 * max(0.0, float(centre - half)), 100.0 * min(1.0, float(centre + half)))


def paired_drop_interval(teacher: np.ndarray, candidate: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """A 95 % percentile-bootstrap interval of the accuracy drop (teacher - candidate, points),
    resampling the texts both were scored on: the pairing cancels the texts' own difficulty,
    so the interval is far narrower than two separate accuracy intervals would suggest."""
    drop = teacher.astype(np.float64) - candidate.astype(np.float64)
    rng = np.random.default_rng(seed)
    means = drop[rng.integers(0, len(drop), size=(BOOTSTRAP_RESAMPLES, len(drop)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (100.0 * float(low), 100.0 * float(high))


def with_intervals(metrics: dict[str, float], correct: np.ndarray | None,
                   teacher_correct: np.ndarray | None) -> dict[str, float]:
    """`metrics` plus the 95 % interval of the accuracy (and of its drop, paired with the teacher)."""
    if correct is None or not len(correct):
        return metrics
    low, high = wilson_interval(int(correct.sum()), len(correct))
    out = {**metrics, "accuracy_ci95_low": low, "accuracy_ci95_high": high}
    if teacher_correct is not None and len(teacher_correct) == len(correct):
        out["accuracy_drop_ci95_low"], out["accuracy_drop_ci95_high"] = paired_drop_interval(teacher_correct, correct)
    return out


def length_order(texts: tuple[str, ...] | list[str]) -> list[int]:
    """Indices of `texts`, longest first: neighbours in a padded batch have similar lengths
    (characters stand in for tokens), so little of each batch is padding."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


@dataclass(frozen=True)
class Evaluation:
    """The task's scoring of any model over one split."""

    adapter: "TaskAdapter"
    split: Split
    batch: int = EVAL_BATCH  # for stages whose outputs do not depend on their batch neighbours

    def outputs(self, rows_of: Callable[[list[str]], np.ndarray], label: str, batch: int = 1) -> "Outputs":
        """`rows_of(texts)` (one row per text) for every text the task scores (the train half too
        when it fits a probe), `batch` texts at a time, similar lengths together."""
        from edgegolf.tasks.base import Outputs

        train = self.split.train.texts if self.adapter.scores_train else ()
        texts = train + self.split.test.texts
        order = length_order(texts) if batch > 1 else list(range(len(texts)))
        groups = [order[start:start + batch] for start in range(0, len(order), batch)]
        rows: list[np.ndarray | None] = [None] * len(texts)
        described = f"evaluate {label}" + (f" (batch {batch})" if batch > 1 else "")
        for group in track(groups, described, len(texts), size=len):
            for index, row in zip(group, rows_of([texts[i] for i in group])):
                rows[index] = row
        n = len(train)
        stacked = np.stack(rows)  # type: ignore[arg-type]
        return Outputs(stacked[:n] if n else np.zeros((0, *stacked.shape[1:])), stacked[n:])

    @cached_property
    def scorer(self) -> "TaskAdapter":
        """The adapter bound to this split (causal-lm: its token budget): what every row and score comes from."""
        return self.adapter.for_split(self.split)

    def teacher_batch(self) -> int:
        """The teacher's evaluation batch: PyTorch fp32 with a padding mask does not mix texts."""
        return self.batch if self.adapter.batch_independent else 1

    def teacher(self, model, encoder) -> tuple["Outputs", dict[str, float]]:
        """The PyTorch teacher's outputs (every later score's reference) and its metrics."""
        outputs = self.outputs(lambda texts: self.scorer.teacher_rows(model, encoder, texts), "teacher",
                               self.teacher_batch())
        metrics, outputs.correct = self.scorer.judge(outputs, outputs, self.split, model.config)
        return outputs, with_intervals(metrics, outputs.correct, None)

    def artifact(self, runtime_model, label: str, teacher: "Outputs", model_config: Any, batch: int = 1
                 ) -> dict[str, float]:
        """Metrics of an ONNX artifact opened through the runtime, against the teacher's outputs."""
        outputs = self.outputs(lambda texts: self.scorer.artifact_rows(runtime_model, texts), label, batch)
        metrics, correct = self.scorer.judge(teacher, outputs, self.split, model_config)
        return with_intervals(metrics, correct, getattr(teacher, "correct", None))
