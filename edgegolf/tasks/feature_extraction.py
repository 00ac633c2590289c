"""feature-extraction: sentence embeddings (mean pooling over the attention mask, L2-normalised).

Scored by fidelity (cosine to the teacher's embedding of the same text) and by a linear
probe: logistic regression trained on the frozen embeddings of the train split, accuracy on
the test split. Each model gets its own probe, trained the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from edgegolf.data import Split
from edgegolf.runtime.models import TaskModel
from edgegolf.tasks.base import Outputs, TaskAdapter, cosine_rows


class _LastHiddenState(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return (self.model(**kwargs).last_hidden_state,)


class FeatureExtraction(TaskAdapter):
    name = "feature-extraction"
    auto_class = "AutoModel"
    output_names = ("last_hidden_state",)

    def spec_fields(self, model):
        return {"pooling": "mean", "normalize": True}

    def export_module(self, model) -> torch.nn.Module:
        return _LastHiddenState(model)

    def teacher_item(self, model, runtime_model: TaskModel, text: str) -> np.ndarray:
        feeds = runtime_model.encode([text])
        hidden = self.torch_outputs(model, feeds)[0]
        return runtime_model.pool(hidden, feeds["attention_mask"])[0]

    def artifact_item(self, runtime_model: TaskModel, text: str) -> np.ndarray:
        return runtime_model.embed([text])[0]

    def score(self, teacher: Outputs, candidate: Outputs, split: Split, model_config) -> dict[str, float]:
        cosine = cosine_rows(teacher.all, candidate.all)
        return {
            "accuracy": 100.0 * linear_probe_accuracy(candidate.train, split.train.labels, candidate.test, split.test.labels),
            "fidelity_mean_cosine": float(cosine.mean()),
            "fidelity_min_cosine": float(cosine.min()),
        }


def linear_probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Logistic regression on frozen embeddings; deterministic (lbfgs, fixed settings)."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000, C=10.0)
    probe.fit(train_x, list(train_y))
    return float(probe.score(test_x, list(test_y)))
