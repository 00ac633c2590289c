"""The linter (ruff) and the type checker (mypy) pass on the paths pyproject.toml names: the
runtime, the settings layer and the publishing/extras helpers. Both run as a user would run
them, as subprocesses with the repository's own configuration."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.builders.paths import ROOT

CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CHECKED = CONFIG["tool"]["mypy"]["files"]


def test_the_checked_paths_include_the_runtime_and_the_settings():
    assert "edgegolf/runtime" in CHECKED and "edgegolf/recipe.py" in CHECKED
    assert all((ROOT / path).exists() for path in CHECKED), CHECKED


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *CHECKED], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
