"""The teacher's outputs are computed once per search, whatever the number of workers: two real
worker processes on one SQLite storage, the second reads what the first wrote beside it."""

from __future__ import annotations

import subprocess

import pytest

pytest.importorskip("optuna")

from tests.builders.search import search_command, subprocess_env, write_quick_recipe  # noqa: E402


def test_two_workers_on_one_storage_compute_the_teachers_outputs_once(tiny_bert, tmp_path):
    recipe = write_quick_recipe(tmp_path)
    db = tmp_path / "shared.db"
    workers = [subprocess.Popen(search_command(tiny_bert, tmp_path / f"out-{i}", recipe, 2, "--storage",
                                               f"sqlite:///{db}", "--study", "shared", "--seed", str(i)),
                                env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for i in range(2)]
    pids = {worker.pid for worker in workers}
    for worker in workers:
        worker.wait(timeout=400)
        assert worker.returncode == 0, worker.stderr.read().decode()[-2000:]
    cache = tmp_path / "shared.db.teacher-outputs"  # beside the storage, not in either worker's output
    events = [line.split() for line in (cache / "events.log").read_text().splitlines()]
    # two entries: the trials' evaluation subset, and the full split the chosen trial is scored on at the end
    keys = {e[1] for e in events}
    assert len(keys) == 2 and len(list(cache.glob("*.npz"))) == 2 and not list(cache.glob(".*partial*")), events
    for key in keys:
        computed = [int(e[2]) for e in events if e[0] == "computed" and e[1] == key]
        read = {int(e[2]) for e in events if e[0] == "read" and e[1] == key}
        assert len(computed) == 1, events  # once, by one worker
        assert read == pids - set(computed), events  # the other worker read it


def test_the_cache_gives_back_what_was_stored_and_a_rerun_reads_it(tiny_bert, tmp_path):
    import numpy as np

    from edgegolf.search.teacher_cache import TeacherOutputs
    from edgegolf.tasks.base import Outputs

    store = TeacherOutputs(tmp_path / "cache")
    outputs = Outputs(np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((2, 2), dtype=np.float32))
    outputs.correct = np.array([True, False])
    calls = []

    def compute():
        calls.append(1)
        return outputs, {"accuracy": 50.0}

    first = store.fetch("k", compute)
    again = TeacherOutputs(tmp_path / "cache").fetch("k", compute)  # a new process's view of the folder
    assert len(calls) == 1 and first[0] is outputs
    assert np.array_equal(again[0].train, outputs.train) and np.array_equal(again[0].correct, outputs.correct)
    assert again[1] == {"accuracy": 50.0}
