"""What every task adapter provides to the pipeline.

The pipeline feeds the teacher (PyTorch) and every ONNX artifact the same tokenized text,
through the runtime's own tokenizer and pooling, so that differences between stages come
from the model and never from pre- or post-processing.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from edgegolf.data import Split
from edgegolf.errors import RecipeError, SourceError
from edgegolf.runtime.models import TaskModel
from edgegolf.runtime.spec import ModelSpec
from edgegolf.runtime.tokenize import TextEncoder
from edgegolf.tasks.losses import HIDDEN_SEQUENCE_DIMS

log = logging.getLogger(__name__)

INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


class OutputOf(torch.nn.Module):
    """A HF model as the graph sees it: inputs positionally, one named output as a tuple."""

    def __init__(self, model, output: str):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return (getattr(self.model(**kwargs), self.output),)


class TaskAdapter:
    """One task's torch side. Register a subclass with edgegolf.tasks.registry.register_task;
    its `name` is set from `runtime_model.task`."""

    name: ClassVar[str]
    runtime_model: ClassVar[type[TaskModel]]  # what an app gets for this task's bundles
    auto_class: ClassVar[str]  # the transformers Auto class that loads this task's model
    output_names: ClassVar[tuple[str, ...]]
    scores_train: ClassVar[bool] = True  # score() reads the train rows too (a linear probe); else only test
    optimizable: ClassVar[bool] = True  # whether onnxruntime's transformer fusions apply to its graph
    accuracy_meaning: ClassVar[str] = "test-split accuracy"  # what score()'s "accuracy" is, for reports
    # texts scored when evaluate.limit is unset: a stratified subset whose accuracy comes with its
    # 95% interval (BBC News: 180 test texts, the README's default compress in a fraction of the time)
    default_eval_limit: ClassVar[int] = 600
    # whether a text's result is the same alone or in a padded batch (the padding mask keeps texts
    # apart): the teacher and float graphs are then evaluated in batches (edgegolf/measure/evaluate.py)
    batch_independent: ClassVar[bool] = False

    @classmethod
    def claims(cls, architecture: str) -> bool:
        """Whether a config's architecture name means this task."""
        return False

    def check_source(self, config, model_name: str) -> None:
        """Refuse (SourceError) a model this task cannot measure honestly, from its config alone."""

    def read_source(self, path: Path) -> None:
        """Read what the model folder adds beyond its config (e.g. a sentence-transformers head);
        refuse (SourceError) what cannot be reproduced. Called before any work."""

    # --- data ----------------------------------------------------------------------------
    def load_split(self, settings) -> Split:
        """The evaluation data of the recipe's [evaluate] `settings`, split into train and test."""
        from edgegolf.data import load_labelled_texts, stratified_split

        data = load_labelled_texts(settings.data, text_column=settings.text_column, label_column=settings.label_column)
        return stratified_split(data, test_fraction=settings.test_fraction, seed=settings.seed,
                                limit=self.eval_limit(settings) or None)

    def for_split(self, split: Split) -> "TaskAdapter":
        """The adapter that scores `split`: itself, unless the split carries how its texts are
        scored (causal-lm: its token budget), which the returned adapter then applies."""
        return self

    def eval_limit(self, settings) -> int:
        """What `evaluate.limit` means for this task: unset is the task's default, 0 everything."""
        return self.default_eval_limit if settings.limit is None else settings.limit

    # --- loading -------------------------------------------------------------------------
    def load_model(self, path: str | Path, *, trust_remote_code: bool = False, allow_pickle: bool = False):
        import transformers

        from edgegolf.compression.prune import load_pruned

        auto = getattr(transformers, self.auto_class)
        try:
            # eager attention: onnxruntime's fusions recognise its pattern (on transformers 5, only that one).
            # load_pruned is from_pretrained that also rebuilds head-pruned folders.
            model = load_pruned(
                str(path), auto, attn_implementation="eager", trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True,
            )
        except OSError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not allow_pickle and any(Path(path).glob("*.bin")):
                raise SourceError(
                    f"model folder {str(path)!r} has only pickled weights (.bin), which can run code on load; "
                    "convert them to safetensors, or pass --allow-pickle if you trust the source"
                ) from None
            raise SourceError(f"cannot load a {self.auto_class} model from {str(path)!r}: {first}") from None
        except (ValueError, RuntimeError) as exc:  # RuntimeError: weights that do not fit the config
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "ignore_mismatched_sizes" in first:  # transformers' own words point at an option, not the cause
                first = "its weights do not have the shapes its config.json gives (transformers lists them above)"
            raise SourceError(f"cannot load a {self.auto_class} model from {str(path)!r}: {first}") from None
        model.eval()
        return model

    def input_names(self, model, tokenizer) -> tuple[str, ...]:
        """Graph inputs: what the tokenizer emits and the model's forward accepts."""
        accepted = set(inspect.signature(model.forward).parameters)
        emitted = set(getattr(tokenizer, "model_input_names", INPUT_ORDER))
        if getattr(model.config, "type_vocab_size", None) == 0:
            # no token type embeddings (DeBERTa-v3): the graph would not take the input at all
            accepted.discard("token_type_ids")
        names = tuple(n for n in INPUT_ORDER if n in accepted and n in emitted)
        if "input_ids" not in names or "attention_mask" not in names:
            raise SourceError(
                f"{type(model).__name__} does not take input_ids and attention_mask; edgegolf exports text encoders that do"
            )
        return names

    def model_spec(self, model, tokenizer, input_names: tuple[str, ...], max_length: int) -> ModelSpec:
        if tokenizer.pad_token is None:
            raise SourceError("the tokenizer has no padding token; edgegolf needs one to batch inputs")
        return ModelSpec(
            task=self.name,
            input_names=input_names,
            output_names=self.output_names,
            max_length=min(max_length, getattr(model.config, "max_position_embeddings", max_length)),
            pad_token_id=int(tokenizer.pad_token_id),
            pad_token=str(tokenizer.pad_token),
            **self.spec_fields(model),
        )

    def spec_fields(self, model) -> dict[str, Any]:
        return {}

    # --- running ------------------------------------------------------------------------
    def export_module(self, model) -> torch.nn.Module:
        """A module whose forward takes the graph inputs positionally and returns a tuple."""
        return OutputOf(model, self.output_names[0])

    def graph_feeds(self, feeds: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
        """Text feeds (from the encoder) completed with whatever else the graph takes."""
        return feeds

    def export(self, model, out_path: Path, *, input_names, output_names, sample_feeds, verify_feeds, opset, atol):
        """Export `model` to ONNX at `out_path` and verify it on `verify_feeds` (an ExportReport)."""
        from edgegolf.export.onnx import export_onnx

        return export_onnx(self.export_module(model), out_path, input_names=list(input_names),
                           output_names=list(output_names), sample_feeds=sample_feeds, verify_feeds=verify_feeds,
                           opset=opset, atol=atol)

    def torch_outputs(self, model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        module = self.export_module(model)
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(feeds[name]) for name in INPUT_ORDER if name in feeds))
        return [o.float().numpy() for o in outputs]

    def teacher_item(self, model, encoder: TextEncoder, text: str) -> np.ndarray:
        """A PyTorch model's per-text result, pre- and post-processed as the runtime does."""
        raise NotImplementedError

    def artifact_item(self, runtime_model: TaskModel, text: str) -> np.ndarray:
        """An ONNX artifact's per-text result, through the runtime an app uses."""
        raise NotImplementedError

    def teacher_rows(self, model, encoder: TextEncoder, texts: list[str]) -> np.ndarray:
        """teacher_item of each text, one row per text; a task whose results do not depend on
        their batch neighbours overrides this with one padded forward pass."""
        return np.stack([self.teacher_item(model, encoder, text) for text in texts])

    def artifact_rows(self, runtime_model: TaskModel, texts: list[str]) -> np.ndarray:
        """artifact_item of each text, one row per text (or one padded batch, as teacher_rows)."""
        return np.stack([self.artifact_item(runtime_model, text) for text in texts])

    # --- distillation (edgegolf/compression/distill/loop.py calls these) -----------------
    # Which dimension of each batched view from distill_view is the token position: such
    # teacher targets are cached per text cut to its real length. "hidden" is mapped_hidden_states'.
    distill_sequence_dims: ClassVar[dict[str, int]] = HIDDEN_SEQUENCE_DIMS

    def check_distill_pair(self, teacher_config, student_config) -> None:
        """Refuse (RecipeError) a teacher/student pair this task cannot distill, before any work."""

    def distill_view(self, outputs, attention_mask: torch.Tensor, config, layers: list[int] | None
                     ) -> dict[str, torch.Tensor]:
        """What the distillation loss compares, from a forward pass's outputs (pooling happens here)."""
        raise RecipeError(f"task {self.name!r} does not declare how to distill it (distill_view / distill_loss)")

    def distill_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                     attention_mask: torch.Tensor, config, labels: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, its named parts as floats) between the student's and the teacher's views."""
        raise RecipeError(f"task {self.name!r} does not declare how to distill it (distill_view / distill_loss)")

    def distill_label_ids(self, model_config, labels) -> list[int] | None:
        """Per-text class ids from the transfer data's labels, for a hard-label loss; None: labels carry no signal."""
        return None

    # --- scoring ------------------------------------------------------------------------
    def score(self, teacher: "Outputs", candidate: "Outputs", split: Split, model_config) -> dict[str, float]:
        """Metrics of `candidate`; its "accuracy" (0-100) is the one the budget's drop limits.
        A task overrides this, or judge where its accuracy is a mean over texts (this is then judge's metrics)."""
        if type(self).judge is TaskAdapter.judge:
            raise NotImplementedError(f"{type(self).__qualname__} defines neither score nor judge")
        return self.judge(teacher, candidate, split, model_config)[0]

    def judge(self, teacher: "Outputs", candidate: "Outputs", split: Split, model_config
              ) -> tuple[dict[str, float], np.ndarray | None]:
        """score(), and whether each scored text counts as correct (what the accuracy is the mean
        of; its confidence interval comes from it); None where the accuracy is no such mean."""
        return self.score(teacher, candidate, split, model_config), None


class Outputs:
    """Per-text results (one row per text) for the train and test halves of a split."""

    def __init__(self, train: np.ndarray, test: np.ndarray):
        self.train = train
        self.test = test
        self.correct: np.ndarray | None = None  # per scored text, once judged (the teacher's pairs each drop)

    @property
    def all(self) -> np.ndarray:
        return np.concatenate([self.train, self.test])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)
