"""`DistillReport`: what a distillation run did, as its provenance record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgegolf.compression.distill.config import DistillConfig


@dataclass
class DistillReport:
    """What a distillation run did; `to_dict()` is its provenance record (JSON-ready)."""

    task: str
    config: DistillConfig
    data: dict[str, Any]  # source, texts, sha256 (+ labelled, dropped_test_overlap)
    train_texts: int
    eval_texts: int
    train_windows: int  # what training draws from: the train texts and their later windows (config.windows)
    device: str
    precision: str
    layer_map: list[int] | None
    threads: int | None = None  # torch threads of CPU training (None: trained on a GPU)
    processes: int = 1  # data-parallel processes; a step sees batch_size x grad_accum x processes texts
    steps_run: int = 0  # optimizer steps done, counting those before a resume
    seconds: float = 0.0  # wall time of this call
    cpu_seconds: float = 0.0  # process CPU time of this call (all threads)
    # where it went: refit, teacher (its passes on windows not yet cached), batching, student forward
    # and loss, backward, optimizer, evaluation
    cpu_seconds_by_part: dict[str, float] = field(default_factory=dict)
    teacher_targets: int = 0  # training windows whose teacher targets were computed (not read from the cache)
    tokens: int = 0  # real (non-padding) tokens the student trained on in this call, all processes together
    tokens_per_s: float = 0.0
    loss_first: float | None = None
    loss_last: float | None = None
    loss_history: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss of the step)
    eval_history: list[dict[str, float]] = field(default_factory=list)  # step, loss and its parts
    best_eval_loss: float | None = None
    resumed_from_step: int | None = None
    stopped_early: bool = False
    restored_best_from_step: int | None = None
    refit: dict[str, Any] | None = None  # what the least-squares refit did (config.refit)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = self.config.to_dict()
        out["loss_history"] = [list(p) for p in self.loss_history]
        return out

    def record(self, points: int = 50) -> dict[str, Any]:
        """`to_dict()` without the config, with the loss history thinned to about `points`
        entries (a manifest's provenance: the config is recorded as the settings)."""
        out = self.to_dict()
        del out["config"]
        every = max(1, len(self.loss_history) // points)
        out["loss_history"] = [list(p) for i, p in enumerate(self.loss_history)
                               if i % every == 0 or i == len(self.loss_history) - 1]
        return out

    def summary(self) -> str:
        """One line for the stage table's notes."""
        first, last = self.loss_first, self.loss_last
        loss = f"loss {first:.4f} -> {last:.4f}" if first is not None and last is not None else "no steps"
        across = f" across {self.processes} processes" if self.processes > 1 else ""
        return (f"distilled {self.steps_run} steps{across} on {self.data['texts']} texts of {self.data['source']}, "
                f"{loss}, {self.seconds:.0f} s ({self.cpu_seconds:.0f} s CPU), {self.tokens_per_s:.0f} tok/s")
