"""The search chooses how embedding tables are stored: 8-bit rows or 4-bit blocks
(GatherBlockQuantized), for the schemes whose `embeddings` field declares search values.
A real search on a tiny model, and its saved recipe rerun through `edgegolf compress`."""

from __future__ import annotations

import json
from collections import Counter

import onnx
import pytest

pytest.importorskip("optuna")

from edgegolf.errors import RecipeError  # noqa: E402
from edgegolf.runtime import load  # noqa: E402
from edgegolf.search import SearchSpace, search  # noqa: E402
from edgegolf.search.space import BoundSpace, ModelShape  # noqa: E402
from tests.builders.cli import run_cli  # noqa: E402
from tests.builders.search import write_quick_recipe  # noqa: E402


def _ops(bundle) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(bundle / "model.onnx")).graph.node)


def test_a_search_restricted_to_4_bit_tables_ships_them_and_its_recipe_remakes_the_bundle(tiny_bert, tmp_path,
                                                                                          capsys):
    quick = write_quick_recipe(tmp_path)
    space = SearchSpace(min_layers=2, heads=(1.0,), ffn=(1.0,), vocab=(0,), schemes=("int8-dynamic",),
                        embeddings=("int4-block",))
    out = tmp_path / "out"
    result = search(str(tiny_bert), output=out, budget="size<=50MB", trials=1, recipe=quick, space=space, seed=0)
    assert result.chosen.params["embeddings"] == "int4-block"
    assert "int4-block embeddings" in result.chosen.label()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["search"]["params"]["embeddings"] == "int4-block"
    searched = _ops(out)
    assert searched["GatherBlockQuantized"] >= 1  # the word table (and the 256-row position table)

    # the 8-bit table: the same recipe with the scheme's default embeddings (per-row int8)
    code, _, err = run_cli(["compress", str(tiny_bert), "--recipe", str(quick), "--quantize", "int8-dynamic",
                            "-o", str(tmp_path / "rows8")], capsys)
    assert code == 0, err
    assert _ops(tmp_path / "rows8")["GatherBlockQuantized"] == 0
    size_4bit, size_8bit = (p.stat().st_size for p in (out / "model.onnx", tmp_path / "rows8" / "model.onnx"))
    assert size_4bit < 0.9 * size_8bit, (size_4bit, size_8bit)

    # the bundle's saved recipe names the choice and rebuilds the same graph
    recipe = (out / "recipe.toml").read_text()
    assert 'embeddings = "int4-block"' in recipe
    code, _, err = run_cli(["compress", str(tiny_bert), "--recipe", str(out / "recipe.toml"),
                            "-o", str(tmp_path / "again")], capsys)
    assert code == 0, err
    assert _ops(tmp_path / "again") == searched
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert load(out).embed(["Shares rose."]).shape == (1, 32)


def test_the_table_choice_is_offered_only_where_a_scheme_declares_it(tmp_path):
    space = SearchSpace()
    assert space.embeddings == ("per-row", "int4-block")  # Int8Dynamic's / Int4WeightOnly's `search` values
    bound = BoundSpace(space, ModelShape(layers=2, heads=2, vocab_pruning=False), None)
    assert bound.baseline()["embeddings"] == "per-row"
    # the scheme's default table is left unsaid: the recipe is what it was before the choice existed
    assert bound.overrides(bound.baseline())["quantize"] == {"scheme": "default"}
    params = {"layers": 2, "heads": 1.0, "ffn": 1.0, "vocab": 0, "quantize": "int4", "int4_block_size": 64,
              "embeddings": "int4-block"}
    assert bound.overrides(params)["quantize"] == {"scheme": "int4", "block_size": 64, "embeddings": "int4-block"}
    assert "embeddings" not in BoundSpace(SearchSpace(schemes=("none",)), bound.shape, None).baseline()
    assert bound.describe()["embeddings"] == ["per-row", "int4-block"]
    with pytest.raises(RecipeError, match="not accepted for scheme 'int4'; choose from: per-row, float"):
        SearchSpace(embeddings=("per-tensor",))  # int8's, not int4's
    with pytest.raises(RecipeError, match="needs a scheme that stores embedding tables"):
        SearchSpace(schemes=("none",), embeddings=("int4-block",))
