"""feature-extraction: sentence embeddings (mean pooling over the attention mask, L2-normalised,
unless the source is a sentence-transformers folder: then its own pooling, Dense layers,
normalisation and default prompt, read by edgegolf/tasks/st_folder.py).

Scored by fidelity (cosine to the teacher's embedding of the same text) and by a linear
probe: logistic regression trained on the frozen embeddings of the train split, accuracy on
the test split. Each model gets its own probe, trained the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgegolf.data import Split
from edgegolf.errors import RecipeError
from edgegolf.runtime.models import EmbeddingModel, TaskModel, pool, prompted
from edgegolf.runtime.tokenize import TextEncoder
from edgegolf.tasks.base import Outputs, TaskAdapter, cosine_rows
from edgegolf.tasks.registry import register_task
from edgegolf.tasks.st_folder import DEFAULT_HEAD, PooledOutput, SentenceHead, pool_tokens, read_sentence_head


@register_task
class FeatureExtraction(TaskAdapter):
    runtime_model = EmbeddingModel
    accuracy_meaning = "linear-probe accuracy on frozen embeddings"
    auto_class = "AutoModel"
    output_names = ("last_hidden_state",)
    batch_independent = True  # mean pooling over the attention mask: padding never reaches a text's embedding

    head: SentenceHead = DEFAULT_HEAD  # what comes after the transformer (read_source sets a folder's own)

    def read_source(self, path) -> None:
        """A sentence-transformers folder's pooling, Dense layers, Normalize and prompts (refused
        here, before any work, when edgegolf cannot reproduce one of its modules)."""
        head = read_sentence_head(Path(path))
        if head is not None:
            self.head = head
            if head.dense:  # Dense follows pooling, so the graph pools and gives the sentence embedding
                self.output_names = ("sentence_embedding",)

    def spec_fields(self, model):
        return {"pooling": self.head.pooling, "normalize": self.head.normalize, "prompts": dict(self.head.prompts),
                "default_prompt_name": self.head.default_prompt_name}

    def model_spec(self, model, tokenizer, input_names, max_length):
        if self.head.max_seq_length:  # sentence-transformers truncates there too
            max_length = min(max_length, self.head.max_seq_length)
        return super().model_spec(model, tokenizer, input_names, max_length)

    def export_module(self, model) -> torch.nn.Module:
        return PooledOutput(model, self.head) if self.head.dense else super().export_module(model)

    def teacher_item(self, model, encoder: TextEncoder, text: str) -> np.ndarray:
        feeds = encoder.encode(prompted([text], encoder.spec))  # the default prompt, as the runtime's embed
        hidden = self.torch_outputs(model, feeds)[0]
        return pool(hidden, feeds["attention_mask"], encoder.spec)[0]

    def artifact_item(self, runtime_model: TaskModel, text: str) -> np.ndarray:
        return runtime_model.embed([text])[0]

    def teacher_rows(self, model, encoder: TextEncoder, texts: list[str]) -> np.ndarray:
        feeds = encoder.encode(prompted(list(texts), encoder.spec))  # the default prompt, as teacher_item
        return pool(self.torch_outputs(model, feeds)[0], feeds["attention_mask"], encoder.spec)

    def artifact_rows(self, runtime_model: TaskModel, texts: list[str]) -> np.ndarray:
        return runtime_model.embed(texts, batch_size=len(texts))

    # --- distillation -------------------------------------------------------------------
    def check_distill_pair(self, teacher_config, student_config) -> None:
        s_width, t_width = getattr(student_config, "hidden_size", None), getattr(teacher_config, "hidden_size", None)
        if s_width != t_width:
            raise RecipeError(f"feature-extraction distillation compares embeddings, but the student's width is "
                              f"{s_width} and the teacher's {t_width}; give a student of width {t_width}")

    def distill_view(self, outputs, attention_mask: torch.Tensor, config, layers: list[int] | None
                     ) -> dict[str, torch.Tensor]:
        """What the distillation loss compares: the pooled embedding (+ mapped hidden states)."""
        from edgegolf.tasks.losses import mapped_hidden_states, mean_pool

        hidden = outputs.last_hidden_state
        mode = self.head.pooling  # before any Dense layer: they are the teacher's, unchanged in the student
        view = {"pooled": mean_pool(hidden, attention_mask) if mode == "mean" else
                pool_tokens(hidden, attention_mask, mode)}
        if layers:
            view["hidden"] = mapped_hidden_states(outputs, layers)
        return view

    def distill_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                     attention_mask: torch.Tensor, config, labels: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cosine (or MSE) between pooled embeddings, plus hidden_weight x MSE of mapped layers.

        Cosine is the direct objective: the deployed embedding is L2-normalised, so only its
        direction matters. Labels carry no signal for an embedding model and are ignored.
        """
        from edgegolf.tasks.losses import cosine_loss, mse_loss, with_hidden_term

        pooled = (cosine_loss if config.loss == "cosine" else mse_loss)(student["pooled"], teacher["pooled"])
        parts = {config.loss: float(pooled.detach())}
        loss = pooled
        return with_hidden_term(loss, parts, student, teacher, attention_mask, config.hidden_weight)

    def judge(self, teacher: Outputs, candidate: Outputs, split: Split, model_config
              ) -> tuple[dict[str, float], np.ndarray]:
        cosine = cosine_rows(teacher.all, candidate.all)
        correct = linear_probe_correct(candidate.train, split.train.labels, candidate.test, split.test.labels)
        return {
            "accuracy": 100.0 * float(correct.mean()),
            "fidelity_mean_cosine": float(cosine.mean()),
            "fidelity_min_cosine": float(cosine.min()),
        }, correct


def linear_probe_correct(train_x, train_y, test_x, test_y) -> np.ndarray:
    """Whether a logistic-regression probe on frozen embeddings gets each test text right;
    deterministic (lbfgs, fixed settings)."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000, C=10.0)
    probe.fit(train_x, list(train_y))
    return np.asarray(probe.predict(test_x)) == np.asarray(list(test_y))


def linear_probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    """The probe's accuracy (0-1) on the test texts."""
    return float(linear_probe_correct(train_x, train_y, test_x, test_y).mean())
