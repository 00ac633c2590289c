"""Text to graph feeds, the same way for the app, the pipeline and the benchmarks.

The bundle's tokenizer.json may carry its own truncation and padding (all-MiniLM-L6-v2's
pads every input to 128 tokens); the spec's policy replaces them. Each configured
`tokenizers.Tokenizer` is set up once and never changed afterwards: encoding only reads it,
so many threads can share it without a lock (tests/test_runtime_threads.py checks this).
Padding is done here in numpy, which lets one tokenizer serve both "pad to the longest" and
"pad to exactly N".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edgegolf.errors import BundleError, InputError
from edgegolf.runtime.spec import ModelSpec

# what each graph input is made of; a graph input outside this table cannot be fed
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
# tokenizers kept for pad_to lengths (a MiniLM tokenizer holds a few MB); others are built per call
_MAX_CACHED = 8


def check_texts(texts: object) -> list[str]:
    """The texts as a list, or InputError naming what is wrong with them."""
    if isinstance(texts, (str, bytes)):
        raise InputError(f"texts is a single {type(texts).__name__} ({texts[:40]!r}); "
                         "pass a list of strings, e.g. [text]")
    if not isinstance(texts, Iterable):
        raise InputError(f"texts is a {type(texts).__name__}; pass a list of strings")
    items = list(texts)
    if not items:
        raise InputError("texts is empty; pass at least one string")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is a {type(text).__name__} ({text!r:.40}); every item must be a str")
    return items


def check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size is {batch_size!r}; accepted: a positive integer")
    return batch_size


class TextEncoder:
    """A tokenizer with the spec's truncation; `encode` returns the int64 feeds of a batch.

    Takes ownership of `tokenizer`: it is reconfigured here, and must not be changed after.
    """

    def __init__(self, tokenizer: Tokenizer, spec: ModelSpec, *, name: str = "tokenizer"):
        unknown = [n for n in spec.input_names if n not in _FIELDS]
        if unknown:
            raise BundleError(f"the graph takes inputs {unknown} this runtime cannot make from text; "
                              f"it feeds {list(_FIELDS)}")
        pad_id = tokenizer.token_to_id(spec.pad_token)
        if pad_id is not None and pad_id != spec.pad_token_id:
            raise BundleError(
                f"{name} maps pad token {spec.pad_token!r} to id {pad_id}, but the manifest says {spec.pad_token_id}"
            )
        # tokenizers silently skips truncation below the special tokens it adds ([CLS] [SEP])
        self.min_length = max(1, tokenizer.num_special_tokens_to_add(False))
        if spec.max_length < self.min_length:
            raise BundleError(
                f"manifest max_length is {spec.max_length}; {name} adds {self.min_length} special tokens, "
                "so at least that many"
            )
        self.spec = spec
        self._lock = threading.Lock()  # guards only the creation of a tokenizer for a new length
        tokenizer.no_padding()
        tokenizer.enable_truncation(spec.max_length)
        self.tokenizer = tokenizer
        self._by_length: dict[int, Tokenizer] = {spec.max_length: tokenizer}
        # (graph input, Encoding attribute) pairs, in the graph's input order
        self._fields = [(n, _FIELDS[n]) for n in spec.input_names]

    def _truncating(self, length: int) -> Tokenizer:
        tokenizer = self._by_length.get(length)
        if tokenizer is None:
            with self._lock:
                tokenizer = self._by_length.get(length)
                if tokenizer is None:
                    tokenizer = Tokenizer.from_str(self.tokenizer.to_str())  # a copy: the shared one stays as is
                    tokenizer.enable_truncation(length)
                    if len(self._by_length) < _MAX_CACHED:
                        self._by_length[length] = tokenizer
        return tokenizer

    def encode(self, texts: list[str], *, pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Int64 [batch, seq] arrays for exactly spec.input_names.

        Truncates at spec.max_length (or pad_to if smaller); pads to the longest row, or to
        exactly pad_to tokens.
        """
        texts = check_texts(texts)
        length = self.spec.max_length
        if pad_to is not None:
            fits = isinstance(pad_to, int) and not isinstance(pad_to, bool) \
                and self.min_length <= pad_to <= self.spec.max_length
            if not fits:
                raise InputError(
                    f"pad_to is {pad_to!r}; accepted: None or an integer from {self.min_length} "
                    f"to max_length {self.spec.max_length}"
                )
            length = pad_to
        # encode_batch_fast skips character offsets, which no graph needs
        encodings = self._truncating(length).encode_batch_fast(texts)
        longest = max(len(e.ids) for e in encodings)
        if longest > length:  # never feed the graph more tokens than the bundle allows
            raise BundleError(f"the tokenizer gave {longest} tokens where it was set to truncate at {length}")
        width = pad_to if pad_to is not None else longest
        feeds = {}
        for name, field in self._fields:
            fill = self.spec.pad_token_id if name == "input_ids" else 0
            array = np.full((len(encodings), width), fill, dtype=np.int64)
            for row, encoding in enumerate(encodings):
                values = getattr(encoding, field)
                array[row, : len(values)] = values
            feeds[name] = array
        return feeds


def make_tokenizer(tokenizer_path: str | os.PathLike[str], spec: ModelSpec) -> TextEncoder:
    """The spec's tokenization of the tokenizer.json at `tokenizer_path`."""
    path = Path(tokenizer_path)
    if not path.is_file():
        raise BundleError(f"tokenizer file {str(path)!r} does not exist")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        first = str(exc).splitlines()[0] if str(exc) else exc
        raise BundleError(f"{path.name} is not a tokenizers tokenizer.json file: {first!r}") from None
    return TextEncoder(tokenizer, spec, name=path.name)
