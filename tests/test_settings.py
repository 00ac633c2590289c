"""The typed settings layer: typed sections in Python and tables in TOML go through the same
rules and give the same recipe; the rules on the fields are what the CLI and the search read."""

from __future__ import annotations

import tomllib

import pytest

import edgegolf
from edgegolf.compression.distill import DistillConfig
from edgegolf.compression.prune import PruneConfig
from edgegolf.compression.quantize import BLOCK_SIZES, Int4WeightOnly, Int8Static, scheme_names
from edgegolf.errors import RecipeError
from edgegolf.recipe import Budget, BenchSettings, ExportSettings, Recipe
from edgegolf.search.space import SearchSpace
from edgegolf.settings import Rule, check_value, choices_of, rule_of, validate
from edgegolf.verdict import check_budget
from tests.builders.recipes import QUICK


@pytest.mark.parametrize("value, rule, message", [
    ("17", Rule(kind="int"), "x.y = '17' is not an integer"),
    (2.5, Rule(kind="int"), "x.y = 2.5 is not an integer"),
    (True, Rule(kind="float"), "x.y = True is not a number"),
    (float("nan"), Rule(kind="float"), "x.y = nan is not accepted; give a finite number"),
    (3, Rule(kind="str"), "x.y = 3 is not a string"),
    ("yes", Rule(kind="bool"), "x.y = 'yes' is not accepted; choose one of: true, false"),
    (0, Rule(kind="int", minimum=1), "x.y = 0 is below the minimum 1"),
    (24, Rule(kind="int", maximum=23), "x.y = 24 is above the maximum 23"),
    (1.5, Rule(kind="float", above=0.0, maximum=1.0, accepts="0 < y <= 1"), "x.y = 1.5 is out of range; 0 < y <= 1"),
    ("c", Rule(kind="str", choices=("a", "b")), "x.y = 'c' is not accepted; choose one of: a, b"),
    (1, Rule(choices=("auto", True, False)), "x.y = 1 is not accepted; choose one of: auto, true, false"),
    ([1], Rule(kind="strings"), "x.y = 1 is not a string"),
])
def test_one_validator_one_line(value, rule, message):
    with pytest.raises(RecipeError) as caught:
        check_value("x.y", value, rule)
    assert str(caught.value) == message


def test_values_are_coerced_to_the_field_kind():
    assert check_value("x.y", 3, Rule(kind="float")) == 3.0 and isinstance(check_value("x.y", 3, Rule(kind="float")), float)
    assert check_value("x.y", 4.0, Rule(kind="int")) == 4
    assert check_value("x.y", ["a", "b"], Rule(kind="strings")) == ("a", "b")
    assert check_value("x.y", "a", Rule(kind="strings")) == ("a",)
    assert check_value("x.y", None, Rule(kind="int", optional=True)) is None


def test_a_section_table_is_validated_by_its_fields():
    assert validate(ExportSettings, {"opset": 18.0}, "export") == ExportSettings(opset=18)
    with pytest.raises(RecipeError, match=r"^export.opset = 99 is above the maximum 23$"):
        validate(ExportSettings, {"opset": 99}, "export")
    with pytest.raises(RecipeError, match=r"^recipe \[export\] has unknown field 'opsett'; accepted: atol, exporter, "):
        validate(ExportSettings, {"opsett": 17}, "export")
    with pytest.raises(RecipeError, match=r"^recipe \[bench\] must be a table, got 3$"):
        validate(BenchSettings, 3, "bench")


def test_a_config_built_in_python_meets_the_same_rules_as_its_table():
    with pytest.raises(RecipeError) as from_python:
        Int4WeightOnly(block_size=33)
    with pytest.raises(RecipeError) as from_table:
        Recipe.from_dict({"quantize": {"scheme": "int4", "block_size": 33}})
    assert str(from_python.value) == str(from_table.value) == \
        "quantize.block_size = 33 is not accepted; choose one of: 16, 32, 64, 128, 256"
    assert Int8Static(percentile=99).percentile == 99.0  # an int where a float is meant is stored as a float
    with pytest.raises(RecipeError, match="quantize.reduce_range = 'sometimes' is not accepted"):
        Int8Static(reduce_range="sometimes")
    for reduce_range in ("auto", True, False):
        assert Recipe.from_dict({"quantize": {"scheme": "int8-dynamic", "reduce_range": reduce_range}}
                                ).quantize.reduce_range == reduce_range
    with pytest.raises(RecipeError, match="recipe.prune = {'layers': 3} is not accepted; give PruneConfig"):
        Recipe(prune={"layers": 3})  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="quantization config 'int4' is not one of"):
        Recipe(quantize="int4")


def test_typed_sections_and_their_tables_are_the_same_recipe():
    typed = Recipe(task="feature-extraction", prune=PruneConfig(layers=1, heads=0.5),
                   distill=DistillConfig(steps=2), quantize=Int4WeightOnly(block_size=64),
                   bench=BenchSettings(runs=10))
    table = {"task": "feature-extraction", "prune": {"layers": 1, "heads": 0.5}, "distill": {"steps": 2},
             "quantize": {"scheme": "int4", "block_size": 64}, "bench": {"runs": 10}}
    assert Recipe.from_dict(table) == typed
    assert Recipe.from_dict(typed.to_dict()) == typed
    assert typed.to_dict()["quantize"] == {"scheme": "int4", "block_size": 64, "symmetric": True,
                                           "accuracy_level": 4, "exclude": [], "embeddings": "per-row",
                                           "algorithm": "rtn", "mixed_size_mb": None, "mixed_unit": "block"}
    assert Recipe().to_dict()["quantize"] == {"scheme": "default"}  # the tuned int8 keeps its name


def test_budget_limits_are_declared_once_on_the_fields():
    limits = Budget.limits()
    # p50 and p95 twice: in ms, and in x (a multiple of the fp32 export's, edgegolf/recipe.py)
    assert [limit["term"] for limit in limits.values()] == ["size", "zstd", "p50", "p95", "p50", "p95", "memory", "drop"]
    assert limits["p50_ratio"]["units"] == ("x",)
    assert Budget.parse("p95<=10ms,drop<=1") == Budget.from_dict({"p95_ms": 10, "max_accuracy_drop": 1}) == \
        Budget(p95_ms=10, max_accuracy_drop=1)
    verdict = check_budget(Budget(p95_ms=10), {"p95_ms": 12.0})
    assert verdict.checks[0].label == limits["p95_ms"]["label"] == "p95 latency"
    assert "p95 latency 12.00 ms exceeds 10 ms" in verdict.summary()
    with pytest.raises(RecipeError, match=r"^budget.size_mb = -1.0 is below the minimum 0.0$"):
        Budget(size_mb=-1)


def test_cli_choices_and_search_space_come_from_the_fields(capsys):
    from tests.builders.cli import run_cli

    code, out, _ = run_cli(["compress", "--help"], capsys)
    shown = " ".join(out.replace("│", " ").split())
    assert code == 0
    for name in scheme_names(with_default=True):
        assert name in shown
    assert " | ".join(map(str, choices_of(Int4WeightOnly, "block_size"))) in shown
    assert " | ".join(choices_of(Int8Static, "method")) in shown
    space = SearchSpace()
    assert space.int4_block_sizes == rule_of(Int4WeightOnly, "block_size").search
    assert set(space.int4_block_sizes) <= set(BLOCK_SIZES)
    assert space.schemes[0] == "default" and set(space.schemes) <= set(scheme_names(with_default=True))
    with pytest.raises(RecipeError, match="search int4_block_sizes = \\(33,\\) is not accepted"):
        SearchSpace(int4_block_sizes=(33,))


def test_compress_takes_typed_sections_and_records_the_same_recipe_as_toml(tiny_bert, tmp_path):
    typed = Recipe(quantize=Int4WeightOnly(block_size=32), evaluate=Recipe.from_dict(QUICK).evaluate,
                   bench=Recipe.from_dict(QUICK).bench)
    from_python = edgegolf.compress(str(tiny_bert), output=tmp_path / "typed", recipe=typed)
    toml = tmp_path / "recipe.toml"
    toml.write_text('[quantize]\nscheme = "int4"\nblock_size = 32\n'
                    '[evaluate]\nlimit = 60\ncalibration_size = 8\n'
                    '[bench]\nruns = 10\nwarmup = 2\nmax_seconds = 2.0\n', encoding="utf-8")
    from_toml = edgegolf.compress(str(tiny_bert), output=tmp_path / "toml", recipe=toml)
    assert from_python.recipe == from_toml.recipe
    assert from_python.manifest["recipe"] == from_toml.manifest["recipe"]
    assert from_python.manifest["recipe"]["quantize"]["scheme"] == "int4"
    assert from_python.manifest["recipe"]["quantize"]["block_size"] == 32
    written = tomllib.loads((tmp_path / "typed" / "recipe.toml").read_text(encoding="utf-8"))
    assert written["quantize"] == tomllib.loads((tmp_path / "toml" / "recipe.toml").read_text(encoding="utf-8")
                                                )["quantize"]
