"""Run the real CLI entry point in-process and capture what a user would see."""

from __future__ import annotations

import logging
import sys

import pytest

from edgegolf.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    old = sys.argv
    sys.argv = ["edgegolf", *map(str, args)]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


class _InterruptAfterCheckpoint(logging.Handler):
    """Stops a distillation right after its checkpoint at `step`, as Ctrl-C would."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def emit(self, record):
        if record.getMessage().startswith(f"distill checkpoint at step {self.step} "):
            raise KeyboardInterrupt


def run_cli_interrupted_after_checkpoint(args: list[str], step: int, capsys) -> tuple[int, str, str]:
    """`run_cli` of a distillation that is interrupted right after writing its checkpoint at `step`."""
    logger = logging.getLogger("edgegolf.compression.distill.train")
    handler, level = _InterruptAfterCheckpoint(step), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return run_cli(args, capsys)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
