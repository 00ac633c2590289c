"""The distill spec (CLI) and table (recipe): what is accepted, and one-line errors for the rest."""

from __future__ import annotations

import pytest

from edgegolf.compression.distill import (
    DistillConfig,
    distill_config_from_dict,
    parse_distill_spec,
)
from edgegolf.errors import RecipeError


def test_spec_parses_to_the_same_config_as_the_table():
    config = parse_distill_spec("steps=600,data=bbc-news,lr=1e-4,schedule=cosine,layer_map=0;3;5,hidden_weight=0.5")
    assert config == distill_config_from_dict({"steps": 600, "data": "bbc-news", "lr": 1e-4, "schedule": "cosine",
                                               "layer_map": [0, 3, 5], "hidden_weight": 0.5})
    assert config.layer_map == (0, 3, 5) and config.batch_size == 16 and config.data == "bbc-news"
    assert config.to_dict()["layer_map"] == [0, 3, 5]


def test_defaults_and_automatic_evaluation_interval():
    config = parse_distill_spec("steps=200")
    assert config == DistillConfig(steps=200)
    assert config.evaluations_every == 20 and config.data == "train-split"
    assert parse_distill_spec("steps=200,eval_every=0").evaluations_every == 0


def test_a_path_that_looks_like_a_number_stays_a_path():
    assert parse_distill_spec("steps=5,data=2024").data == "2024"


@pytest.mark.parametrize("spec, words", [
    ("", ["empty", "steps=600"]),
    ("lr=1e-4", ["distill.steps is missing"]),
    ("steps=0", ["distill.steps = 0", ">= 1"]),
    ("steps=ten", ["distill.steps = 'ten'", "integer"]),
    ("steps=10,lr=0", ["distill.lr = 0.0", "0.0 < lr"]),
    ("steps=10,warmup=2", ["distill.warmup = 2.0", "<= 1.0"]),
    ("steps=10,schedule=step", ["distill.schedule = 'step'", "linear, cosine"]),
    ("steps=10,loss=kl", ["distill.loss = 'kl'", "cosine, mse"]),
    ("steps=10,precision=fp8", ["distill.precision = 'fp8'", "auto, fp32, bf16, fp16"]),
    ("steps=10,layer_map=a;b", ["distill.layer_map = 'a;b'", "[0, 3, 5]"]),
    ("steps=10,label_weight=1.5", ["distill.label_weight = 1.5", "<= 1.0"]),
    ("steps=10,batch=8", ["unknown field 'batch'", "batch_size"]),
    ("steps=10,steps=20", ["'steps' twice"]),
    ("steps=10,lr", ["'lr' is not key=value"]),
    ("steps=10,teacher_cache=yes", ["distill.teacher_cache = 'yes'", "true, false"]),
    ("steps=10,patience=0", ["distill.patience = 0", ">= 1"]),
])
def test_bad_specs_say_field_value_and_what_is_accepted(spec, words):
    with pytest.raises(RecipeError) as info:
        parse_distill_spec(spec)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_tables():
    with pytest.raises(RecipeError, match="must be a table"):
        distill_config_from_dict(["steps", 5])
    with pytest.raises(RecipeError, match=r"distill.steps = True is not an integer"):
        distill_config_from_dict({"steps": True})
    with pytest.raises(RecipeError, match=r"distill.data = '' is not accepted"):
        distill_config_from_dict({"steps": 3, "data": ""})
    with pytest.raises(RecipeError, match=r"distill.layer_map = \[-1\]"):
        distill_config_from_dict({"steps": 3, "layer_map": [-1]})
