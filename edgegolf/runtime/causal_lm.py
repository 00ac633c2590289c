"""causal-lm bundles: score text (perplexity, bits per byte) and generate token by token.

    model = load("out/")
    model.score(["held-out text ..."]).bits_per_byte
    model.generate("The economy", max_new_tokens=20).text
    model.generate(["Shares in", "Oil prices"], stop=["."])      # a batch of prompts
    for piece in model.stream("Hi!", chat=True): ...              # text pieces, chat template applied

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from edgegolf.errors import BundleError, InputError
from edgegolf.runtime.models import TaskModel
from edgegolf.runtime.registry import runtime_model
from edgegolf.runtime.textstream import TextStream
from edgegolf.runtime.tokenize import check_texts

# logits_of(ids [n]) -> float logits [n, vocab]: the model applied to one window of token ids
LogitsOf = Callable[[np.ndarray], np.ndarray]
# logits_many([ids [n_i], ...]) -> [logits [n_i, vocab], ...]: several windows in one run
LogitsMany = Callable[[list[np.ndarray]], list[np.ndarray]]
SCORE_BATCH = 8  # windows per graph run when scoring


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


def score_windows(length: int, window: int) -> list[tuple[int, int, int]]:
    """(begin, end, first target) of each window over `length` token ids: every position after the
    first is a target exactly once, with half a window of context once the text is longer than one."""
    if window < 2:
        raise BundleError(f"scoring window is {window} tokens; at least 2 are needed")
    stride = max(1, window // 2)
    windows, done, begin = [], 1, 0  # done: the first position not yet scored (0 has no context)
    while length >= 2:
        end = min(begin + window, length)
        if end > max(done, begin + 1):
            windows.append((begin, end, max(done, begin + 1)))
        done = end
        if end == length:
            break
        begin += stride
    return windows


def score_text(text: str, tokenizer: Tokenizer, logits_of: LogitsOf, window: int, *,
               max_tokens: int | None = None, logits_many: LogitsMany | None = None) -> LMScore:
    """Sliding-window score of one text; `tokenizer` must not truncate (see `untruncated`).

    `max_tokens` caps the predicted tokens (the first ones of the text; the bytes are those they
    cover); `logits_many` runs several windows at once (each window's result must not depend on
    the others', e.g. right padding under a causal mask), else `logits_of` runs them one by one.
    """
    encoding = tokenizer.encode(text)
    ids = np.asarray(encoding.ids, dtype=np.int64)
    if max_tokens is not None:
        ids = ids[: max(0, max_tokens) + 1]
    windows = score_windows(len(ids), window)
    if not windows:
        return LMScore()
    chunks = [ids[b:e] for b, e, _ in windows]
    all_logits = logits_many(chunks) if logits_many is not None else [logits_of(c) for c in chunks]
    nll, correct = 0.0, 0
    for (begin, end, first), logits in zip(windows, all_logits, strict=True):
        targets = np.arange(first, end)
        rows = np.asarray(logits, dtype=np.float64)[targets - 1 - begin]
        top = rows.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
        nll += float(np.sum(log_norm - rows[np.arange(len(targets)), ids[targets]]))
        correct += int(np.sum(rows.argmax(axis=1) == ids[targets]))
    start_char = encoding.offsets[1][0]  # the text before the first predicted token is not scored
    end_char = len(text) if len(ids) == len(encoding.ids) else encoding.offsets[len(ids) - 1][1]
    return LMScore(nll, len(ids) - 1, len(text[start_char:end_char].encode("utf-8")), correct)


@dataclass(frozen=True)
class Generation:
    text: str  # the generated continuation (without the prompt), cut before a stop string
    token_ids: list[int]  # its token ids (an end-of-text token that ended it included)
    prompt_ids: list[int]  # the prompt as the model saw it (after any left truncation)
    finish_reason: str = "length"  # "length" (max_new_tokens), "eos" (an end-of-text token) or "stop" (a stop string)


Prompt = str | Sequence[Mapping[str, Any]]  # a text, or with chat=True a conversation ({"role", "content"} dicts)


@runtime_model
class CausalLM(TaskModel):
    """causal-lm: `score` texts; `generate` / `stream` continuations with the key/value cache.

        lm.generate("The economy", max_new_tokens=20).text
        lm.generate(["Shares in", "Oil prices"], stop=["."])       # a batch: one Generation each
        for piece in lm.stream("Hello", chat=True): print(piece, end="")

    A batch is left-padded (positions come from the attention mask inside the graph). Under
    dynamic int8 quantization activations are scaled per run, so a prompt's tokens can differ
    between a batch and running it alone; at fp32 and weight-only int4 they do not.
    """

    task = "causal-lm"
    methods = ".score(), .generate() or .stream()"

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
        eos = extra.get("eos_token_ids", extra.get("eos_token_id"))
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_token_ids: frozenset[int] = frozenset(int(e) for e in eos_ids)
        self.eos_token_id = int(eos_ids[0]) if eos_ids else None
        self.chat_template: str | None = extra.get("chat_template")  # the tokenizer's, when it has one
        self._tokenizer = untruncated(encoder.tokenizer)
        self._all_outputs = [self.spec.output_names[0], *self._present]

    @property
    def text_tokenizer(self) -> Tokenizer:
        """The tokenizer without truncation or padding that scoring and generation use."""
        return self._tokenizer

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        heads, dim = self._cache_dims
        return {name: np.zeros((batch, heads, 0, dim), dtype=np.float32) for name in self._past}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The logits for text feeds from `encode` (an empty cache is added), or for feeds that carry
        a cache too (one decode step: past.* from a prefill); the presents are not returned."""
        if isinstance(feeds, dict) and set(feeds) == set(self.spec.input_names):
            return self.session.run(self._output_names, {**feeds, **self._empty_past(feeds["input_ids"].shape[0])})
        if isinstance(feeds, dict) and set(feeds) == {*self.spec.input_names, *self._past}:
            return self.session.run(self._output_names, feeds)
        return super().run(feeds)

    def _logits_of(self, ids: np.ndarray) -> np.ndarray:
        return self._logits_many([ids])[0]

    def _logits_many(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Logits of each window, SCORE_BATCH at a time, right-padded (causal: padding after a
        token cannot change its logits)."""
        found: list[np.ndarray] = []
        for at in range(0, len(windows), SCORE_BATCH):
            group = windows[at:at + SCORE_BATCH]
            width = max(len(w) for w in group)
            ids = np.zeros((len(group), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, window in enumerate(group):
                ids[row, :len(window)], mask[row, :len(window)] = window, 1
            logits = self.session.run(self._output_names[:1], {"input_ids": ids, "attention_mask": mask,
                                                               **self._empty_past(len(group))})[0]
            found += [logits[row, :len(window)] for row, window in enumerate(group)]
        return found

    def prefill(self, ids: Sequence[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run prompt token ids on an empty cache: (float64 next-token logits, the cache state)."""
        feeds = {"input_ids": np.asarray([ids], dtype=np.int64),
                 "attention_mask": np.ones((1, len(ids)), dtype=np.int64), **self._empty_past(1)}
        logits, state = self._advance(feeds)
        return logits[0], state

    def step(self, token: int, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Feed one token after `state` (from `prefill` or `step`, left unchanged): one token's compute."""
        total = next(iter(state.values())).shape[2] + 1
        feeds = {"input_ids": np.asarray([[token]], dtype=np.int64),
                 "attention_mask": np.ones((1, total), dtype=np.int64), **state}
        logits, state = self._advance(feeds)
        return logits[0], state

    def _advance(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(float64 last-position logits [batch, vocab], the new cache)."""
        logits, *present = self.session.run(self._all_outputs, feeds)
        return np.asarray(logits[:, -1], dtype=np.float64), dict(zip(self._past, present, strict=True))

    def score_one(self, text: str, *, max_tokens: int | None = None) -> LMScore:
        """One text's score (its first `max_tokens` predicted tokens when given), windows run in batches."""
        return score_text(text, self._tokenizer, self._logits_of, self.spec.max_length, max_tokens=max_tokens,
                          logits_many=self._logits_many)

    def score(self, texts: Sequence[str]) -> LMScore:
        """Summed score of the texts (each scored on its own, with sliding windows)."""
        total = LMScore()
        for text in check_texts(texts):
            total = total + self.score_one(text)
        return total

    # --- generation -----------------------------------------------------------------------
    def apply_chat_template(self, messages: Prompt, *, add_generation_prompt: bool = True) -> str:
        """The prompt text of a conversation under the tokenizer's chat template (needs jinja2: the 'chat' extra)."""
        from edgegolf.runtime.chat import render_chat

        if not self.chat_template:
            raise InputError("this bundle's tokenizer has no chat template (tokenizer_config.json chat_template); "
                             "pass plain prompts (chat=False)")
        special = self.spec.extra
        return render_chat(self.chat_template, messages, bos_token=str(special.get("bos_token") or ""),
                           eos_token=str(special.get("eos_token") or ""),
                           add_generation_prompt=add_generation_prompt)

    def generate(self, prompt: Prompt | Sequence[Prompt], *, max_new_tokens: int = 32, greedy: bool = True,
                 temperature: float = 1.0, seed: int | None = None, stop_at_eos: bool = True,
                 stop: Sequence[str] = (), chat: bool = False) -> Any:
        """Continue `prompt` token by token with the cache: greedy (argmax), or sampled at `temperature`.

        A list of prompts is one left-padded batch and gives a list of Generations. Generation ends
        at max_new_tokens, at an end-of-text token (`stop_at_eos`) or when the text contains one of
        the `stop` strings (the text is cut before it). `chat`: render each prompt (a str is one user
        message) with the tokenizer's chat template first. A prompt too long for max_length together
        with the new tokens keeps its last tokens.
        """
        single = self._is_single(prompt, chat)
        prompts = [prompt] if single else list(prompt)
        streams = self._generate(prompts, max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature,
                                 seed=seed, stop_at_eos=stop_at_eos, stop=stop, chat=chat)
        for _ in streams:
            pass
        results = streams.results
        return results[0] if single else results

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 32, greedy: bool = True, temperature: float = 1.0,
               seed: int | None = None, stop_at_eos: bool = True, stop: Sequence[str] = (),
               chat: bool = False) -> Iterator[str]:
        """`generate` of one prompt as an iterator of text pieces; joined, they are `generate(...).text`."""
        if not self._is_single(prompt, chat):
            raise InputError("stream takes one prompt; pass a str (or, with chat=True, one conversation), or use "
                             "generate for a batch")
        run = self._generate([prompt], max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature,
                             seed=seed, stop_at_eos=stop_at_eos, stop=stop, chat=chat)
        for pieces in run:
            if pieces[0]:
                yield pieces[0]

    @staticmethod
    def _is_single(prompt: Any, chat: bool) -> bool:
        if isinstance(prompt, str):
            return True
        if isinstance(prompt, Sequence) and prompt:
            if chat and all(isinstance(m, Mapping) for m in prompt):
                return True  # one conversation
            return False
        raise InputError(f"prompt is {prompt!r:.60}; accepted: a str, a non-empty list of str, or with chat=True "
                         "a conversation (list of {'role', 'content'} dicts) or a list of them")

    def _prompt_ids(self, prompts: list[Any], chat: bool, max_new_tokens: int) -> list[list[int]]:
        limit = self.spec.max_length
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens < limit:
            raise InputError(f"max_new_tokens is {max_new_tokens!r}; accepted: an integer from 1 to {limit - 1} "
                             "(max_length - 1)")
        texts = []
        for prompt in prompts:
            if chat:
                texts.append(self.apply_chat_template(prompt))
            elif isinstance(prompt, str):
                texts.append(prompt)
            else:
                raise InputError(f"prompt is a {type(prompt).__name__}; pass a str (or chat=True for conversations)")
        # a chat template writes its own special tokens (e.g. a BOS), so the tokenizer must not add them again
        encoded = [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=not chat)]
        ids = [e[-(limit - max_new_tokens):] for e in encoded]
        if not all(ids):
            raise InputError("a prompt gives no tokens (this tokenizer adds no start token); pass non-empty prompts")
        return ids

    def _generate(self, prompts: list[Any], *, max_new_tokens: int, greedy: bool, temperature: float,
                  seed: int | None, stop_at_eos: bool, stop: Sequence[str], chat: bool) -> _Run:
        if not greedy and not temperature > 0:
            raise InputError(f"temperature is {temperature!r}; accepted: a number > 0")
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise InputError(f"stop is {stop!r:.60}; accepted: a list of non-empty strings, e.g. ['\\n\\n']")
        ids = self._prompt_ids(prompts, chat, max_new_tokens)
        return _Run(self, ids, max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature,
                    rng=np.random.default_rng(seed), eos=self.eos_token_ids if stop_at_eos else frozenset(),
                    stop=list(stop))


class _Run:
    """One generation over a left-padded batch: iterate for each step's text pieces (one per prompt);
    `results` holds the Generations once the iteration ends."""

    def __init__(self, lm: CausalLM, prompt_ids: list[list[int]], *, max_new_tokens: int, greedy: bool,
                 temperature: float, rng: np.random.Generator, eos: frozenset[int], stop: list[str]):
        self.lm, self.prompt_ids, self.max_new_tokens = lm, prompt_ids, max_new_tokens
        self.greedy, self.temperature, self.rng, self.eos = greedy, temperature, rng, eos
        self.streams = [TextStream(lm._tokenizer, stop) for _ in prompt_ids]
        self.finish = ["length"] * len(prompt_ids)
        self.results: list[Generation] = []

    def _choose(self, logits: np.ndarray) -> np.ndarray:
        if self.greedy:
            return logits.argmax(axis=1)
        p = np.exp((logits - logits.max(axis=1, keepdims=True)) / self.temperature)
        p /= p.sum(axis=1, keepdims=True)
        return np.array([self.rng.choice(p.shape[1], p=row) for row in p])

    def __iter__(self) -> Iterator[list[str]]:
        width = max(len(p) for p in self.prompt_ids)
        ids = np.zeros((len(self.prompt_ids), width), dtype=np.int64)  # padding ids are masked out
        mask = np.zeros_like(ids)
        for row, prompt in enumerate(self.prompt_ids):
            ids[row, width - len(prompt):], mask[row, width - len(prompt):] = prompt, 1
        logits, state = self.lm._advance({"input_ids": ids, "attention_mask": mask, **self.lm._empty_past(len(ids))})
        live = [True] * len(self.prompt_ids)
        for count in range(1, self.max_new_tokens + 1):
            tokens = self._choose(logits)
            pieces = []
            for row, stream in enumerate(self.streams):
                if not live[row]:
                    pieces.append("")
                    continue
                token = int(tokens[row])
                piece = stream.add(token)
                if stream.stopped:
                    self.finish[row], live[row] = "stop", False
                elif token in self.eos:
                    self.finish[row], live[row] = "eos", False
                if not live[row] or count == self.max_new_tokens:
                    piece += stream.finish()
                    live[row] = False
                pieces.append(piece)
            yield pieces
            if not any(live):
                break
            mask = np.concatenate([mask, np.ones((len(mask), 1), dtype=np.int64)], axis=1)
            logits, state = self.lm._advance({"input_ids": tokens[:, None].astype(np.int64), "attention_mask": mask,
                                              **state})
        self.results = [Generation(s.text, s.ids, p, f)
                        for s, p, f in zip(self.streams, self.prompt_ids, self.finish, strict=True)]
