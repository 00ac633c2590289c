"""Run the real CLI entry point in-process and capture what a user would see."""

from __future__ import annotations

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
