"""text-classification: a sequence classifier's logits.

Scored by accuracy and macro-F1 on the labelled test split (when the data's labels are the
model's class names, or its class ids) and by agreement with the teacher's predicted class
on every text.
"""

from __future__ import annotations

import numpy as np
import torch

from edgegolf.data import Split
from edgegolf.errors import SourceError
from edgegolf.runtime.models import ClassificationModel, TaskModel
from edgegolf.runtime.tokenize import TextEncoder
from edgegolf.tasks.base import Outputs, TaskAdapter, cosine_rows
from edgegolf.tasks.registry import register_task


def model_labels(config) -> tuple[str, ...]:
    id2label = getattr(config, "id2label", None) or {}
    return tuple(str(id2label[i]) for i in sorted(id2label, key=int))


@register_task
class TextClassification(TaskAdapter):
    runtime_model = ClassificationModel
    auto_class = "AutoModelForSequenceClassification"
    output_names = ("logits",)
    batch_independent = True  # the padding mask keeps texts apart; the head reads each text's own tokens

    @classmethod
    def claims(cls, architecture: str) -> bool:
        return architecture.endswith("ForSequenceClassification")

    def check_source(self, config, model_name: str) -> None:
        architectures = getattr(config, "architectures", None)
        if architectures and not any(self.claims(a) for a in architectures):
            # the head would be random weights, measured as if trained
            raise SourceError(f"model {model_name!r} is a {architectures[0]} with no classification head; "
                              "text-classification needs a model fine-tuned for it, or use --task feature-extraction")

    def spec_fields(self, model):
        return {"labels": model_labels(model.config)}

    def teacher_item(self, model, encoder: TextEncoder, text: str) -> np.ndarray:
        return self.torch_outputs(model, encoder.encode([text]))[0][0]

    def artifact_item(self, runtime_model: TaskModel, text: str) -> np.ndarray:
        return runtime_model.logits([text])[0]

    def teacher_rows(self, model, encoder: TextEncoder, texts: list[str]) -> np.ndarray:
        return self.torch_outputs(model, encoder.encode(texts))[0]

    def artifact_rows(self, runtime_model: TaskModel, texts: list[str]) -> np.ndarray:
        return runtime_model.logits(texts, batch_size=len(texts))

    # --- distillation -------------------------------------------------------------------
    def distill_view(self, outputs, attention_mask: torch.Tensor, config, layers: list[int] | None
                     ) -> dict[str, torch.Tensor]:
        """What the distillation loss compares: the logits (+ mapped hidden states)."""
        from edgegolf.tasks.losses import mapped_hidden_states

        view = {"logits": outputs.logits}
        if layers:
            view["hidden"] = mapped_hidden_states(outputs, layers)
        return view

    def distill_label_ids(self, model_config, labels) -> list[int] | None:
        """Class ids of the data's labels in the model's label order; -1 where unknown.

        None when no label names the model knows: then only the teacher's logits teach.
        """
        if labels is None:
            return None
        ids = class_ids(model_labels(model_config), labels)
        return ids if any(i >= 0 for i in ids) else None

    def distill_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                     attention_mask: torch.Tensor, config, labels: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        """KL on temperature-softened logits; with known labels, (1 - w) KL + w CE (w = label_weight).

        Plus hidden_weight x MSE of mapped hidden states when asked.
        """
        from edgegolf.tasks.losses import hard_label_ce, soft_kl, with_hidden_term

        kl = soft_kl(student["logits"], teacher["logits"], config.temperature)
        parts = {"kl": float(kl.detach())}
        loss = kl
        if labels is not None and bool((labels >= 0).any()) and config.label_weight > 0:
            ce = hard_label_ce(student["logits"], labels)
            parts["ce"] = float(ce.detach())
            loss = (1.0 - config.label_weight) * kl + config.label_weight * ce
        return with_hidden_term(loss, parts, student, teacher, attention_mask, config.hidden_weight)

    def judge(self, teacher: Outputs, candidate: Outputs, split: Split, model_config
              ) -> tuple[dict[str, float], np.ndarray]:
        names = model_labels(model_config)
        predicted = candidate.test.argmax(axis=1)
        metrics = {
            "agreement": 100.0 * float(np.mean(teacher.all.argmax(axis=1) == candidate.all.argmax(axis=1))),
            "fidelity_mean_cosine": float(cosine_rows(teacher.all, candidate.all).mean()),
        }
        truth = np.array(class_ids(names, split.test.labels))
        if len(truth) and (truth >= 0).all():
            correct = predicted == truth
            metrics["accuracy"] = 100.0 * float(np.mean(correct))
            metrics["macro_f1"] = 100.0 * macro_f1(truth, predicted)
        else:
            # Without matching label names accuracy is undefined; agreement stands in for it.
            correct = teacher.all.argmax(axis=1) == candidate.all.argmax(axis=1)
            metrics["accuracy"] = metrics["agreement"]
            metrics["accuracy_is_agreement"] = 1.0
        return metrics, correct


def class_ids(names: tuple[str, ...], labels) -> list[int]:
    """The model's class id of each data label; -1 where it has none.

    A label matches a class by name (id2label), else, when no label is a name, by its id:
    data files often hold class ids ("0", "3") for a model whose classes are named.
    """
    labels = [str(label) for label in labels]
    if any(label in names for label in labels):
        return [names.index(label) if label in names else -1 for label in labels]
    return [int(label) if label.isdigit() and int(label) < len(names) else -1 for label in labels]


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes in `truth` or `predicted` (as scikit-learn)."""
    scores = []
    for cls in np.union1d(truth, predicted):
        tp = float(np.sum((predicted == cls) & (truth == cls)))
        fp = float(np.sum((predicted == cls) & (truth != cls)))
        fn = float(np.sum((predicted != cls) & (truth == cls)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0
