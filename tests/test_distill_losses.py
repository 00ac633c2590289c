"""Each distillation loss of each task adapter, on real tensors with known answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from edgegolf.compression.distill import DistillConfig
from edgegolf.compression.distill.losses import masked_hidden_mse, mean_pool
from edgegolf.tasks import get_task

FE = get_task("feature-extraction")
TC = get_task("text-classification")


def config(**kw) -> DistillConfig:
    return DistillConfig(steps=1, **kw)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_feature_extraction_cosine_loss_is_one_minus_cosine_and_ignores_scale():
    teacher = {"pooled": torch.tensor([[1.0, 0.0], [0.0, 2.0]])}
    same_direction = {"pooled": torch.tensor([[5.0, 0.0], [0.0, 0.1]])}
    orthogonal = {"pooled": torch.tensor([[0.0, 1.0], [3.0, 0.0]])}
    mask = torch.ones(2, 3, dtype=torch.long)
    assert FE.distill_loss(same_direction, teacher, mask, config())[0].item() == pytest.approx(0.0, abs=1e-6)
    loss, parts = FE.distill_loss(orthogonal, teacher, mask, config())
    assert loss.item() == pytest.approx(1.0)
    assert parts == {"cosine": pytest.approx(1.0)}


def test_feature_extraction_mse_loss_on_pooled_embeddings():
    teacher = {"pooled": torch.tensor([[1.0, 0.0]])}
    student = {"pooled": torch.tensor([[3.0, 0.0]])}
    loss, parts = FE.distill_loss(student, teacher, torch.ones(1, 2, dtype=torch.long), config(loss="mse"))
    assert loss.item() == pytest.approx(2.0)  # (2^2 + 0^2) / 2
    assert set(parts) == {"mse"}


def test_hidden_state_term_counts_real_tokens_only_and_is_weighted():
    mask = torch.tensor([[1, 1, 0]])
    teacher_hidden = torch.zeros(1, 2, 3, 4)  # batch, mapped layers, tokens, width
    student_hidden = torch.zeros(1, 2, 3, 4)
    student_hidden[:, :, :2] = 1.0
    student_hidden[:, :, 2] = 1000.0  # padding: must not count
    assert masked_hidden_mse(student_hidden, teacher_hidden, mask).item() == pytest.approx(1.0)
    pooled = {"pooled": torch.tensor([[1.0, 0.0]])}
    loss, parts = FE.distill_loss({**pooled, "hidden": student_hidden}, {**pooled, "hidden": teacher_hidden}, mask,
                                  config(hidden_weight=0.5))
    assert parts["hidden_mse"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(0.5)


def test_classification_kl_matches_the_formula_and_scales_with_t_squared():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    mask = torch.ones(2, 4, dtype=torch.long)
    for temperature in (1.0, 3.0):
        p = torch.softmax(teacher / temperature, -1)
        q = torch.softmax(student / temperature, -1)
        expected = float((p * (p / q).log()).sum(-1).mean()) * temperature**2
        loss, parts = TC.distill_loss({"logits": student}, {"logits": teacher}, mask, config(temperature=temperature))
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        assert set(parts) == {"kl"}
    same, _ = TC.distill_loss({"logits": teacher}, {"logits": teacher}, mask, config())
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_classification_mixes_hard_labels_where_known():
    student = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mask = torch.ones(2, 4, dtype=torch.long)
    cfg = config(label_weight=0.25)
    kl, _ = TC.distill_loss({"logits": student}, {"logits": teacher}, mask, cfg)
    labels = torch.tensor([0, -1])  # the second text has no label
    loss, parts = TC.distill_loss({"logits": student}, {"logits": teacher}, mask, cfg, labels)
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert loss.item() == pytest.approx(0.75 * kl.item() + 0.25 * ce, rel=1e-5)
    unlabelled, parts = TC.distill_loss({"logits": student}, {"logits": teacher}, mask, cfg, torch.tensor([-1, -1]))
    assert unlabelled.item() == pytest.approx(kl.item()) and "ce" not in parts


def test_classification_label_ids_follow_the_model_label_names():
    model_config = SimpleNamespace(id2label={0: "sport", 1: "tech"})
    assert TC.distill_label_ids(model_config, ["tech", "sport", "politics"]) == [1, 0, -1]
    assert TC.distill_label_ids(model_config, ["politics"]) is None  # no known name: logits alone teach
    assert TC.distill_label_ids(model_config, None) is None


def test_losses_carry_gradients_to_the_student():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4)
    mask = torch.ones(3, 2, dtype=torch.long)
    for adapter, key in ((FE, "pooled"), (TC, "logits")):
        student.grad = None
        adapter.distill_loss({key: student}, {key: teacher}, mask, config())[0].backward()
        assert student.grad is not None and student.grad.abs().sum() > 0
