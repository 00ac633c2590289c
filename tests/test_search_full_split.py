"""Before a search ships its choice, the chosen graph is scored on the whole evaluation split;
both numbers are kept with their intervals, and a choice the sample cannot separate from the
runner-up is reported as within the noise."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("optuna")

from edgegolf.search import SearchSpace, search  # noqa: E402
from tests.builders.search import write_quick_recipe  # noqa: E402


def test_the_chosen_trial_is_rescored_on_the_full_split_and_a_tie_within_the_noise_is_said(tiny_bert, tmp_path):
    # 12 test texts per trial (evaluate.limit 40): intervals tens of points wide
    space = SearchSpace(min_layers=1, heads=(1.0,), ffn=(1.0,), vocab=(0,), schemes=("int8-dynamic", "none"))
    result = search(str(tiny_bert), output=tmp_path / "out", budget="size<=50MB,drop<=100", trials=2,
                    recipe=write_quick_recipe(tmp_path), space=space, seed=1)
    check = result.full_split
    assert check["trial"] == result.chosen.number
    sample, full = check["sample"], check["full"]
    assert check["sample_texts"] == 12 and full["test_texts"] == 667  # BBC News: 2,225 texts, 30 % held out
    assert sample["accuracy"] == result.chosen.measured["accuracy"]
    for numbers in (sample, full):
        assert numbers["accuracy_ci95_low"] <= numbers["accuracy"] <= numbers["accuracy_ci95_high"]
    # 56 times the texts: a far narrower interval
    assert (full["accuracy_ci95_high"] - full["accuracy_ci95_low"]) < (
        sample["accuracy_ci95_high"] - sample["accuracy_ci95_low"]) / 2
    assert full["drop"] == pytest.approx(full["teacher_accuracy"] - full["accuracy"])
    assert check["runner_up"]["trial"] != result.chosen.number and check["within_noise"] is True
    assert "within the noise" in result.message and "full split of 667 test texts" in result.message
    front = (result.search_dir / "front.md").read_text()
    assert "## The chosen trial on the full split, and the noise" in front and "within the noise" in front
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["search"]["full_split"]["full"]["test_texts"] == 667


def test_overlap_of_intervals():
    from edgegolf.search.full_split import overlap

    a = {"accuracy_ci95_low": 90.0, "accuracy_ci95_high": 95.0}
    assert overlap(a, {"accuracy_ci95_low": 94.0, "accuracy_ci95_high": 99.0}) is True
    assert overlap(a, {"accuracy_ci95_low": 95.5, "accuracy_ci95_high": 99.0}) is False
    assert overlap(a, {"accuracy_ci95_low": None, "accuracy_ci95_high": 99.0}) is None
