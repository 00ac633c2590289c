"""Loss terms the task adapters compose into their distillation loss (one job each).

They live beside the adapters so that tasks never import the distillation trainer: the
trainer (edgegolf/compression/distill/) imports tasks, not the other way round."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Which dimension of a batched distillation target is the token position: such targets are
# cached per text cut to its real length. mapped_hidden_states makes "hidden"; a task adds
# its own sequence-shaped views in TaskAdapter.distill_sequence_dims.
HIDDEN_SEQUENCE_DIMS = {"hidden": 2}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens: the sentence-transformers pooling the runtime applies."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def mapped_hidden_states(outputs, layers: list[int]) -> torch.Tensor:
    """Outputs of the given transformer layers (0-based), stacked: [batch, layers, seq, hidden]."""
    states = outputs.hidden_states  # index 0 is the embedding output, layer i's output is i + 1
    return torch.stack([states[layer + 1] for layer in layers], dim=1)


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student.float(), teacher.float())


def masked_hidden_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """MSE over real tokens only, averaged over layers, tokens and features; padding never counts."""
    mask = attention_mask[:, None, :, None].to(torch.float32)
    squared = (student.float() - teacher.float()).pow(2) * mask
    elements = mask.sum() * student.shape[1] * student.shape[-1]
    return squared.sum() / elements.clamp_min(1.0)


def with_hidden_term(loss: torch.Tensor, parts: dict[str, float], student: dict[str, torch.Tensor],
                     teacher: dict[str, torch.Tensor], attention_mask: torch.Tensor, hidden_weight: float
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """`loss` plus hidden_weight x the MSE of the mapped hidden states, when the views carry them
    and the weight is positive (every task's distill_loss ends so); `parts` gains "hidden_mse"."""
    if "hidden" in student and hidden_weight > 0:
        hidden = masked_hidden_mse(student["hidden"], teacher["hidden"], attention_mask)
        return loss + hidden_weight * hidden, {**parts, "hidden_mse": float(hidden.detach())}
    return loss, parts


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened logits, times T^2 so its gradient scale
    does not shrink with T (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network")."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def hard_label_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the items whose label is known (label -1: unknown)."""
    return F.cross_entropy(logits.float(), labels, ignore_index=-1)
