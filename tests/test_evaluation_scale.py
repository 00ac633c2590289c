"""Evaluation that scales: padded batches where a stage's outputs do not depend on their
neighbours, a default subset with confidence intervals, progress with an ETA, and the refit
in batches of forward passes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from edgegolf.measure.evaluate import default_split, paired_drop_interval, wilson_interval


def test_wilson_interval_matches_the_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(25.53, abs=0.01) and high == pytest.approx(36.62, abs=0.01)
    low, high = wilson_interval(100, 100)  # honest at 100 %: not a zero-width interval
    assert high == pytest.approx(100.0) and 95.0 < low < 97.0


def test_paired_drop_interval_is_narrow_where_the_models_agree():
    teacher = np.ones(300, dtype=bool)
    teacher[:15] = False  # teacher 95 %
    same = paired_drop_interval(teacher, teacher.copy())
    assert same == (0.0, 0.0)
    worse = teacher.copy()
    worse[15:30] = False  # the candidate gets 15 more wrong: a 5-point drop
    low, high = paired_drop_interval(teacher, worse)
    assert 2.0 < low < 5.0 < high < 8.0


def test_the_default_subset_scores_only_texts_of_the_whole_splits_test_half():
    """compress trains and calibrates on the whole split; the limited split it scores tests only
    on the whole split's held-out texts."""
    from edgegolf.recipe import EvaluateSettings
    from edgegolf.tasks import get_task

    settings, adapter = EvaluateSettings(), get_task("feature-extraction")
    assert settings.limit is None and adapter.eval_limit(settings) == 600  # the default scores a subset
    scored = adapter.load_split(settings)
    whole = default_split()
    assert len(scored.train) + len(scored.test) == pytest.approx(adapter.eval_limit(settings), abs=5)
    # (BBC News repeats a few articles, so the whole split's halves share some texts already)
    assert set(scored.test.texts) <= set(whole.test.texts)
    assert len(scored.test) < len(whole.test)


def test_declared_batch_independence_holds_on_a_real_graph(tiny_bert, tmp_path):
    """Each built-in scheme's `batch_independent` agrees with its graph: batch 1 against padded
    batches of texts of different lengths, through the runtime."""
    from transformers import AutoTokenizer

    from edgegolf.compression.quantize import SCHEMES, quantize
    from edgegolf.runtime.models import open_model
    from edgegolf.runtime.tokenize import make_tokenizer
    from edgegolf.tasks import get_task

    adapter = get_task("feature-extraction")
    model = adapter.load_model(tiny_bert)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    tokenizer.save_pretrained(str(tmp_path))
    spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), 64)
    encoder = make_tokenizer(tmp_path / "tokenizer.json", spec)
    texts = [t[: 30 + 25 * (i % 6)] for i, t in enumerate(default_split().test.texts[:16])]
    # the teacher: one padded forward pass gives each text what it gets alone
    single = np.concatenate([adapter.teacher_rows(model, encoder, [t]) for t in texts])
    np.testing.assert_allclose(adapter.teacher_rows(model, encoder, texts), single, atol=1e-5)

    feeds = [encoder.encode(texts[:2]), encoder.encode([texts[3]])]
    fp32 = adapter.export(model, tmp_path / "fp32.onnx", input_names=spec.input_names, output_names=spec.output_names,
                          sample_feeds=feeds[0], verify_feeds=feeds, opset=17, atol=1e-3).path
    calibration = [encoder.encode([t]) for t in default_split().train.texts[:8]]
    differences = {}
    for name, cls in SCHEMES.items():
        path = fp32 if name == "none" else quantize(fp32, tmp_path / f"{name}.onnx", cls(),
                                                    calibration_feeds=calibration).path
        runtime = open_model(path, tmp_path / "tokenizer.json", spec, threads=1)
        differences[name] = float(np.abs(runtime.embed(texts, batch_size=1) - runtime.embed(texts, batch_size=8)).max())
        if cls.batch_independent:
            assert differences[name] < (1e-3 if name == "fp16" else 1e-5), (name, differences[name])
    # the check has teeth: dynamic int8 scales activations per input tensor, and it shows
    assert not SCHEMES["int8-dynamic"].batch_independent and differences["int8-dynamic"] > 1e-5


def test_manifest_records_each_stages_evaluation_batch_and_the_accuracy_interval(tiny_bert, tmp_path):
    import edgegolf
    from tests.builders.recipes import QUICK

    recipe = {**QUICK, "quantize": {"scheme": "int8-dynamic"}, "optimize": {"mode": "off"},
              "evaluate": {**QUICK["evaluate"], "batch": 8}}
    result = edgegolf.compress(str(tiny_bert), output=tmp_path / "b", recipe=recipe, budget="drop<=100")
    evaluation = result.manifest["evaluation"]
    assert evaluation["batch"] == {"teacher": 8, "onnx-fp32": 8, "quantized": 1}  # dynamic int8: one at a time
    for name, stage in result.manifest["stages"].items():
        m = stage["metrics"]
        assert m["accuracy_ci95_low"] <= m["accuracy"] <= m["accuracy_ci95_high"], name
        assert stage["eval_batch"] == evaluation["batch"][name]
    final = result.manifest["stages"]["quantized"]["metrics"]
    drop = result.manifest["stages"]["teacher"]["metrics"]["accuracy"] - final["accuracy"]
    assert final["accuracy_drop_ci95_low"] <= drop <= final["accuracy_drop_ci95_high"]


def test_batched_and_one_at_a_time_evaluation_give_the_same_scores(tiny_classifier):
    from transformers import AutoTokenizer

    from edgegolf.measure.evaluate import Evaluation
    from edgegolf.recipe import EvaluateSettings
    from edgegolf.runtime.tokenize import make_tokenizer
    from edgegolf.tasks import get_task

    adapter = get_task("text-classification")
    model = adapter.load_model(tiny_classifier)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_classifier))
    spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), 64)
    encoder = make_tokenizer(tiny_classifier / "tokenizer.json", spec)
    split = adapter.load_split(EvaluateSettings(limit=60))
    one, batched = Evaluation(adapter, split, batch=1), Evaluation(adapter, split, batch=16)
    assert batched.teacher_batch() == 16
    (out_one, m_one), (out_batched, m_batched) = one.teacher(model, encoder), batched.teacher(model, encoder)
    np.testing.assert_allclose(out_batched.all, out_one.all, atol=1e-5)  # rows back in the texts' order
    assert m_one == pytest.approx(m_batched)


def test_progress_lines_carry_an_eta_in_logs(caplog):
    from edgegolf.progress import eta_text, track

    assert eta_text(1, 4, 10.0) == "30 s left" and eta_text(1, 10, 60.0) == "9.0 min left" and eta_text(0, 4, 1) == ""
    with caplog.at_level(logging.INFO, logger="edgegolf"):
        seen = list(track([[1, 2], [3, 4], [5, 6], [7, 8]], "evaluate x", 8, size=len))
    assert seen == [[1, 2], [3, 4], [5, 6], [7, 8]]
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("evaluate x: 2/8") and "left" in line for line in lines), lines


def test_refit_in_batches_solves_the_same_least_squares(tiny_bert, pruned_folder):
    from transformers import AutoTokenizer

    from edgegolf.compression.distill.refit import refit_pruned_layers
    from edgegolf.compression.prune import load_pruned
    from edgegolf.tasks import get_task

    adapter = get_task("feature-extraction")
    teacher = adapter.load_model(tiny_bert)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    texts = list(default_split().train.texts[:24])
    batch = dict(tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="pt"))
    kept = [0, 2] if teacher.config.num_hidden_layers > 2 else [0]
    results = []
    for size in (24, 5):  # all at once, and in batches of 5 texts
        student = load_pruned(pruned_folder)
        layer_map = kept[: student.config.num_hidden_layers]
        record = refit_pruned_layers(teacher, student, batch, layer_map, batch_size=size)
        results.append((record, student.state_dict()))
    (whole, whole_weights), (parts, part_weights) = results
    assert whole["refitted"] and whole["tokens"] == parts["tokens"]
    for a, b in zip(whole["layers"], parts["layers"]):
        assert a["attention"] == pytest.approx(b["attention"], rel=1e-3)
        assert a["ffn"] == pytest.approx(b["ffn"], rel=1e-3)
        assert a["ffn"][1] < a["ffn"][0]
    for name, value in whole_weights.items():
        torch.testing.assert_close(part_weights[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_a_task_that_judges_scores_with_its_judges_metrics_and_one_with_neither_is_refused():
    """score() defaults to judge()'s metrics (feature-extraction and text-classification define only judge)."""
    from edgegolf.data import LabelledTexts, Split
    from edgegolf.tasks import get_task
    from edgegolf.tasks.base import Outputs, TaskAdapter

    rng = np.random.default_rng(0)
    labels = ("a", "b") * 10
    rows = rng.normal(size=(40, 8))
    rows[::2] += 3.0  # the "a" texts (even positions of both halves) lie apart from the "b" ones
    teacher, candidate = Outputs(rows[:20], rows[20:]), Outputs(rows[:20] + 0.1, rows[20:] - 0.1)
    texts = tuple(f"text {i}" for i in range(20))
    split = Split(LabelledTexts(texts, labels, "toy"), LabelledTexts(texts, labels, "toy"))
    adapter = get_task("feature-extraction")
    metrics, correct = adapter.judge(teacher, candidate, split, None)
    assert adapter.score(teacher, candidate, split, None) == metrics and metrics["accuracy"] == 100.0 * correct.mean()
    with pytest.raises(NotImplementedError, match="TaskAdapter defines neither score nor judge"):
        TaskAdapter().score(teacher, candidate, split, None)
