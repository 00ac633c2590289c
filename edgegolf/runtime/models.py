"""Task models: the objects an app calls (`.embed`, `.classify`, `.logits`, `.run`).

A model is a session, a text encoder and a spec; nothing in it changes after it is built,
so one model serves many threads (onnxruntime documents concurrent `Run` calls on one
session as safe: https://onnxruntime.ai/docs/api/python/api_summary.html, "InferenceSession").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from edgegolf.errors import BundleError, InputError
from edgegolf.runtime.registry import model_class, runtime_model
from edgegolf.runtime.session import create_session
from edgegolf.runtime.spec import ModelSpec
from edgegolf.runtime.tokenize import TextEncoder, check_batch_size, check_texts, make_tokenizer

__all__ = [
    "ClassificationModel", "EmbeddingModel", "Prediction", "TaskModel", "make_tokenizer", "open_model", "pool",
    "prompted",
]

log = logging.getLogger(__name__)

# sentence-transformers' Pooling modes (https://sbert.net/docs/package_reference/sentence_transformer/models.html)
POOLINGS = ("mean", "cls", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens")


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # softmax probability of `label`


class TaskModel:
    """What every bundle can do: tokenize (`encode`) and run the graph (`run`)."""

    task: ClassVar[str] = ""  # the registered task name (edgegolf.runtime.registry)
    methods: ClassVar[str] = ".run()"  # what an app calls on this task's bundles (named in errors)

    def __init__(self, session: ort.InferenceSession, encoder: TextEncoder, spec: ModelSpec,
                 *, manifest: dict[str, Any] | None = None):
        self.session = session
        self.encoder = encoder
        self.spec = spec
        self.manifest = manifest  # the bundle's manifest when loaded from one
        self._output_names = list(spec.output_names)
        self.check_graph(session, spec)

    @classmethod
    def check_graph(cls, session: ort.InferenceSession, spec: ModelSpec) -> None:
        """The graph must take what the spec feeds and give what the spec reads (a task adds its own checks)."""
        _check_graph(session, spec)

    @property
    def tokenizer(self):
        """The `tokenizers.Tokenizer` with the bundle's truncation (do not reconfigure it)."""
        return self.encoder.tokenizer

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.spec.task!r}, inputs={list(self.spec.input_names)}, "
                f"provider={self.providers[0]!r})")

    def encode(self, texts: list[str], *, pad_to: int | None = None) -> dict[str, np.ndarray]:
        return self.encoder.encode(texts, pad_to=pad_to)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's raw outputs (spec.output_names, in order) for feeds from `encode`."""
        if not isinstance(feeds, dict):
            raise InputError(f"feeds is a {type(feeds).__name__}; "
                             f"pass a dict of arrays named {list(self.spec.input_names)}")
        names = set(feeds)
        if names != set(self.spec.input_names):
            raise InputError(f"feeds are named {sorted(names)}; the graph takes exactly {list(self.spec.input_names)}")
        try:
            return self.session.run(self._output_names, feeds)
        except InvalidArgument as exc:  # wrong dtype or rank: the app's feeds, not the bundle
            raise InputError(f"onnxruntime refused the feeds: {str(exc).splitlines()[0]}") from None

    def _run_batches(self, texts: Sequence[str], batch_size: int) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
        """(outputs, attention_mask) per batch of at most batch_size texts, in input order.

        Input order is kept (no sorting by length): with dynamic int8 a text's output
        depends on its batch neighbours, so grouping must not depend on the other texts' lengths.
        """
        texts = check_texts(texts)
        batch_size = check_batch_size(batch_size)
        for start in range(0, len(texts), batch_size):
            feeds = self.encoder.encode(texts[start:start + batch_size])
            yield self.session.run(self._output_names, feeds), feeds["attention_mask"]

    def _wrong_task(self, method: str, needs: str) -> InputError:
        return InputError(
            f".{method}() needs a {needs} bundle, but this bundle's task is {self.spec.task!r}; "
            f"use {getattr(model_class(self.spec.task), 'methods', '.run()')} or load a {needs} bundle"
        )

    def embed(self, texts: list[str], *, batch_size: int = 32, prompt_name: str | None = None) -> np.ndarray:
        raise self._wrong_task("embed", "feature-extraction")

    def logits(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        raise self._wrong_task("logits", "text-classification")

    def classify(self, texts: list[str], *, batch_size: int = 32) -> list[Prediction]:
        raise self._wrong_task("classify", "text-classification")


@runtime_model
class EmbeddingModel(TaskModel):
    """feature-extraction: one vector per text, pooled over its tokens and (per spec) L2-normalised."""

    task = "feature-extraction"
    methods = ".embed()"

    def __init__(self, session, encoder, spec, *, manifest=None):
        if spec.pooling not in POOLINGS:
            raise BundleError(f"manifest pooling is {spec.pooling!r}; this runtime pools with {list(POOLINGS)}")
        super().__init__(session, encoder, spec, manifest=manifest)

    def embed(self, texts: list[str], *, batch_size: int = 32, prompt_name: str | None = None) -> np.ndarray:
        """float32 [len(texts), dim]. Each text is prefixed with the prompt `prompt_name` names
        (spec.prompts), or, when None, the model's default prompt, as sentence-transformers does."""
        texts = self.prompted(texts, prompt_name)
        parts = [self.pool(outputs, mask) for outputs, mask in self._run_batches(texts, batch_size)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def prompted(self, texts: list[str], prompt_name: str | None = None) -> list[str]:
        """`texts` with the prompt `embed` prepends (the default one when prompt_name is None)."""
        return prompted(check_texts(texts), self.spec, prompt_name)

    def pool(self, outputs: np.ndarray | Sequence[np.ndarray], attention_mask: np.ndarray) -> np.ndarray:
        """Token states [batch, seq, hidden] to float32 [batch, hidden], the way `embed` does it."""
        return pool(outputs, attention_mask, self.spec)


@runtime_model
class ClassificationModel(TaskModel):
    """text-classification: logits and softmax predictions over spec.labels."""

    task = "text-classification"
    methods = ".classify() or .logits()"

    @classmethod
    def check_graph(cls, session: ort.InferenceSession, spec: ModelSpec) -> None:
        super().check_graph(session, spec)
        outputs = {o.name: o for o in session.get_outputs()}
        if spec.labels:
            width = outputs[spec.output_names[0]].shape[-1] if outputs[spec.output_names[0]].shape else None
            if isinstance(width, int) and width != len(spec.labels):
                raise BundleError(f"the graph gives {width} logits; the manifest names {len(spec.labels)} labels "
                                  f"{list(spec.labels)}")

    def logits(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """float32 [len(texts), len(labels)]."""
        parts = [np.asarray(outputs[0], dtype=np.float32) for outputs, _ in self._run_batches(texts, batch_size)]
        logits = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if logits.ndim != 2 or (self.spec.labels and logits.shape[1] != len(self.spec.labels)):
            raise BundleError(
                f"the graph gives logits of shape {logits.shape}; the manifest names {len(self.spec.labels)} labels"
            )
        return logits

    def classify(self, texts: list[str], *, batch_size: int = 32) -> list[Prediction]:
        """The most probable label of each text, with its softmax probability."""
        logits = self.logits(texts, batch_size=batch_size)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # stable softmax
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        labels = self.spec.labels or tuple(f"LABEL_{i}" for i in range(logits.shape[1]))
        return [Prediction(labels[i], float(probs[row, i])) for row, i in enumerate(best)]


def _check_graph(session: ort.InferenceSession, spec: ModelSpec) -> None:
    """The graph must take what the spec feeds and give what the spec reads."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name: o for o in session.get_outputs()}
    fed = [*spec.input_names, *spec.extra.get("past_inputs", ())]  # causal-lm: plus its key/value cache
    if set(inputs) != set(fed):
        raise BundleError(f"the graph takes inputs {inputs}; the manifest feeds {fed}")
    missing = [n for n in spec.output_names if n not in outputs]
    if missing:
        raise BundleError(f"the graph has no outputs {missing}; it gives {list(outputs)}")


def prompted(texts: list[str], spec: ModelSpec, prompt_name: str | None = None) -> list[str]:
    """`texts` prefixed with the named prompt, or the spec's default one when `prompt_name` is None."""
    if prompt_name is None:
        prompt = spec.prompts.get(spec.default_prompt_name, "")
    elif isinstance(prompt_name, str) and prompt_name in spec.prompts:
        prompt = spec.prompts[prompt_name]
    else:
        raise InputError(f"prompt_name is {prompt_name!r}; this model's prompts are {sorted(spec.prompts)} "
                         "(or None for its default)")
    return [prompt + text for text in texts] if prompt else list(texts)


def pool(outputs: np.ndarray | Sequence[np.ndarray], attention_mask: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Token states [batch, seq, hidden] to float32 [batch, hidden] per the spec's pooling.

    `outputs` is the first graph output or the list of outputs. Each mode computes what
    sentence-transformers' Pooling computes on right-padded batches (the encoder pads on the
    right): mean divides by the token count clamped at 1e-9; max ignores padding; lasttoken
    takes the last real token; weightedmean weighs token i by i + 1. Normalising divides by the
    L2 norm clamped at 1e-12, as torch.nn.functional.normalize. A 2-D output is taken as
    already pooled (a graph that pools, e.g. before Dense layers). The pipeline pools PyTorch
    outputs with this same function, so teacher and artifact get identical post-processing.
    """
    hidden = outputs if isinstance(outputs, np.ndarray) else outputs[0]
    hidden = np.asarray(hidden, dtype=np.float32)
    if hidden.ndim == 3:
        mask = np.asarray(attention_mask, dtype=np.float32)
        if mask.shape != hidden.shape[:2]:
            raise InputError(f"attention_mask has shape {mask.shape}; the token states need {hidden.shape[:2]}")
        pooled = _pool_tokens(hidden, mask, spec.pooling)
    elif hidden.ndim == 2:
        pooled = hidden
    else:
        raise BundleError(f"the graph's {spec.output_names[0]!r} has rank {hidden.ndim}; expected [batch, seq, hidden]")
    if spec.normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(pooled, dtype=np.float32)


def _pool_tokens(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    if mode == "cls":
        return hidden[:, 0, :]
    if mode == "max":
        return np.where(mask[:, :, None] > 0, hidden, -np.inf).max(axis=1)
    if mode == "lasttoken":
        last = np.maximum(mask.sum(axis=1).astype(np.int64) - 1, 0)
        return hidden[np.arange(hidden.shape[0]), last] * mask[np.arange(hidden.shape[0]), last][:, None]
    if mode == "weightedmean":
        weights = mask * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :]
        summed = np.matmul(weights[:, None, :], hidden)[:, 0, :]
        return summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    summed = np.matmul(mask[:, None, :], hidden)[:, 0, :]  # BLAS, not a [b, s, h] temporary
    count = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
    return summed / (np.sqrt(count) if mode == "mean_sqrt_len_tokens" else count)


def open_model(
    onnx_path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    threads: int | None = None,
    providers: list[str] | None = None,
) -> TaskModel:
    """The task model for a graph and a tokenizer.json, without a manifest (pipeline, benchmarks)."""
    if not isinstance(spec, ModelSpec):
        raise BundleError(f"spec is a {type(spec).__name__}; "
                          "expected a ModelSpec (ModelSpec.from_dict reads a manifest's)")
    from edgegolf.runtime.registry import task_names

    cls = model_class(spec.task)
    if cls is None:
        raise BundleError(f"task {spec.task!r} has no runtime model; this runtime runs {sorted(task_names())} "
                          "(a plugin's task needs its module imported, or EDGEGOLF_PLUGINS for the command line)")
    encoder = make_tokenizer(tokenizer_path, spec)
    session = create_session(onnx_path, threads=threads, providers=providers)
    model = cls(session, encoder, spec)
    log.debug("opened %r from %s", model, Path(onnx_path).name)
    return model

