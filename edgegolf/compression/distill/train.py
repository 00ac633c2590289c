"""`distill`: train a student to reproduce its teacher's outputs on transfer texts.

One process trains on one device (a GPU when present, else the CPU); launched as several
processes by accelerate (or torchrun), each trains on its own slice of every step's batch and
the gradients are averaged across them (parallel.py): multi-GPU and multi-node.

The loop: AdamW, linear warm-up then linear or cosine decay, gradient accumulation, bf16 or
fp16 autocast on GPU (fp32 on CPU unless asked), gradient clipping at norm 1. The data order
is a pure function of (seed, position in the stream), so a run resumed from a checkpoint sees
exactly the batches the uninterrupted run would have; the checkpoint also holds the RNG state
(dropout), the optimizer moments and the evaluation history.

The teacher's targets are kept per text after its first pass (up to 4 GiB), so later epochs
cost the student's passes only. A slice of the transfer texts (eval_fraction) is held out:
never trained on, it scores the student every eval_every steps and drives early stopping.
`windows` > 1 also trains on the later max_length-token pieces of long train texts.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edgegolf.compression.distill.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from edgegolf.compression.distill.config import DistillConfig
from edgegolf.compression.distill.parallel import Processes
from edgegolf.compression.distill.transfer import (
    TransferData,
    exclude_test,
    load_transfer,
)
from edgegolf.data import Split
from edgegolf.errors import DataError, RecipeError, SourceError
from edgegolf.tasks import get_task
from edgegolf.tasks.base import TaskAdapter

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0  # the usual BERT fine-tuning clip; keeps early distillation steps from blowing up
CACHE_LIMIT_BYTES = 4 << 30  # teacher targets kept between epochs; beyond this the teacher reruns


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
    processes: int = 1  # data-parallel processes; a step sees batch_size x grad_accum x processes texts
    steps_run: int = 0  # optimizer steps done, counting those before a resume
    seconds: float = 0.0  # wall time of this call
    cpu_seconds: float = 0.0  # process CPU time of this call (all threads)
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
        return (f"distilled {self.steps_run} steps{across} on {self.data['texts']} texts of {self.data['source']}, {loss}, "
                f"{self.seconds:.0f} s ({self.cpu_seconds:.0f} s CPU), {self.tokens_per_s:.0f} tok/s")


def auto_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Evenly spaced teacher layers ending at the last one: 3 of 6 -> [1, 3, 5] (DistilBERT-style)."""
    return [max(0, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)]


def lr_factor(step: int, config: DistillConfig) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based)."""
    warm = round(config.warmup * config.steps)
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, config.steps - warm)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def _num_layers(model) -> int:
    count = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    if not isinstance(count, int):
        raise SourceError(f"{type(model).__name__} config names no layer count; hidden-state matching needs one "
                          "(set distill.hidden_weight = 0)")
    return count


def _default_hidden_loss_where_it_applies(config: DistillConfig, teacher, student, tokenizer,
                                          teacher_tokenizer) -> DistillConfig:
    """The default hidden-state loss needs equal widths, one tokenizer and layer counts; where
    a pair lacks one, the default falls to 0 (logged). A weight other than the default that
    cannot apply is refused later, with the reason."""
    if config.hidden_weight != DistillConfig.hidden_weight:
        return config
    counts = [getattr(m.config, "num_hidden_layers", None) or getattr(m.config, "n_layer", None)
              for m in (teacher, student)]
    reason = ("the student's width differs from the teacher's"
              if getattr(student.config, "hidden_size", None) != getattr(teacher.config, "hidden_size", None) else
              "teacher and student tokenize differently" if teacher_tokenizer is not None and teacher_tokenizer is not tokenizer else
              "a config names no layer count" if not all(isinstance(c, int) for c in counts) else None)
    if reason is None:
        return config
    log.info("distill: no hidden-state loss (%s); the outputs alone teach", reason)
    return replace(config, hidden_weight=0.0)


def _resolve_layer_map(teacher, student, config: DistillConfig) -> tuple[list[int] | None, list[int] | None]:
    """(student layers, teacher layers) whose outputs are matched, or (None, None)."""
    if config.hidden_weight <= 0:
        return None, None
    s_layers, t_layers = _num_layers(student), _num_layers(teacher)
    s_width = getattr(student.config, "hidden_size", None)
    t_width = getattr(teacher.config, "hidden_size", None)
    if s_width != t_width:
        raise RecipeError(f"distill.hidden_weight = {config.hidden_weight} needs equal widths, but the student's hidden "
                          f"size is {s_width} and the teacher's {t_width}; set hidden_weight = 0")
    mapping = auto_layer_map(s_layers, t_layers) if config.layer_map == "auto" else list(config.layer_map)
    if len(mapping) != s_layers or any(t >= t_layers for t in mapping):
        raise RecipeError(f"distill.layer_map = {mapping} is not accepted; give {s_layers} teacher layers "
                          f"(one per student layer), each 0 to {t_layers - 1}")
    return list(range(s_layers)), mapping


def _device_and_precision(config: DistillConfig) -> tuple[torch.device, str]:
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise RecipeError("distill.device = 'cuda' but no CUDA device is available; choose one of: auto, cpu")
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and cuda) else "cpu")
    precision = config.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            # measured (benchmarks/distill_minilm.py): bf16 autocast trains a MiniLM student faster
            # than fp32 on a 2-core AVX2 CPU, to the same fidelity
            precision = "bf16"
    return device, precision


class _Batches:
    """Tokenized texts and the deterministic order they are visited in."""

    def __init__(self, tokenizer, texts: list[str], names: tuple[str, ...], max_length: int, seed: int):
        if tokenizer.pad_token is None:
            raise SourceError("the tokenizer has no padding token; distillation batches texts and needs one")
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        self.items = [{n: encoded[n][i] for n in names if n in encoded} for i in range(len(texts))]
        self.tokenizer = tokenizer
        self.seed = seed
        self.teacher: _Batches | None = None  # the teacher's own tokenization, when its tokenizer differs
        self._orders: dict[int, list[int]] = {}

    def order(self, epoch: int, n: int) -> list[int]:
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(n, generator=generator).tolist()}  # one epoch kept
        return self._orders[epoch]

    def stream(self, pool: list[int], position: int, size: int) -> list[int]:
        """Items of `pool` at stream positions [position, position + size): each epoch a fresh
        seeded permutation, so a position alone fixes the batch (what makes resuming exact)."""
        n = len(pool)
        return [pool[self.order(p // n, n)[p % n]] for p in range(position, position + size)]

    def collate(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([self.items[i] for i in indices], padding=True, return_tensors="pt")
        return {k: v.to(device) for k, v in batch.items()}


class _TargetCache:
    """Teacher targets per text, kept so that later epochs skip the teacher's forward pass.

    Sequence-shaped targets (the task's distill_sequence_dims) are stored cut to the text's real length
    and padded back with zeros for a longer batch; the loss masks padding out. With left
    padding (`sequences` False) only per-text vectors are kept.
    """

    def __init__(self, limit_bytes: int, sequences: bool, sequence_dims: dict[str, int]):
        self.items: dict[int, dict[str, torch.Tensor]] = {}
        self.limit, self.sequences, self.bytes, self.full = limit_bytes, sequences, 0, False
        self.sequence_dims = sequence_dims

    def get(self, indices: list[int], length: int) -> dict[str, torch.Tensor] | None:
        if not all(i in self.items for i in indices):
            return None
        out = {}
        for key in self.items[indices[0]]:
            rows = [self.items[i][key] for i in indices]
            dim = self.sequence_dims.get(key)
            if dim is not None:
                rows = [_fit(row, dim - 1, length) for row in rows]
            out[key] = torch.stack(rows)
        return out

    def put(self, indices: list[int], view: dict[str, torch.Tensor], lengths: list[int]) -> None:
        if self.full or (not self.sequences and any(k in self.sequence_dims for k in view)):
            return
        for row, (index, length) in enumerate(zip(indices, lengths)):
            if self.bytes >= self.limit:
                log.info("teacher cache full at %d MB: the teacher reruns for the other texts", self.bytes >> 20)
                self.full = True
                return
            item = {}
            for key, value in view.items():
                dim = self.sequence_dims.get(key)
                item[key] = (value[row].narrow(dim - 1, 0, length) if dim is not None else value[row]).clone()
                self.bytes += item[key].numel() * item[key].element_size()
            self.items[index] = item


def _rank_key(key: str, rank: int) -> str:
    """A checkpoint's name for process `rank`'s generator state (the first process's has no suffix)."""
    return f"{key}.{rank}" if rank else key


def _fit(row: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """`row` cut or zero-padded to `length` along `dim`."""
    if row.shape[dim] >= length:
        return row.narrow(dim, 0, length)
    shape = list(row.shape)
    shape[dim] = length
    out = row.new_zeros(shape)
    out.narrow(dim, 0, row.shape[dim]).copy_(row)
    return out


def later_windows(tokenizer, texts: list[str], max_length: int, windows: int,
                  stride: int = 0) -> tuple[list[str], list[int]]:
    """Pieces 2..`windows` of each text, each about one `max_length`-token window, cut at token
    boundaries; and the index (into `texts`) each piece came from. The first window is the text
    itself, truncated as at deployment. A `stride` shorter than the window starts a piece every
    `stride` tokens over the same span (overlapping windows: more distinct training inputs from
    the same texts). Needs a fast tokenizer (character offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise RecipeError(f"distill.windows = {windows} needs a fast tokenizer (character offsets); "
                          f"{type(tokenizer).__name__} is not one: set windows = 1")
    body = max(1, max_length - tokenizer.num_special_tokens_to_add())
    step = stride if 0 < stride else body
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    pieces, owners = [], []
    for index, (text, offsets) in enumerate(zip(texts, encoded["offset_mapping"])):
        for start in range(step, min(len(offsets), windows * body), step):
            end = min(start + body, len(offsets))
            piece = text[offsets[start][0]:offsets[end - 1][1]].strip()
            if piece:
                pieces.append(piece)
                owners.append(index)
    return pieces, owners


def _freeze_embeddings(student: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Stop training the token embeddings (the student's largest tensor): rows of tokens the
    transfer data never shows stay equal to the teacher's, which the layers were trained with."""
    embeddings = student.get_input_embeddings()
    frozen = [p for p in embeddings.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return frozen


def _split_eval(n: int, config: DistillConfig) -> tuple[list[int], list[int]]:
    if config.evaluations_every == 0 and config.patience is None:
        return list(range(n)), []
    generator = torch.Generator().manual_seed(config.seed + 17)
    shuffled = torch.randperm(n, generator=generator).tolist()
    held = max(1, round(n * config.eval_fraction))
    if n - held < 1:
        raise DataError(f"distill data has {n} text(s): too few to hold out {config.eval_fraction:.0%} for evaluation "
                        "and train on the rest; give more texts, or set eval_every = 0")
    return sorted(shuffled[held:]), sorted(shuffled[:held])


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
    config = _default_hidden_loss_where_it_applies(config, teacher, student, tokenizer, teacher_tokenizer)
    transfer = _resolve_data(config, texts, labels, data, split)
    device, precision = _device_and_precision(config)
    processes = Processes.current(device.type)
    device = processes.device or device  # several processes: each on its own GPU
    student_layers, teacher_layers = _resolve_layer_map(teacher, student, config)
    adapter.check_distill_pair(teacher.config, student.config)
    train_idx, eval_idx = _split_eval(len(transfer.texts), config)
    train_texts = len(train_idx)
    texts_all, text_of = list(transfer.texts), list(range(len(transfer.texts)))
    if config.windows > 1:  # later windows of the train texts only: held-out texts stay whole and unseen
        extra, owners = later_windows(tokenizer, [transfer.texts[i] for i in train_idx], config.max_length,
                                      config.windows, config.window_stride)
        train_idx = train_idx + list(range(len(texts_all), len(texts_all) + len(extra)))
        texts_all += extra
        text_of += [train_idx[o] for o in owners]
    names = adapter.input_names(student, tokenizer)
    batches = _Batches(tokenizer, texts_all, names, config.max_length, config.seed)
    if teacher_tokenizer is not None and teacher_tokenizer is not tokenizer:
        if config.hidden_weight > 0:
            raise RecipeError(f"distill.hidden_weight = {config.hidden_weight} matches token by token, but teacher and "
                              "student have different tokenizers (vocabulary pruning); set hidden_weight = 0")
        batches.teacher = _Batches(teacher_tokenizer, texts_all, adapter.input_names(teacher, teacher_tokenizer),
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
    frozen = _freeze_embeddings(student) if config.freeze_embeddings else []
    try:
        _Loop(adapter, teacher, student, batches, config, device, precision, student_layers, teacher_layers,
              train_idx, eval_idx, label_ids, report, processes).run(checkpoint_dir, resume)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
        student.eval().to(homes[1])
        teacher.to(homes[0]).train(teacher_was_training)
    return report


class _Bar:
    """A live bar with the loss and tokens/s on a terminal (as edgegolf.progress.track does for
    other long work); elsewhere nothing, since the loop's log lines already say the same."""

    def __init__(self, total: int, done: int):
        self.progress = None
        if sys.stderr.isatty() and log.isEnabledFor(logging.INFO):
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("distill"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
            self.task = self.progress.add_task("distill", total=total, completed=done, info="")
            self.progress.start()

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=f"loss {loss:.4f} {tokens_per_s:,.0f} tok/s")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class _Loop:
    def __init__(self, adapter, teacher, student, batches: _Batches, config: DistillConfig, device, precision,
                 student_layers, teacher_layers, train_idx, eval_idx, label_ids, report: DistillReport,
                 processes: Processes):
        self.adapter, self.teacher, self.student, self.batches = adapter, teacher, student, batches
        self.processes = processes
        self.trained = student  # what training steps run through: the student, or its DDP wrapper (run())
        self.config, self.device, self.precision = config, device, precision
        self.student_layers, self.teacher_layers = student_layers, teacher_layers
        self.train_idx, self.eval_idx, self.label_ids, self.report = train_idx, eval_idx, label_ids, report
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.hidden = config.hidden_weight > 0
        # per-text teacher targets survive between epochs unless they are whole hidden-state sequences
        sequences = batches.tokenizer.padding_side == "right"  # cached sequences are cut at the real length
        self.cache = _TargetCache(CACHE_LIMIT_BYTES, sequences, adapter.distill_sequence_dims) \
            if config.teacher_cache else None
        self.eval_cache = _TargetCache(CACHE_LIMIT_BYTES, sequences, adapter.distill_sequence_dims)
        decay = [p for n, p in student.named_parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for n, p in student.named_parameters() if p.requires_grad and p.ndim < 2]
        # biases and LayerNorm weights are not decayed (the BERT recipe)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.best_loss: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    # --- forward passes ---------------------------------------------------------------------
    def autocast(self):
        if self.dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    def forward(self, model, batch, layers):
        return self.adapter.distill_view(model(**batch, output_hidden_states=bool(layers)),
                                         batch["attention_mask"], self.config, layers)

    def teacher_view(self, indices: list[int], batch, cache: _TargetCache | None) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]
        cached = cache.get(indices, mask.shape[1]) if cache is not None else None
        if cached is not None:
            return cached
        with torch.no_grad(), self.autocast():  # no_grad, not inference_mode: MSE saves the target for backward
            view = self.forward(self.teacher, batch, self.teacher_layers)
        view = {k: v.float() for k, v in view.items()}
        if cache is not None:
            cache.put(indices, view, mask.sum(1).tolist())
        return view

    def labels_for(self, indices: list[int]) -> torch.Tensor | None:
        if self.label_ids is None:
            return None
        return torch.tensor([self.label_ids[i] for i in indices], device=self.device)

    def loss_on(self, indices: list[int], cache, model=None) -> tuple[torch.Tensor, dict[str, float], int]:
        batch = self.batches.collate(indices, self.device)
        teacher_batch = self.batches.teacher.collate(indices, self.device) if self.batches.teacher else batch
        target = self.teacher_view(indices, teacher_batch, cache)
        with self.autocast():
            view = self.forward(model or self.student, batch, self.student_layers)
        loss, parts = self.adapter.distill_loss(view, target, batch["attention_mask"], self.config,
                                                self.labels_for(indices))
        return loss, parts, int(batch["attention_mask"].sum())

    # --- evaluation ---------------------------------------------------------------------
    def evaluate(self, step: int) -> dict[str, float]:
        """The held-out loss; with several processes each scores its share and the sums are
        combined, so every process gets the same record (and stops early at the same step)."""
        self.student.eval()
        totals: dict[str, float] = {}
        mine = self.eval_idx[self.processes.rank::self.processes.count]
        with torch.no_grad():
            for start in range(0, len(mine), self.config.batch_size):
                indices = mine[start:start + self.config.batch_size]
                loss, parts, _ = self.loss_on(indices, self.eval_cache)
                for key, value in {"loss": float(loss), **parts}.items():
                    totals[key] = totals.get(key, 0.0) + value * len(indices)
        self.student.train(self.config.dropout)
        keys = list(dict.fromkeys(k for names in self.processes.gather(list(totals)) for k in names))
        sums = self.processes.sum([totals.get(k, 0.0) for k in keys])
        record = {"step": step, **{k: v / len(self.eval_idx) for k, v in zip(keys, sums)}}
        self.report.eval_history.append(record)
        log.info("distill eval at step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "step"))
        return record

    def after_eval(self, record: dict[str, float]) -> bool:
        """Track the best evaluation; True when patience has run out."""
        if self.best_loss is None or record["loss"] < self.best_loss - 1e-7:
            self.best_loss, self.best_step, self.bad_evals = record["loss"], int(record["step"]), 0
            if self.config.patience is not None:
                self.best_state = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
            return False
        self.bad_evals += 1
        return self.config.patience is not None and self.bad_evals >= self.config.patience

    # --- checkpoints --------------------------------------------------------------------
    def state(self, step: int) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "data_sha256": self.report.data["sha256"],
                "loss_history": [list(p) for p in self.report.loss_history], "eval_history": self.report.eval_history,
                "loss_first": self.report.loss_first, "best_loss": self.best_loss, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "stopped_early": self.report.stopped_early,
                "processes": self.processes.count}

    def rng(self) -> dict[str, torch.Tensor]:
        """Every process's generator states (dropout): "torch" for the first, "torch.N" for process N."""
        mine = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(self.device)
        return {_rank_key(key, rank): value for rank, states in enumerate(self.processes.gather(mine))
                for key, value in states.items()}

    def save(self, folder: Path, step: int) -> None:
        """Every process takes part (the generator states are gathered); the first one writes."""
        rng = self.rng()
        if self.processes.main:
            save_checkpoint(folder, step, self.student, self.optimizer, self.state(step), rng, self.best_state,
                            self.scaler.state_dict() if self.scaler else None)
            log.info("distill checkpoint at step %d in %s", step, folder)
        self.processes.barrier()  # no process resumes from, or deletes, a half-written checkpoint

    def restore(self, folder: Path) -> int:
        path = latest_checkpoint(folder)
        if path is None:
            log.info("no checkpoint in %s: starting from step 0", folder)
            return 0
        meta, rng, best = load_checkpoint(path, self.student, self.optimizer, self.device)
        state = meta["state"]
        mine = self.config.to_dict()
        differ = [k for k in mine if k not in ("checkpoint_every", "log_every") and state["config"].get(k) != mine[k]]
        if differ:
            raise RecipeError(f"checkpoint {str(path)!r} was written with distill.{differ[0]} = "
                              f"{state['config'].get(differ[0])!r}, not {mine[differ[0]]!r}; resume with the same "
                              "settings or use another checkpoint folder")
        if state["data_sha256"] != self.report.data["sha256"]:
            raise DataError(f"checkpoint {str(path)!r} was trained on other transfer texts (sha256 "
                            f"{state['data_sha256'][:12]}..., now {self.report.data['sha256'][:12]}...); resume with "
                            "the same data or use another checkpoint folder")
        written_by = state.get("processes", 1)
        if written_by != self.processes.count:
            raise RecipeError(f"checkpoint {str(path)!r} was written by {written_by} training process(es), and this "
                              f"run has {self.processes.count}; resume with {written_by} (accelerate launch "
                              f"--num_processes {written_by}) or use another checkpoint folder")
        rank = self.processes.rank
        torch.set_rng_state(rng[_rank_key("torch", rank)])
        if _rank_key("cuda", rank) in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng[_rank_key("cuda", rank)], self.device)
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.report.loss_history = [tuple(p) for p in state["loss_history"]]
        self.report.eval_history = state["eval_history"]
        self.report.loss_first = state["loss_first"]
        self.best_loss, self.best_step, self.bad_evals = state["best_loss"], state["best_step"], state["bad_evals"]
        self.best_state = {k: v.to(self.device) for k, v in best.items()} if best is not None else None
        self.report.stopped_early = state["stopped_early"]
        self.report.resumed_from_step = meta["step"]
        log.info("resumed distillation from %s (step %d)", path, meta["step"])
        return int(meta["step"])

    # --- the loop -----------------------------------------------------------------------
    def step(self, step: int) -> tuple[float, dict[str, float], int]:
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(step, config)
        micro, count, rank = config.batch_size, self.processes.count, self.processes.rank
        position = step * micro * config.grad_accum * count  # the stream is shared: process r takes every r-th slice
        total, tokens, parts_sum = 0.0, 0, {}
        for k in range(config.grad_accum):
            indices = self.batches.stream(self.train_idx, position + (k * count + rank) * micro, micro)
            with self.processes.no_sync(self.trained, last_micro_step=k == config.grad_accum - 1):
                loss, parts, n_tokens = self.loss_on(indices, self.cache, self.trained)
                loss = loss / config.grad_accum
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += float(loss.detach())
            tokens += n_tokens
            for key, value in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + value / config.grad_accum
        if count > 1:  # report the step's loss over the whole batch, not this process's share
            total, tokens, *values = self.processes.sum([total, tokens, *parts_sum.values()])
            total, tokens = total / count, int(tokens)
            parts_sum = {key: value / count for key, value in zip(parts_sum, values)}
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), MAX_GRAD_NORM)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, parts_sum, tokens

    def refit(self) -> None:
        """Least-squares repair of the student's pruned layers on the first `refit_texts` train texts."""
        from edgegolf.compression.distill.refit import refit_pruned_layers

        if self.batches.teacher is not None:
            self.report.refit = {"refitted": False, "reason": "teacher and student tokenize differently"}
            return
        layer_map = self.teacher_layers or (list(self.config.layer_map) if self.config.layer_map != "auto" else
                                            auto_layer_map(_num_layers(self.student), _num_layers(self.teacher)))
        whole = self.train_idx[: self.report.train_texts]  # the train texts themselves come first, windows after
        texts = whole[:: max(1, len(whole) // self.config.refit_texts)][: self.config.refit_texts]  # spread over the data
        self.report.refit = refit_pruned_layers(self.teacher, self.student, self.batches.collate(texts, self.device),
                                                layer_map)
        self.student.train(self.config.dropout)

    def train_steps(self, step: int, checkpoint_dir: Path | None, every_eval: int, every_log: int, bar: _Bar) -> int:
        """Optimizer steps from `step` to the end (or an early stop), with progress, evaluations and
        checkpoints; returns the step reached."""
        config, report = self.config, self.report
        window_tokens, window_start = 0, time.perf_counter()
        while step < config.steps and not report.stopped_early:
            loss, parts, tokens = self.step(step)
            step += 1
            report.tokens += tokens
            window_tokens += tokens
            report.loss_history.append((step, loss))
            if report.loss_first is None:
                report.loss_first = loss
            now = time.perf_counter()
            bar.update(step, loss, window_tokens / max(now - window_start, 1e-9))
            if step % every_log == 0 or step == config.steps:
                log.info("distill step %d/%d loss %.4f (%s) lr %.2e %.0f tok/s", step, config.steps, loss,
                         ", ".join(f"{k} {v:.4f}" for k, v in parts.items()), self.optimizer.param_groups[0]["lr"],
                         window_tokens / max(now - window_start, 1e-9))
                window_tokens, window_start = 0, now
            evaluate = every_eval and (step % every_eval == 0 or step == config.steps)
            if evaluate and self.after_eval(self.evaluate(step)):
                report.stopped_early = True
                log.info("distill stopped early at step %d: no better evaluation in %d tries (best at step %s)",
                         step, config.patience, self.best_step)
            if checkpoint_dir is not None and config.checkpoint_every and (
                    step % config.checkpoint_every == 0 or step == config.steps or report.stopped_early):
                self.save(Path(checkpoint_dir), step)
        return step

    def run(self, checkpoint_dir: Path | None, resume: bool) -> None:
        config, report = self.config, self.report
        seed = config.seed + self.processes.rank  # dropout draws from the global generator; its own per process
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)
        start_step = self.restore(Path(checkpoint_dir)) if resume and checkpoint_dir is not None else 0
        if resume and checkpoint_dir is None:
            raise RecipeError("distill resume=True needs a checkpoint_dir to resume from; pass one")
        every_eval = config.evaluations_every if self.eval_idx else 0
        every_log = config.log_every or max(1, config.steps // 20)
        wall, cpu = time.perf_counter(), time.process_time()
        if config.refit and start_step == 0:  # on resume the checkpoint holds the refitted (and trained) weights
            self.refit()
        if every_eval and start_step == 0:
            self.after_eval(self.evaluate(0))  # the starting point, so the report shows what was won back
        self.student.train(config.dropout)  # dropout off: eval mode, gradients still flow
        step = start_step
        bar = _Bar(config.steps, start_step)
        self.trained = self.processes.wrap(self.student)  # after refit and resume: every process starts equal
        try:
            step = self.train_steps(step, checkpoint_dir, every_eval, every_log, bar)
        finally:
            bar.close()
            self.trained = self.student  # drops the DDP wrapper and its gradient hooks
        report.steps_run = step
        report.seconds = time.perf_counter() - wall
        report.cpu_seconds = time.process_time() - cpu
        report.tokens_per_s = report.tokens / max(report.seconds, 1e-9)
        report.loss_last = report.loss_history[-1][1] if report.loss_history else None
        report.best_eval_loss = self.best_loss
        if self.best_state is not None and self.best_step != step:
            self.student.load_state_dict(self.best_state)
            report.restored_best_from_step = self.best_step
            log.info("restored the student of step %d, the best evaluation", self.best_step)
        log.info("distilled %d steps in %.0f s (%.0f s CPU), %.0f tok/s, loss %.4f -> %.4f", step, report.seconds,
                 report.cpu_seconds, report.tokens_per_s, report.loss_first or float("nan"),
                 report.loss_last or float("nan"))
