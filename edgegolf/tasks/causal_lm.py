"""causal-lm: next-token language models (LLaMA family, GPT-2, ...).

Scored on the held-out texts by bits per byte (the metric of size-constrained LM contests:
comparable across tokenizers), perplexity, and next-token top-1 accuracy, which is the
"accuracy" a budget's drop limits. Each text's row is (nll, tokens, bytes, correct), summed
over the test texts, teacher and artifacts alike through `edgegolf.runtime.causal_lm.score_text`.

Data: BBC News by default, or `--data FILE.txt`: the file's paragraphs (blank-line separated)
grouped into chunks of at least CHUNK_CHARS characters; the last test_fraction of the chunks
is held out, the rest is the train split (calibration, distillation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgegolf.data import LabelledTexts, Split
from edgegolf.errors import DataError, SourceError
from edgegolf.export.causal import (
    CausalWithCache,
    cache_names,
    cache_shape,
    export_causal_lm,
    with_cache_feeds,
)
from edgegolf.runtime.causal_lm import CausalLM as CausalLMModel
from edgegolf.runtime.causal_lm import LMScore, score_text, untruncated
from edgegolf.runtime.models import TaskModel
from edgegolf.runtime.spec import ModelSpec
from edgegolf.runtime.tokenize import TextEncoder
from edgegolf.tasks.base import TaskAdapter
from edgegolf.tasks.losses import HIDDEN_SEQUENCE_DIMS
from edgegolf.tasks.registry import register_task

CHUNK_CHARS = 2000
TEXT_LABEL = "text"  # text files carry no classes: every chunk gets this label


@register_task
class CausalLM(TaskAdapter):
    runtime_model = CausalLMModel
    accuracy_meaning = "next-token top-1 accuracy of the held-out text"
    auto_class = "AutoModelForCausalLM"
    output_names = ("logits",)
    scores_train = False  # only the held-out texts are scored
    optimizable = False  # onnxruntime's transformer fusions are not verified on the cached graph: skipped

    @classmethod
    def claims(cls, architecture: str) -> bool:
        return architecture.endswith(("ForCausalLM", "LMHeadModel"))

    # --- data ---------------------------------------------------------------------------
    def load_split(self, settings) -> Split:
        path = Path(str(settings.data)).expanduser()
        if path.suffix.lower() != ".txt":
            return super().load_split(settings)
        if not path.is_file():
            raise DataError(f"data {str(settings.data)!r} does not exist; give a UTF-8 .txt file or 'bbc-news'")
        chunks = text_chunks(path.read_text(encoding="utf-8", errors="replace"))
        if settings.limit:  # the last chunks: the held-out part stays inside the whole file's held-out part
            chunks = chunks[-settings.limit:]
        n_test = max(1, round(len(chunks) * settings.test_fraction))
        if len(chunks) < 2:
            raise DataError(f"data {str(path)!r} gives {len(chunks)} chunk of text; at least 2 (one to hold out) "
                            f"are needed: paragraphs separated by blank lines, {CHUNK_CHARS}+ characters each")
        train, test = chunks[:-n_test], chunks[-n_test:]
        name = str(settings.data)
        return Split(LabelledTexts(tuple(train), (TEXT_LABEL,) * len(train), name),
                     LabelledTexts(tuple(test), (TEXT_LABEL,) * len(test), name))

    # --- loading ------------------------------------------------------------------------
    def input_names(self, model, tokenizer) -> tuple[str, ...]:
        return ("input_ids", "attention_mask")  # never token_type_ids: the cached graph does not take them

    def model_spec(self, model, tokenizer, input_names, max_length: int) -> ModelSpec:
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise SourceError("the tokenizer has neither a padding nor an end-of-text token; edgegolf pads with one")
            tokenizer.pad_token = tokenizer.eos_token  # GPT-2's convention: padding is masked out anyway
        return super().model_spec(model, tokenizer, input_names, max_length)

    def spec_fields(self, model) -> dict[str, Any]:
        layers, kv_heads, head_dim = cache_shape(model.config)
        past, present = cache_names(layers)
        eos = getattr(model.config, "eos_token_id", None)
        eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
        return {"extra": {"past_inputs": past, "present_outputs": present, "kv_heads": kv_heads,
                          "head_dim": head_dim, "eos_token_id": eos}}

    # --- running ------------------------------------------------------------------------
    def export_module(self, model) -> torch.nn.Module:
        return CausalWithCache(model)

    def graph_feeds(self, feeds: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
        return with_cache_feeds(config, feeds)

    def export(self, model, out_path: Path, *, input_names, output_names, sample_feeds, verify_feeds, opset, atol):
        return export_causal_lm(model, out_path, sample_feeds=sample_feeds, verify_feeds=verify_feeds, opset=opset,
                                atol=atol)

    def torch_outputs(self, model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            outputs = CausalWithCache(model)(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask")))
        return [outputs[0].float().numpy()]

    def teacher_item(self, model, encoder: TextEncoder, text: str) -> np.ndarray:
        tokenizer = self._untruncated(encoder)

        def logits_of(ids: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(input_ids=torch.from_numpy(ids[None, :])).logits[0].float().numpy()

        return score_text(text, tokenizer, logits_of, encoder.spec.max_length).to_row()

    def artifact_item(self, runtime_model: TaskModel, text: str) -> np.ndarray:
        return runtime_model.score_one(text).to_row()

    def _untruncated(self, encoder: TextEncoder):
        cached = getattr(self, "_tokenizer_of", None)
        if cached is None or cached[0] is not encoder:
            self._tokenizer_of = (encoder, untruncated(encoder.tokenizer))
        return self._tokenizer_of[1]

    # --- distillation -------------------------------------------------------------------
    distill_sequence_dims = {**HIDDEN_SEQUENCE_DIMS, "token_logits": 1}  # [batch, seq, vocab]

    def distill_view(self, outputs, attention_mask: torch.Tensor, config, layers: list[int] | None
                     ) -> dict[str, torch.Tensor]:
        """What the distillation loss compares: the next-token logits of every position (+ hidden states)."""
        from edgegolf.tasks.losses import mapped_hidden_states

        view = {"token_logits": outputs.logits}
        if layers:
            view["hidden"] = mapped_hidden_states(outputs, layers)
        return view

    def distill_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                     attention_mask: torch.Tensor, config, labels: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        """KL(teacher || student) of the next-token distributions at every real (unpadded) position,
        averaged over tokens; plus hidden_weight x MSE of mapped hidden states when asked.
        Labels carry no signal for a language model and are ignored."""
        from edgegolf.tasks.losses import masked_hidden_mse, soft_kl

        real = attention_mask.bool()
        kl = soft_kl(student["token_logits"][real], teacher["token_logits"][real], config.temperature)
        parts = {"kl": float(kl.detach())}
        loss = kl
        if "hidden" in student and config.hidden_weight > 0:
            hidden = masked_hidden_mse(student["hidden"], teacher["hidden"], attention_mask)
            parts["hidden_mse"] = float(hidden.detach())
            loss = loss + config.hidden_weight * hidden
        return loss, parts

    # --- scoring ------------------------------------------------------------------------
    def score(self, teacher, candidate, split: Split, model_config) -> dict[str, float]:
        mine, theirs = LMScore.from_rows(candidate.test), LMScore.from_rows(teacher.test)
        return {
            "accuracy": 100.0 * mine.accuracy,  # next-token top-1
            "bits_per_byte": mine.bits_per_byte,
            "perplexity": mine.perplexity,
            "bits_per_token": mine.bits_per_token,
            "bits_per_byte_increase": mine.bits_per_byte - theirs.bits_per_byte,
            "scored_tokens": float(mine.tokens),
            "scored_bytes": float(mine.bytes),
        }


def text_chunks(text: str, min_chars: int = CHUNK_CHARS) -> list[str]:
    """Paragraphs (blank-line separated) joined, in order, into chunks of at least `min_chars`."""
    chunks: list[str] = []
    current: list[str] = []
    for paragraph in (p.strip() for p in text.replace("\r\n", "\n").split("\n\n")):
        if paragraph:
            current.append(paragraph)
            if sum(len(p) for p in current) >= min_chars:
                chunks.append("\n\n".join(current))
                current = []
    if current:
        if chunks and sum(len(p) for p in current) < min_chars // 2:
            chunks[-1] += "\n\n" + "\n\n".join(current)  # a short tail joins the last chunk
        else:
            chunks.append("\n\n".join(current))
    return chunks
