"""`distill`: train a student to reproduce its teacher's outputs on transfer texts.

One process trains on one device (a GPU when present, else the CPU); launched as several
processes by accelerate (or torchrun), each trains on its own slice of every step's batch and
the gradients are averaged across them (parallel.py): multi-GPU and multi-node.

The loop: AdamW, linear warm-up then linear or cosine decay, gradient accumulation, bf16 or
fp16 autocast (precision "auto": bf16 on CPU and on GPUs that have it, else fp16), gradient
clipping at norm 1. The data order
is a pure function of (seed, position in the stream), so a run resumed from a checkpoint sees
exactly the batches the uninterrupted run would have; the checkpoint also holds the RNG state
(dropout), the optimizer moments and the evaluation history.

The teacher's targets are kept per text after its first pass (up to 4 GiB), so later epochs
cost the student's passes only. A slice of the transfer texts (eval_fraction) is held out:
never trained on, it scores the student every eval_every steps and drives early stopping.
`windows` > 1 also trains on the later max_length-token pieces of long train texts.

This module resolves the run (data, layer pairing, device) and hands it to its parts:
batches.py (tokenized texts, their order, windows, the teacher-target cache), pairing.py
(which layers match), optimization.py (AdamW, schedule, precision), loop.py (the steps,
evaluations and checkpoints), report.py (the record).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from edgegolf.compression.distill.batches import Batches, later_windows, split_eval
from edgegolf.compression.distill.config import DistillConfig
from edgegolf.compression.distill.loop import TrainingLoop
from edgegolf.compression.distill.optimization import device_and_precision, freeze_embeddings
from edgegolf.compression.distill.pairing import default_hidden_loss_where_it_applies, resolve_layer_map
from edgegolf.compression.distill.parallel import Processes
from edgegolf.compression.distill.report import DistillReport
from edgegolf.compression.distill.transfer import TransferData, exclude_test, load_transfer
from edgegolf.data import Split
from edgegolf.errors import DataError, RecipeError
from edgegolf.tasks import get_task
from edgegolf.tasks.base import TaskAdapter

# Every module of a run (batches, pairing, loop) logs under this one name, so that one setting
# shows or hides the run's progress lines.
log = logging.getLogger(__name__)


def _resolve_data(config: DistillConfig, texts, labels, data: TransferData | None, split: Split | None) -> TransferData:
    if data is not None:
        return exclude_test(data, split) if split is not None else data
    if texts is not None:
        texts = [str(t) for t in texts]
        if not texts or not any(t.strip() for t in texts):
            raise DataError("distill texts are empty; give at least one non-empty text")
        if labels is not None and len(labels) != len(texts):
            raise DataError(f"distill got {len(labels)} labels for {len(texts)} texts; give one label per text or none")
        given = TransferData(tuple(texts), tuple(map(str, labels)) if labels is not None else None, "texts (in memory)")
        return exclude_test(given, split) if split is not None else given
    return load_transfer(config.data, config.column, split=split)


@contextmanager
def _training_threads(device: torch.device, config: DistillConfig, report: DistillReport) -> Iterator[None]:
    """CPU training on `config.threads` torch threads (0: half the cores), the caller's count after."""
    if device.type != "cpu":
        yield
        return
    from edgegolf.measure.evaluate import torch_threads, work_threads

    report.threads = config.threads or work_threads()
    with torch_threads(report.threads):
        yield


def distill(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    tokenizer: Any,
    task: str | TaskAdapter,
    config: DistillConfig,
    *,
    texts: list[str] | None = None,
    labels: list[str] | None = None,
    data: TransferData | None = None,
    split: Split | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    teacher_tokenizer: Any | None = None,
) -> DistillReport:
    """Train `student` in place to match `teacher` on transfer texts; returns the report.

    The texts come from `data`, else `texts` (with optional class-name `labels`), else
    `config.data` read by `load_transfer` (with `split`, the evaluation split whose test half
    is never trained on). `tokenizer` feeds the student, and the teacher too unless
    `teacher_tokenizer` is given (a vocabulary-pruned student; then the token sequences differ
    and hidden-state matching is refused). With `checkpoint_dir`, a
    checkpoint is written every `config.checkpoint_every` steps and at the end; `resume=True`
    continues from the newest one there. The student is left in eval mode on the device it
    came from; the teacher is not changed.
    """
    adapter = get_task(task) if isinstance(task, str) else task
    config = default_hidden_loss_where_it_applies(config, teacher, student, tokenizer, teacher_tokenizer)
    transfer = _resolve_data(config, texts, labels, data, split)
    device, precision = device_and_precision(config)
    processes = Processes.current(device.type)
    device = processes.device or device  # several processes: each on its own GPU
    student_layers, teacher_layers = resolve_layer_map(teacher, student, config)
    adapter.check_distill_pair(teacher.config, student.config)
    train_idx, eval_idx = split_eval(len(transfer.texts), config)
    train_texts = len(train_idx)
    texts_all, text_of = list(transfer.texts), list(range(len(transfer.texts)))
    if config.windows > 1:  # later windows of the train texts only: held-out texts stay whole and unseen
        extra, owners = later_windows(tokenizer, [transfer.texts[i] for i in train_idx], config.max_length,
                                      config.windows, config.window_stride)
        train_idx = train_idx + list(range(len(texts_all), len(texts_all) + len(extra)))
        texts_all += extra
        text_of += [train_idx[o] for o in owners]
    names = adapter.input_names(student, tokenizer)
    batches = Batches(tokenizer, texts_all, names, config.max_length, config.seed)
    if teacher_tokenizer is not None and teacher_tokenizer is not tokenizer:
        if config.hidden_weight > 0:
            raise RecipeError(f"distill.hidden_weight = {config.hidden_weight} matches token by token, but teacher and "
                              "student have different tokenizers (vocabulary pruning); set hidden_weight = 0")
        batches.teacher = Batches(teacher_tokenizer, texts_all, adapter.input_names(teacher, teacher_tokenizer),
                                   config.max_length, config.seed)
    label_ids = None
    if transfer.labels is not None:
        label_ids = adapter.distill_label_ids(student.config, transfer.labels)
        label_ids = [label_ids[t] for t in text_of] if label_ids is not None else None  # a window has its text's label
    report = DistillReport(task=adapter.name, config=config, data=transfer.record(), train_texts=train_texts,
                           train_windows=len(train_idx), eval_texts=len(eval_idx), device=str(device),
                           precision=precision, layer_map=teacher_layers, processes=processes.count)
    log.info("distilling %s on %d texts (%d windows; %d texts held out) from %s, %d steps of %d x %d x %d "
             "process(es), %s %s", adapter.name, train_texts, len(train_idx), len(eval_idx), transfer.source,
             config.steps, config.batch_size, config.grad_accum, processes.count, device, precision)

    homes = (next(teacher.parameters()).device, next(student.parameters()).device)
    teacher_was_training = teacher.training
    teacher.to(device).eval()
    student.to(device)
    frozen = freeze_embeddings(student) if config.freeze_embeddings else []
    try:
        with _training_threads(device, config, report):
            TrainingLoop(adapter, teacher, student, batches, config, device, precision, student_layers,
                         teacher_layers, train_idx, eval_idx, label_ids, report, processes).run(checkpoint_dir, resume)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
        student.eval().to(homes[1])
        teacher.to(homes[0]).train(teacher_was_training)
    return report
