"""Progress on long work, with an ETA: a live bar on a terminal, a few plain log lines
elsewhere (CI logs). Every stage that can take more than a few seconds goes through `track`
(items counted as they come) or `steps` (work advanced by hand), so the two look the same.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger("edgegolf")
T = TypeVar("T")

PLAIN_EVERY_SECONDS = 30.0  # a CI log gets a line at least this often on long work, besides the quarters


def _live() -> bool:
    return sys.stderr.isatty() and log.isEnabledFor(logging.INFO)


def eta_text(done: float, total: float, elapsed: float) -> str:
    """"12 s left" from the rate so far; "" before anything is done."""
    if done <= 0 or total <= 0 or done >= total:
        return ""
    left = elapsed * (total - done) / done
    return f"{left / 60:.1f} min left" if left >= 120 else f"{left:.0f} s left"


class _Plain:
    """Lines at each quarter (and every PLAIN_EVERY_SECONDS), with elapsed time and the ETA."""

    def __init__(self, description: str, total: float):
        self.description, self.total = description, total
        self.start = self.last = time.perf_counter()
        self.done = 0.0
        self.quarter = 0

    def advance(self, amount: float = 1) -> None:
        self.done += amount
        now = time.perf_counter()
        quarter = int(4 * self.done / self.total) if self.total > 0 else 4
        if (quarter > self.quarter and self.done < self.total) or now - self.last >= PLAIN_EVERY_SECONDS:
            self.quarter, self.last = max(quarter, self.quarter), now
            eta = eta_text(self.done, self.total, now - self.start)
            log.info("%s: %g/%g (%.0f s%s)", self.description, self.done, self.total, now - self.start,
                     f", {eta}" if eta else "")


@contextmanager
def steps(description: str, total: float) -> Iterator[Callable[[float], None]]:
    """`with steps("distill", 600) as advance: ... advance(1)`: progress of work counted by hand."""
    if _live():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda amount=1: progress.advance(task, amount)
        return
    plain = _Plain(description, total)
    yield plain.advance


def track(items: Iterable[T], description: str, total: float, size: Callable[[T], float] | None = None) -> Iterator[T]:
    """`items` as they come, advancing by `size(item)` (1 when None) after each."""
    with steps(description, total) as advance:
        for item in items:
            yield item
            advance(1 if size is None else size(item))
