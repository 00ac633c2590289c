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
    assert "edgegolf/runtime" in CHECKED and "edgegolf/recipe.py" in CHECKED and "edgegolf/settings.py" in CHECKED
    assert all((ROOT / path).exists() for path in CHECKED), CHECKED


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *CHECKED], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def _imported_modules(path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_builders_are_imported_one_way_only():
    """Test modules import shared helpers from tests/builders, never from another test module,
    conftest or benchmarks; builders import neither tests nor benchmarks (benchmarks may import builders)."""
    def forbidden(name: str) -> bool:
        return (name.startswith(("tests.test_", "benchmarks")) or name in ("tests.conftest", "benchmarks")
                or (name.startswith("tests.") and not name.startswith("tests.builders")))

    wrong = {}
    for path in [*(ROOT / "tests").glob("*.py"), *(ROOT / "tests" / "builders").glob("*.py")]:
        bad = sorted(name for name in _imported_modules(path) if forbidden(name))
        if bad:
            wrong[path.relative_to(ROOT).as_posix()] = bad
    assert wrong == {}, wrong
    assert not [p for p in (ROOT / "benchmarks").glob("*.py") if any(
        name.startswith("tests.") and not name.startswith("tests.builders") for name in _imported_modules(p))]
