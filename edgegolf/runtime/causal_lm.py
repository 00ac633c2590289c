"""causal-lm bundles: score text (perplexity, bits per byte) and generate token by token.

    model = load("out/")
    model.score(["held-out text ..."]).bits_per_byte
    model.generate("The economy", max_new_tokens=20).text

The graph (edgegolf/export/causal.py) takes input_ids, attention_mask and a key/value cache
(past.{i}.key/value) and gives logits and the grown cache (present.{i}.key/value). Scoring
and the prompt feed an empty cache; each generation step feeds one token and the last
presents, so a step costs one token's compute, not the whole prefix's.

Scoring slides a window of spec.max_length tokens over the text, advancing by half a window:
every token after the first is predicted once, with at least half a window of context once the
text is longer than one window. Bits per byte = the summed negative log-likelihood in bits /
the UTF-8 bytes of the text those tokens cover (from the first predicted token on; with a
BOS token that is the whole text), so models with different tokenizers compare fairly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from edgegolf.errors import BundleError, InputError
from edgegolf.runtime.models import TaskModel
from edgegolf.runtime.registry import runtime_model
from edgegolf.runtime.tokenize import check_texts

# logits_of(ids [n]) -> float logits [n, vocab]: the model applied to one window of token ids
LogitsOf = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LMScore:
    """Summed results over scored tokens; add scores of several texts with `+`."""

    nll: float = 0.0  # negative log-likelihood, nats, summed over scored tokens
    tokens: int = 0  # tokens predicted
    bytes: int = 0  # UTF-8 bytes of the text those tokens cover
    correct: int = 0  # tokens the model ranked first

    def __add__(self, other: LMScore) -> LMScore:
        return LMScore(self.nll + other.nll, self.tokens + other.tokens, self.bytes + other.bytes,
                       self.correct + other.correct)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes if self.bytes else float("nan")

    @property
    def bits_per_token(self) -> float:
        return self.nll / math.log(2) / self.tokens if self.tokens else float("nan")

    @property
    def accuracy(self) -> float:
        """Share (0-1) of tokens whose most likely prediction was right."""
        return self.correct / self.tokens if self.tokens else float("nan")

    def to_row(self) -> np.ndarray:
        return np.array([self.nll, self.tokens, self.bytes, self.correct], dtype=np.float64)

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> LMScore:
        nll, tokens, nbytes, correct = np.asarray(rows, dtype=np.float64).reshape(-1, 4).sum(axis=0)
        return cls(float(nll), int(tokens), int(nbytes), int(correct))


def untruncated(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of `tokenizer` that neither truncates nor pads (scoring windows long texts itself)."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def score_text(text: str, tokenizer: Tokenizer, logits_of: LogitsOf, window: int) -> LMScore:
    """Sliding-window score of one text; `tokenizer` must not truncate (see `untruncated`)."""
    if window < 2:
        raise BundleError(f"scoring window is {window} tokens; at least 2 are needed")
    encoding = tokenizer.encode(text)
    ids = np.asarray(encoding.ids, dtype=np.int64)
    if len(ids) < 2:
        return LMScore()
    stride = max(1, window // 2)
    nll, correct, done, begin = 0.0, 0, 1, 0  # done: the first position not yet scored (0 has no context)
    while True:
        end = min(begin + window, len(ids))
        targets = np.arange(max(done, begin + 1), end)
        if len(targets):
            logits = np.asarray(logits_of(ids[begin:end]), dtype=np.float64)[targets - 1 - begin]
            top = logits.max(axis=1, keepdims=True)
            log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
            nll += float(np.sum(log_norm - logits[np.arange(len(targets)), ids[targets]]))
            correct += int(np.sum(logits.argmax(axis=1) == ids[targets]))
        done = end
        if end == len(ids):
            break
        begin += stride
    start_char = encoding.offsets[1][0]  # the text before the first predicted token is not scored
    return LMScore(nll, len(ids) - 1, len(text[start_char:].encode("utf-8")), correct)


@dataclass(frozen=True)
class Generation:
    text: str  # the generated continuation (without the prompt)
    token_ids: list[int]  # its token ids
    prompt_ids: list[int]  # the prompt as the model saw it (after any left truncation)


@runtime_model
class CausalLM(TaskModel):
    """causal-lm: `score` texts and `generate` continuations with the key/value cache."""

    task = "causal-lm"
    methods = ".score() or .generate()"

    def __init__(self, session, encoder, spec, *, manifest=None):
        super().__init__(session, encoder, spec, manifest=manifest)
        extra = spec.extra
        try:
            self._past = list(extra["past_inputs"])
            self._present = list(extra["present_outputs"])
            self._cache_dims = (int(extra["kv_heads"]), int(extra["head_dim"]))
        except (KeyError, TypeError, ValueError):
            raise BundleError("a causal-lm manifest needs extra.past_inputs, present_outputs, kv_heads and "
                              "head_dim") from None
        eos = extra.get("eos_token_id")
        self.eos_token_id = int(eos) if eos is not None else None
        self._tokenizer = untruncated(encoder.tokenizer)
        self._all_outputs = [self.spec.output_names[0], *self._present]

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        heads, dim = self._cache_dims
        return {name: np.zeros((batch, heads, 0, dim), dtype=np.float32) for name in self._past}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The logits for text feeds from `encode` (an empty cache is added)."""
        if isinstance(feeds, dict) and set(feeds) == set(self.spec.input_names):
            return self.session.run(self._output_names, {**feeds, **self._empty_past(feeds["input_ids"].shape[0])})
        return super().run(feeds)

    def _logits_of(self, ids: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids[None, :], "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
                 **self._empty_past(1)}
        return self.session.run(self._output_names, feeds)[0][0]

    def prefill(self, ids: Sequence[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run prompt token ids on an empty cache: (float64 next-token logits, the cache state)."""
        feeds = {"input_ids": np.asarray([ids], dtype=np.int64),
                 "attention_mask": np.ones((1, len(ids)), dtype=np.int64), **self._empty_past(1)}
        return self._advance(feeds)

    def step(self, token: int, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Feed one token after `state` (from `prefill` or `step`, left unchanged): one token's compute."""
        total = next(iter(state.values())).shape[2] + 1
        feeds = {"input_ids": np.asarray([[token]], dtype=np.int64),
                 "attention_mask": np.ones((1, total), dtype=np.int64), **state}
        return self._advance(feeds)

    def _advance(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        logits, *present = self.session.run(self._all_outputs, feeds)
        return np.asarray(logits[0, -1], dtype=np.float64), dict(zip(self._past, present, strict=True))

    def score_one(self, text: str) -> LMScore:
        return score_text(text, self._tokenizer, self._logits_of, self.spec.max_length)

    def score(self, texts: Sequence[str]) -> LMScore:
        """Summed score of the texts (each scored on its own, with sliding windows)."""
        total = LMScore()
        for text in check_texts(texts):
            total = total + self.score_one(text)
        return total

    def generate(self, prompt: str, *, max_new_tokens: int = 32, greedy: bool = True, temperature: float = 1.0,
                 seed: int | None = None, stop_at_eos: bool = True) -> Generation:
        """Continue `prompt` token by token with the cache: greedy (argmax), or sampled at `temperature`.

        A prompt too long for max_length together with the new tokens keeps its last tokens.
        """
        if not isinstance(prompt, str):
            raise InputError(f"prompt is a {type(prompt).__name__}; pass a str")
        limit = self.spec.max_length
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens < limit:
            raise InputError(f"max_new_tokens is {max_new_tokens!r}; accepted: an integer from 1 to {limit - 1} "
                             "(max_length - 1)")
        if not greedy and not temperature > 0:
            raise InputError(f"temperature is {temperature!r}; accepted: a number > 0")
        ids = self._tokenizer.encode(prompt).ids[-(limit - max_new_tokens):]
        if not ids:
            raise InputError("the prompt gives no tokens (this tokenizer adds no start token); pass a non-empty prompt")
        rng = np.random.default_rng(seed)
        logits, state = self.prefill(ids)
        new: list[int] = []
        while True:
            if greedy:
                token = int(logits.argmax())
            else:
                p = np.exp((logits - logits.max()) / temperature)
                token = int(rng.choice(len(p), p=p / p.sum()))
            new.append(token)
            if len(new) == max_new_tokens or (stop_at_eos and token == self.eos_token_id):
                break
            logits, state = self.step(token, state)
        return Generation(self._tokenizer.decode(new), new, list(ids))
