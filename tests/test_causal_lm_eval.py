"""causal-lm evaluation: a scored-token budget that holds, batched windows, a bootstrap interval for bits/byte."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgegolf.measure.evaluate import Evaluation
from edgegolf.recipe import EvaluateSettings
from edgegolf.runtime.tokenize import make_tokenizer
from edgegolf.tasks.base import Outputs
from edgegolf.tasks.causal_lm import DEFAULT_TOKEN_BUDGET, bits_per_byte_interval
from tests.builders.causal_lm import bbc_text_file, export_tiny_lm, load_tiny_lm, save_tiny_lm

BUDGET = 700


@pytest.fixture(scope="module")
def bbc_txt(tmp_path_factory) -> Path:
    return bbc_text_file(tmp_path_factory.mktemp("text") / "bbc.txt", 1000, 1100)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(adapter, torch model, runtime CausalLM, encoder) of a tiny LLaMA and its verified export."""
    folder = save_tiny_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")
    out = tmp_path_factory.mktemp("export-llama")
    model, lm = export_tiny_lm(folder, out)
    return load_tiny_lm(folder)[0], model, lm, make_tokenizer(out / "tok" / "tokenizer.json", lm.spec)


def scored(adapter, item, texts) -> Outputs:
    return Outputs(np.zeros((0, 4)), np.stack([item(text) for text in texts]))


@pytest.mark.support(task="causal-lm", arch="llama", stage=("evaluate",))
def test_the_token_budget_holds_for_teacher_and_artifact_on_the_same_bytes(llama, bbc_txt):
    adapter, model, lm, encoder = llama
    split = adapter.load_split(EvaluateSettings(data=str(bbc_txt), limit=BUDGET))
    whole = adapter.load_split(EvaluateSettings(data=str(bbc_txt), limit=10 ** 9))
    assert len(split.train) == len(whole.train)  # the budget cuts only what is scored
    assert 1 <= len(split.test) < len(whole.test) and split.test.texts == whole.test.texts[:len(split.test)]
    scorer = adapter.for_split(split)  # the budget of the split scored below
    teacher = scored(scorer, lambda t: scorer.teacher_item(model, encoder, t), split.test.texts)
    artifact = scored(scorer, lambda t: scorer.artifact_item(lm, t), split.test.texts)
    mine, theirs = scorer.score(teacher, artifact, split, model.config), scorer.score(teacher, teacher, split, None)
    assert mine["scored_tokens"] == theirs["scored_tokens"] == BUDGET == mine["token_budget"]
    assert mine["scored_bytes"] == theirs["scored_bytes"] > BUDGET  # the same bytes, several per token
    assert mine["scored_texts"] == 16  # spread over MIN_TEXTS texts, at most ceil(700 / 16) tokens each
    assert teacher.test[:, 1].max() == 44
    assert mine["bits_per_byte"] == pytest.approx(theirs["bits_per_byte"], rel=1e-5)  # fp32 export, batched windows
    assert mine["bits_per_byte_ci_low"] < mine["bits_per_byte"] < mine["bits_per_byte_ci_high"]
    assert abs(mine["bits_per_byte_increase_ci_low"]) < 1e-4 and abs(mine["bits_per_byte_increase_ci_high"]) < 1e-4
    # a larger budget scores more: the cap, not the data, was what stopped it
    larger = adapter.for_split(adapter.load_split(EvaluateSettings(data=str(bbc_txt), limit=2 * BUDGET)))
    bigger = scored(larger, lambda t: larger.artifact_item(lm, t), split.test.texts)
    assert BUDGET < bigger.test[:, 1].sum() <= 2 * BUDGET


@pytest.mark.parametrize("scored_first", [True, False])
def test_the_recorded_token_budget_is_the_scored_splits_whatever_was_loaded_after_it(llama, bbc_txt, scored_first):
    """compress loads the scored split and the whole one in either order: each split carries its own budget."""
    adapter, model, _, encoder = llama
    scored_settings = EvaluateSettings(data=str(bbc_txt), limit=BUDGET)
    if scored_first:
        split = adapter.load_split(scored_settings)
        adapter.load_split(replace(scored_settings, limit=0))  # the whole split, loaded after
    else:
        adapter.load_split(replace(scored_settings, limit=0))
        split = adapter.load_split(scored_settings)
    outputs, metrics = Evaluation(adapter, split).teacher(model, encoder)
    assert metrics["token_budget"] == BUDGET == metrics["scored_tokens"] == outputs.test[:, 1].sum()
    assert adapter.budget is None  # loading a split leaves the shared adapter as it was


def test_an_unset_limit_means_the_default_token_budget_and_zero_every_token_on_bbc_news():
    from edgegolf.tasks import get_task

    adapter = get_task("causal-lm")
    split = adapter.load_split(EvaluateSettings())
    assert split.budget.tokens == DEFAULT_TOKEN_BUDGET
    full = adapter.load_split(EvaluateSettings(limit=10 ** 9))
    assert len(split.train) == len(full.train) and 0 < len(split.test) < len(full.test)
    everything = adapter.load_split(EvaluateSettings(limit=0))
    assert everything.test.texts == full.test.texts


def test_bits_per_byte_interval_is_seeded_and_narrows_with_more_texts():
    rng = np.random.default_rng(3)
    rows = np.column_stack([rng.uniform(400, 600, 400), np.full(400, 100), rng.uniform(380, 420, 400), np.zeros(400)])
    point = rows[:, 0].sum() / np.log(2) / rows[:, 2].sum()
    few, many = bits_per_byte_interval(rows[:20]), bits_per_byte_interval(rows)
    assert few == bits_per_byte_interval(rows[:20])  # seeded
    assert many[0] < point < many[1] and many[1] - many[0] < few[1] - few[0]
    shifted = rows.copy()
    shifted[:, 0] *= 1.1  # every text 10% worse: the paired interval of the increase excludes 0
    low, high = bits_per_byte_interval(shifted, rows)
    assert 0 < low < 0.1 * point < high
    assert all(np.isnan(bits_per_byte_interval(np.zeros((3, 4)))))  # nothing scored: no interval
