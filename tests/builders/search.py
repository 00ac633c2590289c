"""Search scenarios that must hold on every Optuna storage: run by tests/test_search.py on
SQLite and by tests/test_search_postgres.py on a real PostgreSQL server, one body each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from edgegolf.runtime import load
from tests.builders.paths import ROOT

QUICK_TOML = """
[optimize]
mode = "off"
[evaluate]
limit = 40
calibration_size = 4
[bench]
runs = 5
warmup = 1
max_seconds = 0.3
"""


def write_quick_recipe(folder: Path) -> Path:
    path = folder / "quick.toml"
    path.write_text(QUICK_TOML, encoding="utf-8")
    return path


def search_command(model: Path, out: Path, recipe: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgegolf", "search", str(model), "--budget", "size<=50MB", "--trials", str(trials),
            "--recipe", str(recipe), "-o", str(out), *extra]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def study_trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url).get_trials()


def killed_search_resumes_to_the_requested_total(model: Path, tmp_path: Path, recipe: Path, url: str, name: str,
                                                 storage_args: tuple[str, ...] = ()) -> None:
    """A search killed (SIGKILL) after its first trial, rerun: the killed trial is failed and
    retried, the first process's completed trial counts, and the bundle is written once."""
    out = tmp_path / "out"
    first = subprocess.Popen(search_command(model, out, recipe, 2, *storage_args), env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.3)
        try:
            done = sum(t.state == TrialState.COMPLETE for t in study_trials(url, name))
        except (KeyError, ValueError, optuna.exceptions.StorageInternalError):
            continue  # the study is not created yet
        if done >= 1:
            break
    assert first.poll() is None, first.stderr.read().decode()[-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert done == 1 and not out.exists()

    second = subprocess.run(search_command(model, out, recipe, 2, *storage_args), env=subprocess_env(),
                            capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    trials = study_trials(url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]  # the killed one was failed, not left running
    # the rerun continued the study: the first process's completed trials are part of the total
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["search"]["completed_trials"] == 2 and manifest["search"]["fits"] is True
    assert "FITS" in second.stdout and "| trial |" in second.stdout
    load(out).embed(["Shares rose."])  # the shipped bundle loads and runs


def two_workers_share_one_storage_without_repeating_a_trial(model: Path, tmp_path: Path, recipe: Path, url: str,
                                                            name: str) -> None:
    """Two worker processes started at once on one storage and study: four trials in all,
    both workers ran some, and no settings were measured twice."""
    workers = [subprocess.Popen(search_command(model, tmp_path / f"out-{i}", recipe, 4, "--storage", url,
                                               "--study", name, "--seed", str(i)),
                                env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for i in range(2)]
    for worker in workers:
        worker.wait(timeout=240)
        assert worker.returncode == 0, worker.stderr.read().decode()[-2000:]
    trials = study_trials(url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert len({t.number for t in complete}) == 4
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2  # both workers ran trials
    run = [t for t in complete if "duplicate_of" not in t.user_attrs]
    settings = [json.dumps(t.params, sort_keys=True) for t in run]
    assert len(settings) == len(set(settings))  # no settings were measured twice
    for t in complete:
        if "duplicate_of" in t.user_attrs:  # proposed again: the earlier numbers, not a second run
            assert t.values == next(o.values for o in complete if o.number == t.user_attrs["duplicate_of"])
