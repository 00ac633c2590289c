"""The support matrix: recorded from marked tests, rendered into the docs, every claimed cell backed by a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.builders import support_matrix as sm

MARKED = '''
import pytest

@pytest.mark.support(task="t", arch="a", stage=("export", "quantize:int4"))
def test_works():
    pass

@pytest.mark.support(task="t", arch="b", stage="export")
def test_breaks():
    assert False

@pytest.mark.support(task="t", arch="c", stage="export")
def test_skips():
    pytest.skip("no device")

@pytest.mark.support(task="t", arch="{kind}", stage="prune")
@pytest.mark.parametrize("kind", ["x", "y"])
def test_each_kind(kind):
    assert kind == "x"

@pytest.mark.parametrize("kind", [pytest.param("z", marks=pytest.mark.support(task="t", arch="z", stage="load"))])
def test_param_marks(kind):
    pass

def test_unmarked():
    pass
'''


def test_a_run_records_each_cells_outcome_and_its_tests(tmp_path):
    (tmp_path / "test_marked.py").write_text(MARKED, encoding="utf-8")
    record_path = tmp_path / "record.json"
    env = {**os.environ, "PYTHONPATH": str(sm.ROOT)}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.builders.support_matrix", "-p", "no:cacheprovider",
                    "--rootdir", str(tmp_path), str(tmp_path / "test_marked.py"), f"--support-record={record_path}"],
                   cwd=tmp_path, env=env, capture_output=True, check=False, timeout=120)
    record = json.loads(record_path.read_text())
    cells = {(c["task"], c["arch"], c["stage"]): sm.verdict(c["tests"]) for c in record["cells"]}
    assert cells == {("t", "a", "export"): "yes", ("t", "a", "quantize:int4"): "yes", ("t", "b", "export"): "FAILS",
                     ("t", "c", "export"): "skipped", ("t", "x", "prune"): "yes", ("t", "y", "prune"): "FAILS",
                     ("t", "z", "load"): "yes"}
    assert "--support-record" not in record["pytest_args"]
    # every recorded test is found marked in the source; a claim without a marked test is not
    for cell in record["cells"]:
        for test in cell["tests"]:
            assert sm.claim_is_marked(cell, test["test"], root=tmp_path), test
    assert not sm.claim_is_marked({"task": "t", "arch": "a", "stage": "export"}, "test_marked.py::test_unmarked",
                                  root=tmp_path)
    assert not sm.claim_is_marked({"task": "t", "arch": "a", "stage": "prune"}, "test_marked.py::test_works",
                                  root=tmp_path)
    assert not sm.claim_is_marked({"task": "t", "arch": "a", "stage": "export"}, "gone.py::test_works", root=tmp_path)
    table = sm.render_tables(record)
    assert "| architecture | load | prune | export | quantize:int4 |" in table
    assert "| b | - | - | FAILS | - |" in table


@pytest.fixture(scope="module")
def committed():
    if not sm.RECORD.exists():
        pytest.fail(f"{sm.RECORD} is missing; run python -m tests.builders.support_matrix --run")
    return json.loads(sm.RECORD.read_text(encoding="utf-8"))


def test_every_committed_working_cell_has_a_marked_test_that_exists(committed):
    working = [cell for cell in committed["cells"] if sm.verdict(cell["tests"]) == "yes"]
    assert working
    for cell in working:
        passed = [t["test"] for t in cell["tests"] if t["outcome"] == "passed"]
        assert passed and all(sm.claim_is_marked(cell, test) for test in passed), cell


def test_the_docs_and_the_readme_show_the_committed_record(committed):
    assert sm.DOC.read_text(encoding="utf-8") == sm.render_doc(committed)
    readme = sm.README.read_text(encoding="utf-8")
    assert sm.readme_section(committed) in readme, "README's support matrix is stale: python -m tests.builders.support_matrix"


def test_a_partial_record_merges_into_the_committed_one():
    """A rerun of some test files replaces those tests' outcomes and keeps every other cell."""
    def cell(stage, *tests):
        return {"task": "t", "arch": "a", "stage": stage, "tests": [{"test": n, "outcome": o} for n, o in tests]}

    record = {"recorded": "then", "pytest_args": "-m support", "cells": [
        cell("export", ("f.py::one", "passed"), ("g.py::two", "passed")), cell("prune", ("f.py::one", "passed"))]}
    part = {"recorded": "now", "pytest_args": "f.py", "cells": [cell("export", ("f.py::one", "failed")),
                                                                 cell("load", ("f.py::three", "passed"))]}
    merged = sm.merge_records(record, part)
    cells = {c["stage"]: c["tests"] for c in merged["cells"]}
    assert cells == {"export": [{"test": "f.py::one", "outcome": "failed"}, {"test": "g.py::two", "outcome": "passed"}],
                     "load": [{"test": "f.py::three", "outcome": "passed"}]}  # f.py::one no longer claims prune
    assert merged["pytest_args"] == "-m support; then f.py (merged in, now)"
