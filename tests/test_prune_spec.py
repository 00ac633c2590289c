"""The prune spec string and its [prune] table: what is accepted, and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgegolf.compression.prune import PruneConfig, parse_prune_spec, prune_config_from_dict
from edgegolf.errors import RecipeError


def test_spec_string_and_table_mean_the_same(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the market rose\n", encoding="utf-8")
    spec = parse_prune_spec(f"layers=3, heads=0.5,ffn=0.25,vocab={corpus},layer_selection=importance")
    table = prune_config_from_dict({"layers": 3, "heads": 0.5, "ffn": 0.25, "vocab": str(corpus),
                                    "layer_selection": "importance"})
    assert spec == table
    assert spec.layers == 3 and spec.heads == 0.5 and spec.ffn == 0.25 and spec.vocab == corpus
    assert spec.structural and spec.needs_calibration
    # the provenance form reads back to the same config
    assert prune_config_from_dict(spec.to_dict()) == spec


def test_defaults_and_flags():
    config = parse_prune_spec("unstructured=0.5,unstructured_scope=layer,vocab_alphabet=false")
    assert config == PruneConfig(unstructured=0.5, unstructured_scope="layer", vocab_alphabet=False)
    assert not config.structural and not config.needs_calibration
    assert parse_prune_spec("heads=1").heads == 1.0  # an int is a fraction too: keep all
    assert not parse_prune_spec("heads=0.5,importance=magnitude").needs_calibration


def test_relative_vocab_path_is_taken_from_the_recipe_folder(tmp_path):
    (tmp_path / "news.txt").write_text("a text\n", encoding="utf-8")
    config = prune_config_from_dict({"vocab": "news.txt"}, base_dir=tmp_path)
    assert config.vocab == tmp_path / "news.txt"


@pytest.mark.parametrize("spec, names", [
    ("layers=0", ["prune.layers = 0", "integer >= 1"]),
    ("layers=2.5", ["prune.layers = 2.5", "not an integer"]),
    ("heads=1.5", ["prune.heads = 1.5", "0 < heads <= 1", "0.5 keeps half"]),
    ("heads=0", ["prune.heads = 0.0", "0 < heads <= 1"]),
    ("ffn=wide", ["prune.ffn = 'wide'", "not a number"]),
    ("ffn=true", ["prune.ffn = True", "not a number"]),
    ("unstructured=1", ["prune.unstructured = 1.0", "0 <= unstructured < 1"]),
    ("layer_selection=random", ["'random'", "even, importance"]),
    ("importance=taylor", ["'taylor'", "activation, magnitude"]),
    ("unstructured=0.3,unstructured_scope=row", ["'row'", "global, layer"]),
    ("vocab_alphabet=maybe", ["'maybe'", "true, false"]),
    ("vocab_min_count=0", ["prune.vocab_min_count = 0", ">= 1"]),
    ("depth=3", ["unknown field 'depth'", "layers", "heads", "ffn", "vocab"]),
    ("layers", ["'layers' is not key=value", "layers=3,heads=0.5"]),
    ("layers=3,layers=4", ["'layers' twice"]),
    ("", ["empty", "layers=3"]),
    ("vocab=/no/such/corpus.txt", ["'/no/such/corpus.txt' does not exist"]),
    ("layer_selection=importance", ["prunes nothing"]),
])
def test_bad_specs_name_the_key_the_value_and_what_is_accepted(spec, names):
    with pytest.raises(RecipeError) as caught:
        parse_prune_spec(spec)
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


def test_table_must_be_a_table():
    with pytest.raises(RecipeError, match="must be a table"):
        prune_config_from_dict(["layers", 3])
    with pytest.raises(RecipeError, match="not a path"):
        prune_config_from_dict({"vocab": 3})


def test_config_is_frozen():
    config = parse_prune_spec("layers=2")
    with pytest.raises(AttributeError):
        config.layers = 3  # type: ignore[misc]
    assert isinstance(config.to_dict()["layers"], int) and not isinstance(config.vocab, Path)
