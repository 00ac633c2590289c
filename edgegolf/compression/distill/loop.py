"""The training loop of one distillation run: forward passes, steps, evaluations, early
stopping, checkpoints and progress. `distill` (train.py) builds and runs it."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from edgegolf.compression.distill.batches import CACHE_LIMIT_BYTES, Batches, TargetCache
from edgegolf.compression.distill.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from edgegolf.compression.distill.config import DistillConfig
from edgegolf.compression.distill.optimization import MAX_GRAD_NORM, build_optimizer, lr_factor
from edgegolf.compression.distill.pairing import auto_layer_map, num_layers
from edgegolf.compression.distill.parallel import Processes
from edgegolf.compression.distill.report import DistillReport
from edgegolf.errors import DataError, RecipeError

log = logging.getLogger("edgegolf.compression.distill.train")  # the run's one logger (see train.py)


def rank_key(key: str, rank: int) -> str:
    """A checkpoint's name for process `rank`'s generator state (the first process's has no suffix)."""
    return f"{key}.{rank}" if rank else key


class ProgressBar:
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


class PhaseClock:
    """Process CPU seconds spent in each named part of the run (the outermost part only: the
    teacher's passes inside an evaluation count as evaluation), so a run's record says where its
    CPU time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.depth = 0

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        self.depth += 1
        start = time.process_time()
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.process_time() - start


class TrainingLoop:
    def __init__(self, adapter, teacher, student, batches: Batches, config: DistillConfig, device, precision,
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
        self.cache = TargetCache(CACHE_LIMIT_BYTES, sequences, adapter.distill_sequence_dims) \
            if config.teacher_cache else None
        self.eval_cache = TargetCache(CACHE_LIMIT_BYTES, sequences, adapter.distill_sequence_dims)
        self.optimizer = build_optimizer(student, config)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.best_loss: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.clock = PhaseClock()

    # --- forward passes ---------------------------------------------------------------------
    def autocast(self):
        if self.dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    def forward(self, model, batch, layers):
        return self.adapter.distill_view(model(**batch, output_hidden_states=bool(layers)),
                                         batch["attention_mask"], self.config, layers)

    def teacher_view(self, indices: list[int], batch, cache: TargetCache | None) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]
        cached = cache.get(indices, mask.shape[1]) if cache is not None else None
        if cached is not None:
            return cached
        with self.clock("teacher"), torch.no_grad(), self.autocast():  # no_grad: MSE saves the target for backward
            view = self.forward(self.teacher, batch, self.teacher_layers)
            view = {k: v.float() for k, v in view.items()}
            if cache is not None:
                cache.put(indices, view, mask.sum(1).tolist())
        if cache is self.cache:
            self.report.teacher_targets += len(indices)
        return view

    def labels_for(self, indices: list[int]) -> torch.Tensor | None:
        if self.label_ids is None:
            return None
        return torch.tensor([self.label_ids[i] for i in indices], device=self.device)

    def loss_on(self, indices: list[int], cache, model=None) -> tuple[torch.Tensor, dict[str, float], int]:
        with self.clock("batching"):
            batch = self.batches.collate(indices, self.device)
            teacher_batch = self.batches.teacher.collate(indices, self.device) if self.batches.teacher else batch
        target = self.teacher_view(indices, teacher_batch, cache)
        with self.clock("student forward and loss"), self.autocast():
            view = self.forward(model or self.student, batch, self.student_layers)
            loss, parts = self.adapter.distill_loss(view, target, batch["attention_mask"], self.config,
                                                    self.labels_for(indices))
        return loss, parts, int(batch["attention_mask"].sum())

    # --- evaluation ---------------------------------------------------------------------
    def evaluate(self, step: int) -> dict[str, float]:
        """The held-out loss; with several processes each scores its share and the sums are
        combined, so every process gets the same record (and stops early at the same step)."""
        with self.clock("evaluation"):
            return self._evaluate(step)

    def _evaluate(self, step: int) -> dict[str, float]:
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
        record = {"step": step, **{k: v / len(self.eval_idx) for k, v in zip(keys, sums, strict=True)}}
        self.report.eval_history.append(record)
        log.info("distill eval at step %d: %s", step,
                 ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "step"))
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
        return {rank_key(key, rank): value for rank, states in enumerate(self.processes.gather(mine))
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
        differ = [k for k in mine if k not in ("checkpoint_every", "log_every", "threads") and state["config"].get(k) != mine[k]]
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
        torch.set_rng_state(rng[rank_key("torch", rank)])
        if rank_key("cuda", rank) in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng[rank_key("cuda", rank)], self.device)
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
        total, tokens, parts_sum = 0.0, 0, dict[str, float]()
        for k in range(config.grad_accum):
            indices = self.batches.stream(self.train_idx, position + (k * count + rank) * micro, micro)
            with self.processes.no_sync(self.trained, last_micro_step=k == config.grad_accum - 1):
                loss, parts, n_tokens = self.loss_on(indices, self.cache, self.trained)
                loss = loss / config.grad_accum
                with self.clock("backward"):
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += float(loss.detach())
            tokens += n_tokens
            for key, value in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + value / config.grad_accum
        if count > 1:  # report the step's loss over the whole batch, not this process's share
            summed_total, summed_tokens, *values = self.processes.sum([total, tokens, *parts_sum.values()])
            total, tokens = summed_total / count, int(summed_tokens)
            parts_sum = {key: value / count for key, value in zip(parts_sum, values, strict=True)}
        with self.clock("optimizer"):
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
                                            auto_layer_map(num_layers(self.student), num_layers(self.teacher)))
        whole = self.train_idx[: self.report.train_texts]  # the train texts themselves come first, windows after
        # spread over the data
        texts = whole[:: max(1, len(whole) // self.config.refit_texts)][: self.config.refit_texts]
        self.report.refit = refit_pruned_layers(self.teacher, self.student, self.batches.collate(texts, self.device),
                                                layer_map)
        self.student.train(self.config.dropout)

    def train_steps(self, step: int, checkpoint_dir: Path | None, every_eval: int, every_log: int,
                    bar: ProgressBar) -> int:
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
            with self.clock("refit"):
                self.refit()
        if every_eval and start_step == 0:
            self.after_eval(self.evaluate(0))  # the starting point, so the report shows what was won back
        self.student.train(config.dropout)  # dropout off: eval mode, gradients still flow
        step = start_step
        bar = ProgressBar(config.steps, start_step)
        self.trained = self.processes.wrap(self.student)  # after refit and resume: every process starts equal
        try:
            step = self.train_steps(step, checkpoint_dir, every_eval, every_log, bar)
        finally:
            bar.close()
            self.trained = self.student  # drops the DDP wrapper and its gradient hooks
        report.steps_run = step
        report.seconds = time.perf_counter() - wall
        report.cpu_seconds = time.process_time() - cpu
        report.cpu_seconds_by_part = {part: round(seconds, 2) for part, seconds in self.clock.seconds.items()}
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
        log.info("distill CPU seconds by part: %s; teacher targets computed for %d windows (the rest from its cache)",
                 ", ".join(f"{part} {seconds:.0f}" for part, seconds in report.cpu_seconds_by_part.items()),
                 report.teacher_targets)
