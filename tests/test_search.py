"""`edgegolf search` on a tiny real model: a killed search resumes, two workers share one
SQLite storage, and an impossible budget still leaves the closest candidate, saved."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from edgegolf.runtime import load  # noqa: E402
from tests.builders.cli import run_cli  # noqa: E402
from tests.builders.search import (  # noqa: E402
    killed_search_resumes_to_the_requested_total,
    study_trials,
    two_workers_share_one_storage_without_repeating_a_trial,
    write_quick_recipe,
)


@pytest.fixture()
def quick_recipe(tmp_path) -> Path:
    return write_quick_recipe(tmp_path)


def test_killed_search_resumes_to_the_requested_total(tiny_bert, tmp_path, quick_recipe):
    # the defaults for -o out: sqlite beside it, the study named after it
    killed_search_resumes_to_the_requested_total(tiny_bert, tmp_path, quick_recipe,
                                                 f"sqlite:///{tmp_path / 'out.search.db'}", "edgegolf-out")


def test_two_workers_share_one_storage_without_repeating_a_trial(tiny_bert, tmp_path, quick_recipe):
    two_workers_share_one_storage_without_repeating_a_trial(tiny_bert, tmp_path, quick_recipe,
                                                            f"sqlite:///{tmp_path / 'shared.db'}", "shared")


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
    sizes = {t.number: t.user_attrs["measured"]["size_mb"] for t in study_trials(db, "edgegolf-out")
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
