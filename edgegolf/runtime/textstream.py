"""Incremental detokenization with stop strings: the text pieces of a growing list of token ids.

Pieces are cut from the decoding of all ids so far, so joined they are exactly the final
decoded text (the non-streamed result). A piece is held back while the decoding ends in an
incomplete UTF-8 sequence (U+FFFD: a multi-byte character split over tokens) and while its
end could be the start of a stop string, so no text after a stop string is ever emitted.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

REPLACEMENT = "\ufffd"  # what a byte-level decoder gives for an incomplete UTF-8 sequence


class TextStream:
    """Feed token ids one at a time (`add`); read the new text piece each time, and `stopped`."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()):
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""  # the decoded text so far, cut before a stop string once one appears
        self.emitted = 0  # characters of `text` already handed out
        self.stopped = False  # a stop string appeared

    def add(self, token: int) -> str:
        """The text piece that `token` makes safe to emit ("" when it is held back)."""
        self.ids.append(token)
        self.text = self._tokenizer.decode(self.ids)
        cut = self._stop_at(self.text)
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            return self._emit(len(self.text))
        safe = len(self.text)
        if self.text.endswith(REPLACEMENT):
            safe = len(self.text.rstrip(REPLACEMENT))
        safe -= self._stop_prefix(self.text[:safe])
        return self._emit(safe)

    def finish(self) -> str:
        """What is still held back once no token follows."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        piece = self.text[self.emitted:upto]
        self.emitted = upto
        return piece

    def _stop_at(self, text: str) -> int | None:
        """Where the first stop string starts in the text not yet emitted (or None)."""
        found = [i for i in (text.find(s, max(0, self.emitted - len(s) + 1)) for s in self._stop) if i >= 0]
        return min(found) if found else None

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string (held back until it resolves)."""
        longest = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
