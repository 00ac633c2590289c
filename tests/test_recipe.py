"""Recipes, budgets and the verdict: what a user writes, and what they are told."""

from __future__ import annotations

import pytest

from edgegolf.compression.quantize import Int4WeightOnly, default_int8
from edgegolf.errors import RecipeError
from edgegolf.recipe import Budget, EvaluateSettings, Recipe, load_recipe_file
from edgegolf.verdict import check_budget


def test_budget_parses_every_limit():
    budget = Budget.parse("size<=24MB, zstd<=20mb,p50<=8ms,p95<=10ms,memory<=300MB,drop<=0.5")
    assert budget.to_dict() == {
        "size_mb": 24.0, "zstd_mb": 20.0, "p50_ms": 8.0, "p95_ms": 10.0, "memory_mb": 300.0,
        "max_accuracy_drop": 0.5,
    }


@pytest.mark.parametrize(
    "text, words",
    [
        ("size<=lots", "malformed"),
        ("weight<=3MB", "unknown 'weight'"),
        ("p50<=8MB", "unit 'mb'"),
        ("", "sets no limit"),
    ],
)
def test_malformed_budget_names_the_term(text, words):
    with pytest.raises(RecipeError, match=words):
        Budget.parse(text)


def test_recipe_defaults_and_fields():
    recipe = Recipe.from_dict({"task": "feature-extraction", "bench": {"device": "cpu-2", "runs": 50}})
    assert recipe.bench.device == "cpu-2" and recipe.bench.runs == 50
    assert recipe.export.max_length == 128
    assert recipe.quantize == default_int8() and recipe.to_dict()["quantize"] == {"scheme": "default"}
    assert recipe.prune is None and recipe.distill is None


@pytest.mark.parametrize(
    "table, words",
    [
        ({"task": "translation"}, "recipe.task = 'translation' is not accepted"),
        ({"export": {"opset": "17"}}, "export.opset = '17' is not an integer"),
        ({"export": {"opsett": 17}}, "unknown field 'opsett'"),
        ({"bench": {"batch": 0}}, "bench.batch = 0 is below the minimum 1"),
        ({"optimize": {"mode": "maybe"}}, "choose one of: auto, on, off"),
        ({"quantise": {}}, "unknown section 'quantise'"),
        ({"quantize": {"scheme": "int3"}}, "int3"),
        ({"quantize": "int8"}, "must be a table"),
    ],
)
def test_bad_recipe_field_is_named(table, words):
    with pytest.raises(RecipeError, match=words):
        Recipe.from_dict(table)


def test_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[export\nopset = 17\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe_file(bad)
    good = tmp_path / "good.toml"
    good.write_text('[bench]\ndevice = "cpu-2"\n[budget]\nsize_mb = 12\n')
    table, budget = load_recipe_file(good)
    assert table == {"bench": {"device": "cpu-2"}} and budget == {"size_mb": 12}
    assert Budget.from_dict(budget).size_mb == 12.0


def test_verdict_names_the_binding_limit():
    budget = Budget.parse("size<=10MB,p50<=8ms,drop<=1")
    verdict = check_budget(budget, {"size_mb": 12.5, "p50_ms": 4.0, "max_accuracy_drop": 0.2, "zstd_mb": 9,
                                    "p95_ms": 5, "memory_mb": 100})
    assert not verdict.fits
    assert verdict.binding.field == "size_mb"
    assert "size 12.50 MB exceeds 10 MB by 2.50 MB, 25% over" in verdict.summary()

    fitting = check_budget(budget, {"size_mb": 9.0, "p50_ms": 7.9, "max_accuracy_drop": 0.1, "zstd_mb": 9,
                                    "p95_ms": 5, "memory_mb": 100})
    assert fitting.fits
    assert fitting.binding.field == "p50_ms"  # 99% of its limit: the tightest
    assert fitting.to_dict()["fits"] is True


def test_zero_drop_limit():
    budget = Budget.parse("drop<=0")
    assert check_budget(budget, {"max_accuracy_drop": 0.0}).fits
    assert not check_budget(budget, {"max_accuracy_drop": 0.3}).fits


def test_recipe_file_paths_are_relative_to_the_recipe_and_written_absolute(tmp_path, monkeypatch):
    """A recipe names its files relative to itself; the recipe.toml a bundle carries names them
    absolute, so that `--recipe out/recipe.toml` reruns the same files from any folder."""
    import tomllib

    from edgegolf.pipeline import build_recipe
    from edgegolf.report import recipe_toml

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.toml").write_text(
        '[evaluate]\ndata = "../news.csv"\n[distill]\nsteps = 2\ndata = "train-split"\n', encoding="utf-8")
    recipe, _ = build_recipe(tmp_path / "recipes" / "r.toml")
    assert recipe.evaluate.data == str((tmp_path / "news.csv").resolve())
    assert recipe.distill.data == "train-split"  # a named data set, not a path

    monkeypatch.chdir(tmp_path)
    flags, budget = build_recipe(None, overrides={"evaluate.data": "data/news.csv"})
    assert flags.evaluate.data == "data/news.csv"  # errors name the path as the user typed it
    written = tomllib.loads(recipe_toml(flags, budget))
    assert written["evaluate"]["data"] == str(tmp_path / "data" / "news.csv")
    assert tomllib.loads(recipe_toml(Recipe(), budget))["evaluate"]["data"] == "bbc-news"


def test_recipe_toml_round_trips_newlines_quotes_and_nested_tables(tmp_path, monkeypatch):
    """recipe.toml is written by a TOML library: strings with a newline, a quote or a backslash
    read back (tomllib) exactly as they were."""
    import dataclasses
    import json
    import tomllib

    from edgegolf.report import recipe_toml

    monkeypatch.chdir(tmp_path)
    awkward = 'news "2024"\nsecond line\\ with a backslash'
    recipe = dataclasses.replace(Recipe(), task="feature-extraction",
                                 evaluate=EvaluateSettings(text_column=awkward),
                                 quantize=Int4WeightOnly(block_size=64, exclude=(awkward, "a\"b", "c\nd")))
    budget = Budget(size_mb=12.5)
    text = recipe_toml(recipe, budget)
    read = tomllib.loads(text)
    assert read["task"] == "feature-extraction"
    assert read["quantize"] == {"scheme": "int4", "block_size": 64, "symmetric": True, "embeddings": "per-row",
                                "accuracy_level": 4, "algorithm": "rtn", "exclude": [awkward, "a\"b", "c\nd"],
                                "mixed_unit": "block"}  # mixed_size_mb unset: TOML has no null
    assert read["evaluate"]["text_column"] == awkward
    assert Recipe.from_dict({k: v for k, v in read.items() if k != "budget"}) == recipe
    assert read["budget"] == {"size_mb": 12.5}
    expected = json.loads(json.dumps(recipe.to_dict()))  # tuples as lists, as TOML arrays read back
    for section in ("export", "optimize", "evaluate", "bench"):
        assert read[section] == {k: v for k, v in expected[section].items() if v is not None}
