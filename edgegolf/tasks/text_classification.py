"""text-classification: a sequence classifier's logits.

Scored by accuracy on the labelled test split (when the model's label names are the
data's class names) and by agreement with the teacher's predicted class on every text.
"""

from __future__ import annotations

import numpy as np
import torch

from edgegolf.data import Split
from edgegolf.runtime.models import TaskModel
from edgegolf.tasks.base import Outputs, TaskAdapter, cosine_rows


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return (self.model(**kwargs).logits,)


def model_labels(config) -> tuple[str, ...]:
    id2label = getattr(config, "id2label", None) or {}
    return tuple(str(id2label[i]) for i in sorted(id2label, key=int))


class TextClassification(TaskAdapter):
    name = "text-classification"
    auto_class = "AutoModelForSequenceClassification"
    output_names = ("logits",)

    @classmethod
    def claims(cls, architecture: str) -> bool:
        return architecture.endswith("ForSequenceClassification")

    def spec_fields(self, model):
        return {"labels": model_labels(model.config)}

    def export_module(self, model) -> torch.nn.Module:
        return _Logits(model)

    def teacher_item(self, model, runtime_model: TaskModel, text: str) -> np.ndarray:
        return self.torch_outputs(model, runtime_model.encode([text]))[0][0]

    def artifact_item(self, runtime_model: TaskModel, text: str) -> np.ndarray:
        return runtime_model.logits([text])[0]

    def score(self, teacher: Outputs, candidate: Outputs, split: Split, model_config) -> dict[str, float]:
        labels = model_labels(model_config)
        predicted = candidate.test.argmax(axis=1)
        metrics = {
            "agreement": 100.0 * float(np.mean(teacher.all.argmax(axis=1) == candidate.all.argmax(axis=1))),
            "fidelity_mean_cosine": float(cosine_rows(teacher.all, candidate.all).mean()),
        }
        if set(split.test.labels) <= set(labels):
            truth = np.array([labels.index(label) for label in split.test.labels])
            metrics["accuracy"] = 100.0 * float(np.mean(predicted == truth))
        else:
            # Without matching label names accuracy is undefined; agreement stands in for it.
            metrics["accuracy"] = metrics["agreement"]
            metrics["accuracy_is_agreement"] = 1.0
        return metrics
