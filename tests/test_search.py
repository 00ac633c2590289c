"""`edgegolf search` on a tiny real model: a killed search resumes, two workers share one
SQLite storage, and an impossible budget still leaves the closest candidate, saved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from edgegolf.runtime import load  # noqa: E402
from tests.builders.cli import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.fixture()
def quick_recipe(tmp_path) -> Path:
    path = tmp_path / "quick.toml"
    path.write_text(QUICK_TOML, encoding="utf-8")
    return path


def _command(model: Path, out: Path, recipe: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgegolf", "search", str(model), "--budget", "size<=50MB", "--trials", str(trials),
            "--recipe", str(recipe), "-o", str(out), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_killed_search_resumes_to_the_requested_total(tiny_bert, tmp_path, quick_recipe):
    out = tmp_path / "out"
    url, name = f"sqlite:///{tmp_path / 'out.search.db'}", "edgegolf-out"  # the defaults for -o out
    first = subprocess.Popen(_command(tiny_bert, out, quick_recipe, 2), env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.3)
        try:
            done = sum(t.state == TrialState.COMPLETE for t in _trials(url, name))
        except (KeyError, ValueError, optuna.exceptions.StorageInternalError):
            continue  # the study is not created yet
        if done >= 1:
            break
    assert first.poll() is None, first.stderr.read().decode()[-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert done == 1 and not out.exists()

    second = subprocess.run(_command(tiny_bert, out, quick_recipe, 2), env=_env(), capture_output=True, text=True,
                            timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    trials = _trials(url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]  # the killed one was failed, not left running
    # the rerun continued the study: the first process's completed trials are part of the total
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["search"]["completed_trials"] == 2 and manifest["search"]["fits"] is True
    assert "FITS" in second.stdout and "| trial |" in second.stdout
    load(out).embed(["Shares rose."])  # the shipped bundle loads and runs


def test_two_workers_share_one_storage_without_repeating_a_trial(tiny_bert, tmp_path, quick_recipe):
    url, name = f"sqlite:///{tmp_path / 'shared.db'}", "shared"
    workers = [subprocess.Popen(_command(tiny_bert, tmp_path / f"out-{i}", quick_recipe, 4, "--storage", url,
                                         "--study", name, "--seed", str(i)),
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    for worker in workers:
        worker.wait(timeout=240)
        assert worker.returncode == 0, worker.stderr.read().decode()[-2000:]
    trials = _trials(url, name)
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


def test_impossible_budget_saves_the_closest_candidate_and_names_the_limit(tiny_bert, tmp_path, quick_recipe,
                                                                          capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["search", str(tiny_bert), "--budget", "size<=0.001MB,drop<=50", "--trials", "2",
                               "--recipe", str(quick_recipe), "-o", str(out)], capsys)
    assert code == 3
    assert "NOTHING FITS" in stdout and "Binding limit: size" in stdout
    assert "exceeds 0.001 MB by" in stdout and "no trial met this limit" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["search"]["fits"] is False
    assert manifest["verdict"]["binding"] == "size_mb" and manifest["verdict"]["fits"] is False
    # the closest candidate is the smallest of the trials: the size limit is what binds
    db = f"sqlite:///{tmp_path / 'out.search.db'}"
    sizes = {t.number: t.user_attrs["measured"]["size_mb"] for t in _trials(db, "edgegolf-out")
             if t.state == TrialState.COMPLETE}
    assert manifest["search"]["trial"] == min(sizes, key=sizes.get)
    assert (out / "search-front.svg").read_text().startswith("<svg")
    load(out).embed(["Shares rose."])  # a valid bundle, hashes checked by the runtime


def test_durations_and_trial_settings_map_to_recipe_overrides(tmp_path):
    from edgegolf.errors import RecipeError
    from edgegolf.search import SearchSpace, parse_duration
    from edgegolf.search.space import BoundSpace, ModelShape

    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    with pytest.raises(RecipeError, match="not a duration"):
        parse_duration("soon")
    corpus = tmp_path / "corpus.txt"
    bound = BoundSpace(SearchSpace(), ModelShape(layers=6, heads=12, vocab_pruning=True), corpus)
    assert bound.head_choices == [1.0, 0.75, 0.5, 0.25]
    assert bound.overrides(bound.baseline()) == {"prune": {}, "quantize": {"scheme": "default"}}
    params = {"layers": 3, "heads": 0.5, "ffn": 1.0, "vocab": 3, "quantize": "int4", "int4_block_size": 64}
    assert bound.overrides(params) == {"prune": {"layers": 3, "heads": 0.5, "vocab": str(corpus), "vocab_min_count": 3},
                                       "quantize": {"scheme": "int4", "block_size": 64}}
    assert bound.overrides({**params, "vocab": 1})["prune"]["vocab"] == str(corpus)
    # two heads: 0.75 and 1.0 keep the same heads, 0.5 and 0.25 keep one
    assert BoundSpace(SearchSpace(), ModelShape(2, 2, False), None).head_choices == [1.0, 0.5]
    assert BoundSpace(SearchSpace(), ModelShape(2, 2, False), corpus).vocab_options() == [0]
    with pytest.raises(RecipeError, match="not accepted"):
        SearchSpace(schemes=("int3",))


def test_memo_reuses_the_teacher_and_the_pruned_student_across_schemes(tiny_bert, tmp_path):
    import edgegolf
    from edgegolf.pipeline import StageMemo
    from tests.builders.recipes import QUICK

    memo = StageMemo(tmp_path / "memo")
    recipe = {**QUICK, "optimize": {"mode": "off"}, "prune": {"layers": 1}}
    first = edgegolf.compress(str(tiny_bert), output=tmp_path / "a", recipe={**recipe, "quantize": {"scheme": "none"}},
                              memo=memo)
    second = edgegolf.compress(str(tiny_bert), output=tmp_path / "b",
                               recipe={**recipe, "quantize": {"scheme": "int8-dynamic"}}, memo=memo)
    assert memo.hits == {"teacher": 1, "student": 1} and memo.misses == {"teacher": 1, "student": 1}
    reused = {r["stage"] for r in second.manifest["provenance"] if r.get("reused")}
    assert reused == {"load", "prune", "export", "optimize"}
    assert second.stages[1].metrics == first.stages[1].metrics  # the same fp32 export, measured once
    assert second.final.name == "quantized" and second.manifest["stages"]["quantized"]
    assert load(tmp_path / "b").embed(["Shares rose."]).shape == (1, 32)
    assert load(tmp_path / "a").embed(["Shares rose."]).shape == (1, 32)


def test_a_worker_waits_for_the_creator_to_write_the_whole_identity(tmp_path):
    """Two workers starting at once: the one that loads the study while its creator is still
    writing the identity waits for all of it instead of reading a half-written one as a
    different search (seen in CI: 'study was started with recipe = None')."""
    import threading

    from edgegolf.search.study import IDENTITY_WRITTEN, open_storage, open_study

    storage = open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    identity = {"source": "tiny", "recipe": {"quantize": {"scheme": "default"}}}
    half = optuna.create_study(storage=storage, study_name="race", directions=["maximize", "minimize", "minimize"])
    half.set_user_attr("source", "tiny")  # the creator got this far

    def creator_finishes():
        time.sleep(1.0)
        half.set_user_attr("recipe", identity["recipe"])
        half.set_user_attr(IDENTITY_WRITTEN, True)

    writer = threading.Thread(target=creator_finishes)
    writer.start()
    study = open_study(storage, "race", optuna.samplers.RandomSampler(seed=0), identity, baseline={})
    writer.join()
    assert study.user_attrs["recipe"] == identity["recipe"]
    with pytest.raises(Exception, match="was started with recipe"):  # a really different search is still refused
        open_study(storage, "race", optuna.samplers.RandomSampler(seed=0), {**identity, "recipe": {}}, baseline={})
