"""`edgegolf search --space`: a user narrows what the search varies from the command line, the
same fields `search(space=SearchSpace(...))` takes, and a bad term is refused before any work."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

from edgegolf.errors import EXIT_ERROR, RecipeError  # noqa: E402
from edgegolf.search.space import BoundSpace, ModelShape, SearchSpace, parse_space_spec  # noqa: E402
from tests.builders.cli import run_cli  # noqa: E402

MINILM_SHAPE = ModelShape(layers=6, heads=12, vocab_pruning=True)


def test_a_spec_sets_the_fields_it_names_and_leaves_the_rest_at_their_defaults():
    space = parse_space_spec("max_layers=2, heads=0.5;0.25, vocab=3;10, schemes=default;int4, embeddings=int4-block")
    assert (space.max_layers, space.heads, space.vocab) == (2, (0.5, 0.25), (3, 10))
    assert (space.schemes, space.embeddings) == (("default", "int4"), ("int4-block",))
    default = SearchSpace()
    assert (space.min_layers, space.ffn, space.int4_block_sizes) == (1, default.ffn, default.int4_block_sizes)


def test_trials_stay_inside_the_narrowed_layer_range(tmp_path):
    bound = BoundSpace(parse_space_spec("min_layers=2,max_layers=3"), MINILM_SHAPE, tmp_path / "corpus.txt")
    assert bound.layer_range() == (2, 3) and bound.describe()["layers"] == [2, 3]
    assert bound.baseline()["layers"] == 3  # the least pruned model the space holds
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kept = {bound.suggest(study.ask())["layers"] for _ in range(30)}
    assert kept == {2, 3}
    # a range past the model's own count is cut to it; the default space is the whole model
    assert BoundSpace(parse_space_spec("max_layers=12"), MINILM_SHAPE, None).layer_range() == (1, 6)
    assert BoundSpace(SearchSpace(), MINILM_SHAPE, None).describe()["layers"] == [1, 6]


@pytest.mark.parametrize(("spec", "words"), [
    ("layerz=2", ["no setting 'layerz'", "min_layers, max_layers, heads, ffn, vocab"]),
    ("max_layers=two", ["max_layers = 'two'", "integer >= 1"]),
    ("max_layers=0", ["max_layers = 0", "integer >= 1"]),
    ("min_layers=3,max_layers=2", ["max_layers = 2 is below min_layers = 3"]),
    ("heads=0.5;half", ["heads = '0.5;half'", "float values separated by ';'"]),
    ("heads=1.5", ["heads = (1.5,)", "0 < f <= 1"]),
    ("schemes=int3", ["'int3' is not accepted", "int8-dynamic"]),
    ("max_layers", ["not key=value"]),
])
def test_bad_terms_name_what_was_wrong_and_what_is_accepted(spec, words):
    with pytest.raises(RecipeError) as error:
        parse_space_spec(spec)
    assert all(w in str(error.value) for w in words), str(error.value)


def test_the_cli_refuses_a_bad_space_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["search", "--budget", "size<=6MB", "--space", "max_layers=2,layerz=1", "-o", out], capsys)
    assert code == EXIT_ERROR and "search space has no setting 'layerz'" in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []
