"""Refit: least-squares repair of a pruned post-LayerNorm student before gradient steps.

Pruning heads and FFN neurons leaves each layer's output projections (BERT: attention output
dense, FFN output dense) summing fewer inputs than they were trained for. For each student
layer in turn, on a few calibration texts, this solves for the weights and bias of those two
projections that make the sum entering each LayerNorm (projection + residual) closest, in
least squares, to the sum entering the same LayerNorm of the teacher layer it was cut from,
given the student's own inputs (so the repair also absorbs the error of earlier layers and of
dropped layers). Closed form, a few forward passes: cheap beside training, and training then
starts nearer the teacher (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for
Transformers", rescale pruned layers by least squares in the same spirit).

Where those projections and LayerNorms are comes from the pruning family
(`Family.refit_points`, edgegolf/compression/prune/arch.py): today post-LayerNorm BERT-style
layers (BERT, MiniLM, RoBERTa). Other models are left as they are, and the report says so.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

RIDGE = 1e-4  # relative to the mean diagonal of X^T X: keeps the solve stable on few tokens
REFIT_BATCH = 32  # texts per forward pass


def _refit_points(model) -> list[list[Any]] | None:
    """Each layer's refit points (its family's), or None where the refit does not apply."""
    from edgegolf.compression.prune.arch import supported_types

    family = supported_types().get(getattr(model.config, "model_type", None))
    if family is None:
        return None
    points = [family.refit_points(block) for block in family.layer_list(model.base_model)]
    return points if all(p for p in points) else None


class _AllCaptured(Exception):
    """Raised by the last capture hook: the rest of the forward pass is not needed."""


def _capture_all(modules: list, run) -> list[tuple[torch.Tensor, ...]]:
    """The positional inputs each of `modules` gets during one `run()`, which stops as soon as
    all are seen (capturing layer 0's inputs costs a third of a 3-layer forward pass, not all of it)."""
    seen: dict[int, tuple] = {}
    handles = []
    for number, module in enumerate(modules):
        def hook(_, args, kwargs, number=number):
            seen.setdefault(number, tuple(args) + tuple(kwargs.values()))
            if len(seen) == len(modules):
                raise _AllCaptured
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        run()
    except _AllCaptured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return [seen[number] for number in range(len(modules))]


def _capture_inputs(module, run) -> tuple[torch.Tensor, ...]:
    return _capture_all([module], run)[0]


class _Normal:
    """The normal equations of one least-squares fit, summed over batches of tokens: a refit on
    many texts never holds more than one batch's activations (512 texts x 128 tokens at once
    would hold gigabytes of a large model's)."""

    def __init__(self):
        self.gram: torch.Tensor | None = None  # [x 1]^T [x 1]
        self.cross: torch.Tensor | None = None  # [x 1]^T y
        self.yy = 0.0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        xa = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device)], dim=1)
        gram, cross = xa.T @ xa, xa.T @ y.double()
        self.gram = gram if self.gram is None else self.gram + gram
        self.cross = cross if self.cross is None else self.cross + cross
        self.yy += float(y.double().pow(2).sum())

    def error(self, solution: torch.Tensor) -> float:
        """||[x 1] solution - y||^2 / ||y||^2, from the sums alone."""
        assert self.gram is not None and self.cross is not None
        sq = (solution * (self.gram @ solution)).sum() - 2 * (solution * self.cross).sum() + self.yy
        return float(sq) / self.yy

    def solve(self) -> torch.Tensor:
        """[in + 1, out]: the weight (transposed) above the bias minimising the error (+ a small ridge)."""
        assert self.gram is not None and self.cross is not None
        ridge = RIDGE * self.gram.diagonal().mean()
        eye = torch.eye(self.gram.shape[0], dtype=torch.float64, device=self.gram.device)
        return torch.linalg.solve(self.gram + ridge * eye, self.cross)


def _as_solution(linear: torch.nn.Linear) -> torch.Tensor:
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features, device=linear.weight.device)
    return torch.cat([linear.weight.T, bias[None, :]]).double()


def _fit_projection(linear: torch.nn.Linear, normal: _Normal) -> tuple[float, float]:
    """Refit `linear` to the fit `normal` sums up; returns the relative error before and after."""
    with torch.no_grad():
        before = normal.error(_as_solution(linear))
        solution = normal.solve()
        linear.weight.copy_(solution[:-1].T.float())
        if linear.bias is not None:
            linear.bias.copy_(solution[-1].float())
        after = normal.error(_as_solution(linear))
    return before, after


def _batches(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    rows = batch["attention_mask"].shape[0]
    return [{name: value[start:start + size] for name, value in batch.items()} for start in range(0, rows, size)]


def refit_pruned_layers(teacher, student, batch: dict[str, torch.Tensor], layer_map: list[int], *,
                        batch_size: int = REFIT_BATCH) -> dict[str, Any]:
    """Refit `student` in place on the tokens of `batch` (fed to both models; same tokenizer),
    `batch_size` texts per forward pass.

    `layer_map[i]` is the teacher layer whose LayerNorm inputs student layer i should reproduce.
    Returns {"refitted": bool, "layers": [{"layer", "teacher_layer", "attention": [before, after],
    "ffn": [before, after]}], "tokens": n} (relative squared errors of the sums entering each LayerNorm).
    """
    s_layers, t_layers = _refit_points(student), _refit_points(teacher)
    if s_layers is None or t_layers is None or len(layer_map) != len(s_layers):
        log.info("refit skipped: %s is not a BERT-style encoder", type(student).__name__)
        return {"refitted": False, "reason": f"{type(student).__name__} is not a BERT-style post-LayerNorm encoder"}
    parts = _batches(batch, batch_size)
    was_training = student.training
    student.eval()
    records = []
    with torch.no_grad():
        # the sums entering the teacher's LayerNorms do not change as the student is repaired: one
        # teacher pass per batch captures them all (one pass per fit cost three times as much: 6
        # fits of a 3-layer student from a 6-layer teacher each ran the teacher up to its layer)
        norms = [t_point.norm for t_index in layer_map for t_point in t_layers[t_index]]
        targets = []
        for part in parts:
            mask = part["attention_mask"].bool()
            targets.append([inputs[0][mask] for inputs in _capture_all(norms, lambda: teacher(**part))])
        fit = 0
        for index, (points, t_index) in enumerate(zip(s_layers, layer_map)):
            record: dict[str, Any] = {"layer": index, "teacher_layer": t_index}
            # in forward order: each fit sees the repaired sublayers before it
            for point, _ in zip(points, t_layers[t_index]):
                normal = _Normal()
                for part, target in zip(parts, targets):
                    mask = part["attention_mask"].bool()
                    # the student's projection input and residual, against the teacher's sum
                    x, residual = _capture_inputs(point.block_output, lambda: student(**part))[:2]
                    normal.add(x[mask], target[fit] - residual[mask])
                record[point.name] = list(_fit_projection(point.projection, normal))
                fit += 1
            records.append(record)
            log.info("refit layer %d (teacher layer %d): %s", index, t_index,
                     ", ".join(f"{name} error {before:.3f} -> {after:.3f}"
                               for name, value in record.items() if isinstance(value, list) for before, after in [value]))
    student.train(was_training)
    return {"refitted": True, "layers": records, "tokens": int(batch["attention_mask"].bool().sum())}
