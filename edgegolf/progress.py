"""Progress on long work: a live bar on a terminal, a few plain log lines elsewhere (CI logs)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger("edgegolf")
T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int) -> Iterator[T]:
    if sys.stderr.isatty() and log.isEnabledFor(logging.INFO):
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task(description, total=total)
            for item in items:
                yield item
                progress.advance(task)
        return
    start = time.perf_counter()
    marks = {max(1, total * q // 4) for q in (1, 2, 3)}
    for done, item in enumerate(items, 1):
        yield item
        if done in marks:
            log.info("%s: %d/%d (%.0f s)", description, done, total, time.perf_counter() - start)
