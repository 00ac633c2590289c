"""Evaluation: a model's task score over the held-out half of the evaluation split.

The split's defaults (test fraction, seed) are `EvaluateSettings`' defaults, and every
place that means "the pipeline's default split" (`edgegolf prune`, `edgegolf distill`, the
distillation transfer data) takes them from here, so that a text compress scores on is never
one another command calibrated or trained on.

The teacher (PyTorch) and every ONNX artifact (through `edgegolf.runtime`, the code an app
embeds) are fed the same tokenized texts one at a time (batch 1: dynamic int8 scales
activations per batch, so a text's result would otherwise change with its neighbours).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Evaluation:
    """The task's scoring of any model over one split."""

    adapter: "TaskAdapter"
    split: Split

    def outputs(self, item: Callable[[str], np.ndarray], label: str) -> "Outputs":
        """`item(text)` for every text the task scores (the train half too when it fits a probe)."""
        from edgegolf.tasks.base import Outputs

        train = self.split.train.texts if self.adapter.scores_train else ()
        texts = train + self.split.test.texts
        rows = [item(text) for text in track(texts, f"evaluate {label}", len(texts))]
        n = len(train)
        return Outputs(np.stack(rows[:n]) if n else np.zeros((0, *rows[0].shape)), np.stack(rows[n:]))

    def teacher(self, model, encoder) -> tuple["Outputs", dict[str, float]]:
        """The PyTorch teacher's outputs (every later score's reference) and its metrics."""
        outputs = self.outputs(lambda text: self.adapter.teacher_item(model, encoder, text), "teacher")
        return outputs, self.adapter.score(outputs, outputs, self.split, model.config)

    def artifact(self, runtime_model, label: str, teacher: "Outputs", model_config: Any) -> dict[str, float]:
        """Metrics of an ONNX artifact opened through the runtime, against the teacher's outputs."""
        outputs = self.outputs(lambda text: self.adapter.artifact_item(runtime_model, text), label)
        return self.adapter.score(teacher, outputs, self.split, model_config)
