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


def _solve(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight [out, in] and bias [out] minimising ||x W^T + b - y||^2 (+ a small ridge)."""
    x = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    gram = x.T @ x
    ridge = RIDGE * gram.diagonal().mean()
    solution = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=torch.float64), x.T @ y.double())
    return solution[:-1].T.float(), solution[-1].float()


def _fit_projection(linear: torch.nn.Linear, inputs: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Refit `linear` so that linear(inputs) ~ target; returns the relative error before and after."""
    with torch.no_grad():
        before = float((linear(inputs) - target).pow(2).sum() / target.pow(2).sum())
        weight, bias = _solve(inputs, target)
        linear.weight.copy_(weight)
        if linear.bias is not None:
            linear.bias.copy_(bias)
        after = float((linear(inputs) - target).pow(2).sum() / target.pow(2).sum())
    return before, after


def refit_pruned_layers(teacher, student, batch: dict[str, torch.Tensor], layer_map: list[int]) -> dict[str, Any]:
    """Refit `student` in place on the tokens of `batch` (fed to both models; same tokenizer).

    `layer_map[i]` is the teacher layer whose LayerNorm inputs student layer i should reproduce.
    Returns {"refitted": bool, "layers": [{"layer", "teacher_layer", "attention": [before, after],
    "ffn": [before, after]}], "tokens": n} (relative squared errors of the sums entering each LayerNorm).
    """
    s_layers, t_layers = _refit_points(student), _refit_points(teacher)
    if s_layers is None or t_layers is None or len(layer_map) != len(s_layers):
        log.info("refit skipped: %s is not a BERT-style encoder", type(student).__name__)
        return {"refitted": False, "reason": f"{type(student).__name__} is not a BERT-style post-LayerNorm encoder"}
    mask = batch["attention_mask"].bool()
    was_training = student.training
    student.eval()
    records = []
    with torch.no_grad():
        # the teacher's sums entering every LayerNorm of each mapped layer, in one pass
        norms = [point.norm for t in layer_map for point in t_layers[t]]
        sums = iter([args[0][mask] for args in _capture_all(norms, lambda: teacher(**batch))])
        for index, (points, t_index) in enumerate(zip(s_layers, layer_map)):
            record: dict[str, Any] = {"layer": index, "teacher_layer": t_index}
            for point in points:  # in forward order: each fit sees the repaired sublayers before it
                target = next(sums)
                x, residual = _capture_inputs(point.block_output, lambda: student(**batch))[:2]
                record[point.name] = list(_fit_projection(point.projection, x[mask], target - residual[mask]))
            records.append(record)
            log.info("refit layer %d (teacher layer %d): %s", index, t_index,
                     ", ".join(f"{name} error {before:.3f} -> {after:.3f}"
                               for name, value in record.items() if isinstance(value, list) for before, after in [value]))
    student.train(was_training)
    return {"refitted": True, "layers": records, "tokens": int(mask.sum())}
