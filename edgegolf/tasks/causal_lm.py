"""causal-lm: next-token language models (LLaMA family, GPT-2, ...).

Scored on the held-out texts by bits per byte (the metric of size-constrained LM contests:
comparable across tokenizers), perplexity, and next-token top-1 accuracy, which is the
"accuracy" a budget's drop limits. Each text's row is (nll, tokens, bytes, correct), summed
over the test texts, teacher and artifacts alike through `edgegolf.runtime.causal_lm.score_text`.

Data: BBC News by default, or `--data FILE.txt`: the file's paragraphs (blank-line separated)
grouped into chunks of at least CHUNK_CHARS characters; the last test_fraction of the chunks
is held out, the rest is the train split (calibration, distillation).

Budget: scoring costs tokens, not texts, so `evaluate.limit` (`--eval-limit`) is for this task
the number of scored tokens (unset: DEFAULT_TOKEN_BUDGET; 0: every held-out token). The held-out texts are taken in order
until the budget is spent, the last one cut at a token end (see `TokenBudget`); every model
scores the same cut texts, so their bytes match. Bits/byte comes with a 95% interval from a
seeded bootstrap over the scored texts (paired for the increase over the teacher).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, replace
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
from edgegolf.runtime.causal_lm import SCORE_BATCH, LMScore, score_text, untruncated
from edgegolf.runtime.causal_lm import CausalLM as CausalLMModel
from edgegolf.runtime.models import TaskModel
from edgegolf.runtime.spec import ModelSpec
from edgegolf.runtime.tokenize import TextEncoder
from edgegolf.tasks.base import TaskAdapter
from edgegolf.tasks.losses import HIDDEN_SEQUENCE_DIMS
from edgegolf.tasks.registry import register_task

CHUNK_CHARS = 2000
DEFAULT_TOKEN_BUDGET = 32_768  # scored tokens when evaluate.limit is unset: a 135M model scores them in minutes
# The held-out texts are cut to about this many characters per budgeted token before any tokenizer
# is known (English BPE runs about 4 characters a token); the exact cut is made in tokens later.
CHARS_PER_TOKEN_BOUND = 12
MIN_TEXTS = 16  # the budget is spread over at least this many texts, so the bootstrap interval has texts to resample
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
TEXT_LABEL = "text"  # text files carry no classes: every chunk gets this label


@register_task
class CausalLM(TaskAdapter):
    runtime_model = CausalLMModel
    accuracy_meaning = "next-token top-1 accuracy of the held-out text"
    auto_class = "AutoModelForCausalLM"
    output_names = ("logits",)
    scores_train = False  # only the held-out texts are scored
    default_eval_limit = DEFAULT_TOKEN_BUDGET  # evaluate.limit counts scored tokens here
    optimizable = False  # not onnxruntime's optimizer: LLaMA/Qwen2 get edgegolf/export/llm_graph.py's fused graph

    @classmethod
    def claims(cls, architecture: str) -> bool:
        return architecture.endswith(("ForCausalLM", "LMHeadModel"))

    budget: TokenBudget | None = None  # set only on the adapter for_split binds to a split

    # --- data ---------------------------------------------------------------------------
    def load_split(self, settings) -> BudgetedSplit:
        """The texts of `settings.data`, the held-out ones cut to the token budget (`settings.limit`),
        which the split carries: splits of other limits may be loaded before or after it."""
        limit = self.eval_limit(settings)
        budget = TokenBudget(limit if limit else sys.maxsize)  # 0: every held-out token
        split = self._whole_split(settings)
        return BudgetedSplit(split.train, budget.texts_for(split.test), budget)

    def for_split(self, split: Split) -> CausalLM:
        """This adapter with `split`'s token budget: its teacher_item and artifact_item cut each
        text as that budget says (a split without one: every text whole)."""
        bound = copy.copy(self)
        bound.budget = split.budget if isinstance(split, BudgetedSplit) else None
        return bound

    def _whole_split(self, settings) -> Split:
        path = Path(str(settings.data)).expanduser()
        if path.suffix.lower() != ".txt":
            return super().load_split(replace(settings, limit=0))  # the limit counts tokens here, not texts
        if not path.is_file():
            raise DataError(f"data {str(settings.data)!r} does not exist; give a UTF-8 .txt file or 'bbc-news'")
        chunks = text_chunks(path.read_text(encoding="utf-8", errors="replace"))
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
        spec = super().model_spec(model, tokenizer, input_names, max_length)
        # what the runtime's chat prompts and stopping need from the tokenizer (it reads no tokenizer_config.json)
        template = getattr(tokenizer, "chat_template", None)
        eos_ids = set(spec.extra.get("eos_token_ids") or [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(int(tokenizer.eos_token_id))
        chat = {"chat_template": template if isinstance(template, str) else None,
                "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "eos_token_ids": sorted(eos_ids)}
        return replace(spec, extra={**spec.extra, **chat})

    def spec_fields(self, model) -> dict[str, Any]:
        layers, kv_heads, head_dim = cache_shape(model.config)
        past, present = cache_names(layers)
        eos = getattr(model.config, "eos_token_id", None)
        eos_ids = [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [] if eos is None else [int(eos)]
        generation = getattr(model, "generation_config", None)  # instruct models end a turn with their own token
        more = getattr(generation, "eos_token_id", None)
        eos_ids += [int(e) for e in more] if isinstance(more, (list, tuple)) else [] if more is None else [int(more)]
        return {"extra": {"past_inputs": past, "present_outputs": present, "kv_heads": kv_heads,
                          "head_dim": head_dim, "eos_token_id": eos_ids[0] if eos_ids else None,
                          "eos_token_ids": sorted(set(eos_ids))}}

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
        text, cap = self._budgeted(tokenizer, text)

        def logits_many(windows: list[np.ndarray]) -> list[np.ndarray]:
            # right-padded like the runtime's batches; causal attention keeps each window's logits its own
            width = max(len(w) for w in windows)
            ids = torch.zeros((len(windows), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, window in enumerate(windows):
                ids[row, :len(window)], mask[row, :len(window)] = torch.from_numpy(window), 1
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask).logits.float().numpy()
            return [logits[row, :len(window)] for row, window in enumerate(windows)]

        def batched(windows: list[np.ndarray]) -> list[np.ndarray]:
            return [out for at in range(0, len(windows), SCORE_BATCH)
                    for out in logits_many(windows[at:at + SCORE_BATCH])]

        return score_text(text, tokenizer, lambda ids: batched([ids])[0], encoder.spec.max_length, max_tokens=cap,
                          logits_many=batched).to_row()

    def artifact_item(self, runtime_model: TaskModel, text: str) -> np.ndarray:
        text, cap = self._budgeted(runtime_model.text_tokenizer, text)
        return runtime_model.score_one(text, max_tokens=cap).to_row()

    def _budgeted(self, tokenizer, text: str) -> tuple[str, int | None]:
        return (text, None) if self.budget is None else self.budget.cut(tokenizer, text)

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
        from edgegolf.tasks.losses import soft_kl, with_hidden_term

        real = attention_mask.bool()
        kl = soft_kl(student["token_logits"][real], teacher["token_logits"][real], config.temperature)
        parts = {"kl": float(kl.detach())}
        loss = kl
        return with_hidden_term(loss, parts, student, teacher, attention_mask, config.hidden_weight)

    # --- scoring ------------------------------------------------------------------------
    def score(self, teacher, candidate, split: Split, model_config) -> dict[str, float]:
        mine, theirs = LMScore.from_rows(candidate.test), LMScore.from_rows(teacher.test)
        low, high = bits_per_byte_interval(candidate.test)
        increase_low, increase_high = bits_per_byte_interval(candidate.test, teacher.test)
        budget = split.budget if isinstance(split, BudgetedSplit) else None
        spent_budget = float("nan") if budget is None else float(budget.tokens)
        if budget is not None and budget.tokens == sys.maxsize:  # evaluate.limit 0: every held-out token
            spent_budget = float(mine.tokens)
        return {
            "accuracy": 100.0 * mine.accuracy,  # next-token top-1
            "bits_per_byte": mine.bits_per_byte,
            "perplexity": mine.perplexity,
            "bits_per_token": mine.bits_per_token,
            "bits_per_byte_increase": mine.bits_per_byte - theirs.bits_per_byte,
            "scored_tokens": float(mine.tokens),
            "scored_bytes": float(mine.bytes),
            "scored_texts": float(np.count_nonzero(np.asarray(candidate.test).reshape(-1, 4)[:, 1])),
            "token_budget": spent_budget,
            "bits_per_byte_ci_low": low,  # 95% bootstrap interval over the scored texts
            "bits_per_byte_ci_high": high,
            "bits_per_byte_increase_ci_low": increase_low,  # paired: the same resampled texts for both
            "bits_per_byte_increase_ci_high": increase_high,
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


@dataclass(frozen=True)
class BudgetedSplit(Split):
    """A split whose held-out texts are scored under `budget` (what load_split cut them for)."""

    budget: TokenBudget


class TokenBudget:
    """At most `tokens` scored tokens over the held-out texts, taken in order, no text more than
    1/MIN_TEXTS of them (an interval over texts needs texts).

    `texts_for` keeps the texts that can hold the budget (a character bound: no tokenizer is known
    yet); `cut` then gives each text its exact share in the first tokenizer's tokens, as a cut text
    (the same for every later model, so all score the same bytes) and a token cap (so the budget
    holds even where another tokenizer splits the cut text into more tokens).
    """

    def __init__(self, tokens: int):
        self.tokens = tokens
        self._texts: tuple[str, ...] = ()
        self._plan: dict[str, tuple[str, int]] | None = None

    def texts_for(self, test: LabelledTexts) -> LabelledTexts:
        keep, chars, seen = [], 0, set()
        for index, text in enumerate(test.texts):
            if chars >= self.tokens * CHARS_PER_TOKEN_BOUND and len(keep) >= MIN_TEXTS:
                break
            if text not in seen:  # a repeated text would be budgeted once and scored twice
                seen.add(text)
                keep.append(index)
                chars += len(text)
        self._texts = tuple(test.texts[i] for i in keep)
        self._plan = None
        return LabelledTexts(self._texts, tuple(test.labels[i] for i in keep), test.source)

    def cut(self, tokenizer, text: str) -> tuple[str, int]:
        if self._plan is None:
            self._plan = self._make_plan(tokenizer)
        if text not in self._plan:  # a text outside the split (a direct call): its own budget
            return text, self.tokens
        return self._plan[text]

    def _make_plan(self, tokenizer) -> dict[str, tuple[str, int]]:
        plan, left = {}, self.tokens
        share = -(-self.tokens // MIN_TEXTS)  # ceil: MIN_TEXTS texts spend the whole budget
        for text in self._texts:
            encoding = tokenizer.encode(text)
            predicted = max(0, len(encoding.ids) - 1)
            take = min(left, share)
            if predicted <= take:
                plan[text] = (text, predicted)
            elif take > 0:
                plan[text] = (text[:encoding.offsets[take][1]], take)
            else:
                plan[text] = ("", 0)
            left -= min(take, predicted)
        return plan


def bits_per_byte_interval(rows: np.ndarray, reference: np.ndarray | None = None, *,
                           resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile-bootstrap interval of bits/byte over texts (rows of (nll, tokens, bytes, correct));
    with `reference` (the teacher's rows of the same texts), of the increase over it, texts paired."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    scored = rows[:, 2] > 0
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float64).reshape(-1, 4)
        scored &= reference[:, 2] > 0
    if not scored.any():
        return float("nan"), float("nan")
    picks = np.random.default_rng(seed).integers(0, int(scored.sum()), size=(resamples, int(scored.sum())))

    def bpb(table: np.ndarray) -> np.ndarray:
        chosen = table[scored][picks]  # [resamples, texts, 4]
        return chosen[..., 0].sum(axis=1) / np.log(2) / chosen[..., 2].sum(axis=1)

    values = bpb(rows) - (bpb(reference) if reference is not None else 0.0)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
