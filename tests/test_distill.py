"""Distillation end to end on tiny real models built here, with real BBC News text.

The loss falls for both tasks; an interrupted run resumed from its checkpoint ends with the
weights of an uninterrupted one; checkpoints hold no pickle; early stopping and bad settings.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers import BertTokenizer

from edgegolf.compression.distill import (
    DistillConfig,
    auto_layer_map,
    distill,
    load_transfer,
    lr_factor,
)
from edgegolf.compression.prune import parse_prune_spec, prune_model
from edgegolf.errors import DataError, RecipeError
from tests.builders.models import bbc_vocabulary

LABELS = ["business", "entertainment", "politics", "sport", "tech"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run 50x slower when two threads spin against other work on this shared box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(vocab=bbc_vocabulary(800), do_lower_case=True)


@pytest.fixture(scope="module")
def bbc():
    data = load_transfer("bbc-news")
    keep = list(range(0, len(data.texts), 40))[:40]  # 40 texts, every class
    return [data.texts[i] for i in keep], [data.labels[i] for i in keep]


def tiny(tokenizer, classifier: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, id2label=dict(enumerate(LABELS)),
        initializer_range=0.2,  # at BERT's 0.02 a random layer barely changes its input: nothing to distil
        label2id={l: i for i, l in enumerate(LABELS)},
    )
    return (transformers.BertForSequenceClassification if classifier else transformers.BertModel)(config).eval()


def student_of(teacher, tokenizer):
    student, _, _ = prune_model(teacher, tokenizer, parse_prune_spec("layers=1,heads=0.5,ffn=0.5,importance=magnitude"))
    return student


@pytest.mark.support(task="feature-extraction", arch="bert", stage="distill")
def test_feature_extraction_loss_falls_and_the_teacher_is_untouched(tokenizer, bbc):
    teacher = tiny(tokenizer)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = student_of(teacher, tokenizer)
    # no refit: the least-squares repair alone takes most of the loss away before step 0 (the default's point);
    # here the gradient steps must
    config = DistillConfig(steps=30, batch_size=8, lr=3e-3, max_length=32, loss="mse", hidden_weight=1.0,
                           eval_every=10, eval_fraction=0.1, refit=False)
    report = distill(teacher, student, tokenizer, "feature-extraction", config, texts=bbc[0])
    evals = [e["loss"] for e in report.eval_history]
    assert [e["step"] for e in report.eval_history] == [0, 10, 20, 30]
    assert evals[-1] < 0.6 * evals[0], evals
    assert report.steps_run == 30 and report.layer_map == [1] and report.eval_texts == 4
    assert report.data["texts"] == len(bbc[0]) and report.tokens > 0 and report.cpu_seconds > 0
    assert not student.training
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    json.dumps(report.to_dict())  # the provenance record is JSON-ready


@pytest.mark.support(task="text-classification", arch="bert", stage="distill")
def test_text_classification_loss_falls_with_hard_labels(tokenizer, bbc):
    teacher = tiny(tokenizer, classifier=True)
    student = student_of(teacher, tokenizer)
    config = DistillConfig(steps=30, batch_size=8, lr=3e-3, max_length=32, eval_every=10, eval_fraction=0.1,
                           label_weight=0.3, refit=False)  # the gradient steps must do the work here
    report = distill(teacher, student, tokenizer, "text-classification", config, texts=bbc[0], labels=bbc[1])
    evals = [e["kl"] for e in report.eval_history]
    assert evals[-1] < 0.6 * evals[0], evals
    assert "ce" in report.eval_history[-1]


def run(tokenizer, bbc, folder, interrupt_at: int | None = None, resume: bool = False, **overrides):
    teacher = tiny(tokenizer)
    student = student_of(teacher, tokenizer)
    settings = {"steps": 8, "batch_size": 6, "lr": 2e-3, "max_length": 24, "hidden_weight": 0.5, "eval_every": 3,
                "eval_fraction": 0.1, "checkpoint_every": 3, "seed": 3,
                "dropout": True}  # dropout on: resuming must restore its random state too
    config = DistillConfig(**{**settings, **overrides})
    calls = {"n": 0}

    def interrupt(module, args, output):  # a real Ctrl-C in the middle of training, not a fake model
        if module.training:
            calls["n"] += 1
            if interrupt_at is not None and calls["n"] > interrupt_at:
                raise KeyboardInterrupt

    handle = student.register_forward_hook(interrupt)
    try:
        report = distill(teacher, student, tokenizer, "feature-extraction", config, texts=bbc[0][:24],
                         checkpoint_dir=folder, resume=resume)
    finally:
        handle.remove()
    return student, report


def test_an_interrupted_run_resumes_to_the_same_weights(tokenizer, bbc, tmp_path):
    whole, whole_report = run(tokenizer, bbc, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tokenizer, bbc, tmp_path / "cut", interrupt_at=4)  # 4 training batches done, checkpoint at step 3
    assert json.loads((tmp_path / "cut" / "latest.json").read_text())["step"] == 3
    resumed, report = run(tokenizer, bbc, tmp_path / "cut", resume=True)
    assert report.resumed_from_step == 3 and report.steps_run == 8
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert [e["step"] for e in report.eval_history] == [e["step"] for e in whole_report.eval_history]
    assert report.eval_history[-1]["loss"] == pytest.approx(whole_report.eval_history[-1]["loss"], rel=1e-4)
    # a different start (no dropout seed restore) would not match: the check has teeth
    fresh, _ = run(tokenizer, bbc, tmp_path / "other", seed=4)
    assert any(not torch.allclose(fresh.state_dict()[k], v, atol=1e-5) for k, v in whole.state_dict().items())


def test_checkpoints_are_safetensors_and_json_only(tokenizer, bbc, tmp_path):
    run(tokenizer, bbc, tmp_path, patience=5)
    folder = tmp_path / json.loads((tmp_path / "latest.json").read_text())["checkpoint"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["best.safetensors", "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-0000008"]  # older ones removed, no temp left
    assert not list(tmp_path.glob(".*"))
    optimizer = load_file(str(folder / "optimizer.safetensors"))
    assert any(k.endswith("exp_avg_sq") for k in optimizer)
    assert json.loads((folder / "state.json").read_text())["step"] == 8


def test_resuming_with_other_settings_or_data_is_refused(tokenizer, bbc, tmp_path):
    run(tokenizer, bbc, tmp_path)
    with pytest.raises(RecipeError, match=r"written with distill.lr = 0.002, not 0.001"):
        run(tokenizer, bbc, tmp_path, resume=True, lr=1e-3)
    teacher = tiny(tokenizer)
    config = DistillConfig(steps=8, batch_size=6, lr=2e-3, max_length=24, hidden_weight=0.5, eval_every=3,
                           eval_fraction=0.1, checkpoint_every=3, seed=3, dropout=True)
    with pytest.raises(DataError, match="trained on other transfer texts"):
        distill(teacher, student_of(teacher, tokenizer), tokenizer, "feature-extraction", config,
                texts=bbc[0][1:25], checkpoint_dir=tmp_path, resume=True)


def test_early_stopping_keeps_the_best_student(tokenizer, bbc):
    teacher = tiny(tokenizer)
    student = student_of(teacher, tokenizer)
    config = DistillConfig(steps=50, batch_size=8, lr=1e-9, max_length=24, eval_every=2, patience=2)
    report = distill(teacher, student, tokenizer, "feature-extraction", config, texts=bbc[0])
    assert report.stopped_early and report.steps_run == 4 and report.restored_best_from_step == 0


def test_bad_settings_fail_with_one_line(tokenizer, bbc):
    teacher = tiny(tokenizer)
    student = student_of(teacher, tokenizer)
    with pytest.raises(RecipeError, match=r"distill.layer_map = \[0, 1\] is not accepted; give 1 teacher layers"):
        distill(teacher, student, tokenizer, "feature-extraction",
                DistillConfig(steps=1, hidden_weight=1.0, layer_map=(0, 1)), texts=bbc[0])
    with pytest.raises(DataError, match="texts are empty"):
        distill(teacher, student, tokenizer, "feature-extraction", DistillConfig(steps=1), texts=[" "])
    with pytest.raises(DataError, match="2 labels for 39 texts"):
        distill(teacher, student, tokenizer, "text-classification", DistillConfig(steps=1), texts=bbc[0],
                labels=["a", "b"])
    with pytest.raises(DataError, match="too few to hold out"):
        distill(teacher, student, tokenizer, "feature-extraction", DistillConfig(steps=1), texts=["one text"])
    narrow = transformers.BertModel(transformers.BertConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=16,
                                                            num_hidden_layers=1, num_attention_heads=2,
                                                            intermediate_size=32))
    with pytest.raises(RecipeError, match="student's width is 16 and the teacher's 32"):
        distill(teacher, narrow, tokenizer, "feature-extraction", DistillConfig(steps=1, eval_every=0), texts=bbc[0])


def test_schedule_and_layer_map_helpers():
    config = DistillConfig(steps=10, warmup=0.2, schedule="linear")
    assert [round(lr_factor(s, config), 3) for s in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.125]
    cosine = DistillConfig(steps=10, warmup=0.0, schedule="cosine")
    assert lr_factor(0, cosine) == pytest.approx(1.0) and lr_factor(5, cosine) == pytest.approx(0.5)
    assert auto_layer_map(3, 6) == [1, 3, 5] and auto_layer_map(2, 2) == [0, 1] and auto_layer_map(4, 12) == [2, 5, 8, 11]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_gpu_trains_and_hands_the_student_back_on_cpu(tokenizer, bbc):
    teacher = tiny(tokenizer)
    student = student_of(teacher, tokenizer)
    config = DistillConfig(steps=30, batch_size=8, lr=3e-3, max_length=32, loss="mse", hidden_weight=1.0,
                           eval_every=10, eval_fraction=0.1, device="cuda", precision="bf16")
    report = distill(teacher, student, tokenizer, "feature-extraction", config, texts=bbc[0])
    assert report.device.startswith("cuda") and report.precision == "bf16"
    assert report.refit is not None and report.refit["refitted"]  # the least-squares refit ran on the GPU too
    # measured on an H200: 0.176 -> 0.145 (the refit had already taken the first step's share)
    assert report.eval_history[-1]["loss"] < 0.9 * report.eval_history[0]["loss"]
    assert next(student.parameters()).device.type == "cpu" and next(teacher.parameters()).device.type == "cpu"


def test_auto_precision_on_cpu_is_bf16_only_where_the_cpu_computes_bf16():
    """Emulated bf16 cost 10x fp32's CPU time per step on an AVX2-only CPU: "auto" picks fp32 there."""
    from pathlib import Path

    from edgegolf.compression.distill.optimization import device_and_precision

    device, precision = device_and_precision(DistillConfig(steps=1, device="cpu"))
    assert device.type == "cpu" and precision in ("bf16", "fp32")
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = set(cpuinfo.read_text().split())
    assert precision == ("bf16" if flags & {"avx512_bf16", "amx_bf16"} else "fp32"), sorted(flags & {"avx2", "avx512f"})


def test_bf16_autocast_runs_on_cpu_when_asked(tokenizer, bbc):
    teacher = tiny(tokenizer, classifier=True)
    student = student_of(teacher, tokenizer)
    config = DistillConfig(steps=3, batch_size=4, max_length=16, eval_every=0, precision="bf16", device="cpu")
    report = distill(teacher, student, tokenizer, "text-classification", config, texts=bbc[0][:12])
    assert report.precision == "bf16" and report.steps_run == 3 and report.eval_history == []
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in report.loss_history)
    assert next(student.parameters()).dtype == torch.float32  # autocast leaves the weights in fp32


def test_cached_teacher_targets_train_the_same_as_rerunning_the_teacher(tokenizer, bbc):
    # texts of different lengths, so later epochs pad cached sequences to other batch lengths
    texts = [" ".join(t.split()[: 3 + 2 * i]) for i, t in enumerate(bbc[0][:15])]
    results = []
    for cache in (True, False):
        teacher = tiny(tokenizer)
        student = student_of(teacher, tokenizer)
        config = DistillConfig(steps=9, batch_size=5, lr=2e-3, max_length=40, hidden_weight=1.0, eval_every=0,
                               teacher_cache=cache, dropout=False)
        report = distill(teacher, student, tokenizer, "feature-extraction", config, texts=texts)
        results.append((student.state_dict(), report.loss_history))
        # 9 steps of 5 = 3 epochs of the 15 texts: with the cache the teacher sees each text once
        assert report.teacher_targets == (15 if cache else 45)
        assert {"teacher", "student forward and loss", "backward", "optimizer"} <= set(report.cpu_seconds_by_part)
        assert sum(report.cpu_seconds_by_part.values()) <= report.cpu_seconds + 0.05  # parts, not more than the whole
    (cached, cached_losses), (rerun, rerun_losses) = results
    assert [l for _, l in cached_losses] == pytest.approx([l for _, l in rerun_losses], rel=1e-4)
    for name, value in rerun.items():
        if name.endswith("key.bias"):
            continue  # softmax ignores it: its gradient is float noise, which Adam scales up to full steps
        torch.testing.assert_close(cached[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_texts_of_the_evaluation_test_split_are_never_trained_on(tokenizer, bbc):
    from edgegolf.data import LabelledTexts, Split

    texts = bbc[0][:10]
    split = Split(LabelledTexts(tuple(texts[:5]), ("x",) * 5, "mine"), LabelledTexts((texts[7],), ("x",), "mine"))
    teacher = tiny(tokenizer)
    report = distill(teacher, student_of(teacher, tokenizer), tokenizer, "feature-extraction",
                     DistillConfig(steps=1, batch_size=4, max_length=16, eval_every=0), texts=texts, split=split)
    assert report.data["dropped_test_overlap"] == 1 and report.data["texts"] == 9 and report.train_texts == 9


def test_frozen_embeddings_stay_as_they_were(tokenizer, bbc):
    teacher = tiny(tokenizer)
    student = student_of(teacher, tokenizer)
    words = student.get_input_embeddings().weight.detach().clone()
    layer = student.encoder.layer[0].output.dense.weight.detach().clone()
    distill(teacher, student, tokenizer, "feature-extraction",
            DistillConfig(steps=3, batch_size=4, max_length=16, lr=1e-2, eval_every=0, freeze_embeddings=True),
            texts=bbc[0][:12])
    assert torch.equal(student.get_input_embeddings().weight, words)
    assert not torch.equal(student.encoder.layer[0].output.dense.weight, layer)
    assert student.get_input_embeddings().weight.requires_grad  # handed back trainable


def test_a_vocabulary_pruned_student_learns_through_its_own_tokenizer(tokenizer, bbc):
    teacher = tiny(tokenizer)
    student, student_tokenizer, _ = prune_model(
        teacher, tokenizer, parse_prune_spec("layers=1,importance=magnitude"), vocab_texts=bbc[0][:20])
    assert len(student_tokenizer.get_vocab()) < len(tokenizer.get_vocab())
    config = DistillConfig(steps=20, batch_size=8, lr=3e-3, max_length=32, loss="mse", eval_every=10,
                           eval_fraction=0.1, dropout=False)
    result = distill(teacher, student, student_tokenizer, "feature-extraction", config, texts=bbc[0],
                     teacher_tokenizer=tokenizer)
    assert result.eval_history[-1]["loss"] < 0.6 * result.eval_history[0]["loss"]
    assert result.config.hidden_weight == 0.0  # the default hidden-state loss cannot match token by token: dropped
    with pytest.raises(RecipeError, match="different tokenizers"):  # one asked for is refused
        distill(teacher, student, student_tokenizer, "feature-extraction",
                DistillConfig(steps=1, hidden_weight=0.5, max_length=32), texts=bbc[0], teacher_tokenizer=tokenizer)


def test_later_windows_of_long_train_texts_add_transfer_data(tokenizer, bbc):
    from edgegolf.compression.distill.batches import later_windows

    pieces, owners = later_windows(tokenizer, [bbc[0][0], "short"], max_length=16, windows=3)
    assert owners == [0, 0] and all(piece in bbc[0][0] for piece in pieces)
    assert all(len(tokenizer(piece)["input_ids"]) <= 16 for piece in pieces)
    teacher = tiny(tokenizer)
    config = DistillConfig(steps=2, batch_size=4, max_length=16, eval_every=1, eval_fraction=0.1, windows=3)
    report = distill(teacher, student_of(teacher, tokenizer), tokenizer, "feature-extraction", config,
                     texts=bbc[0][:20])
    assert report.train_texts == 18 and report.eval_texts == 2 and report.train_windows == 18 * 3


def test_window_stride_gives_overlapping_windows_over_the_same_span(tokenizer, bbc):
    from edgegolf.compression.distill.batches import later_windows
    from edgegolf.compression.distill.config import distill_config_from_dict

    text = bbc[0][0]
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) > 3 * 14  # longer than the span
    plain, _ = later_windows(tokenizer, [text], max_length=16, windows=3)
    half, owners = later_windows(tokenizer, [text], max_length=16, windows=3, stride=7)
    # window body 14 tokens (16 less [CLS]/[SEP]): starts 14, 28 without a stride; 7, 14, ..., 35 with 7
    assert len(plain) == 2 and len(half) == 5 and owners == [0] * 5
    assert half[1] == plain[0] and all(piece in text for piece in half)
    assert all(len(tokenizer(piece)["input_ids"]) <= 16 for piece in half)
    assert distill_config_from_dict({"steps": 1, "window_stride": 64}).window_stride == 64
    with pytest.raises(RecipeError, match="window_stride"):
        distill_config_from_dict({"steps": 1, "window_stride": -1})


@pytest.mark.support(task="feature-extraction", arch="bert", stage="distill")
def test_cpu_training_runs_on_the_configured_threads_and_gives_the_callers_back(tokenizer, bbc):
    teacher = tiny(tokenizer)
    student = student_of(teacher, tokenizer)
    seen: list[int] = []
    hook = student.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    torch.set_num_threads(2)  # the caller's count (the module fixture puts 1 back afterwards)
    try:
        report = distill(teacher, student, tokenizer, "feature-extraction",
                         DistillConfig(steps=2, batch_size=4, max_length=16, eval_every=0, refit=False, threads=1),
                         texts=bbc[0][:8])
        assert torch.get_num_threads() == 2  # handed back
    finally:
        hook.remove()
        torch.set_num_threads(1)
    assert seen and set(seen) == {1} and report.threads == 1
    assert DistillConfig(steps=1).threads == 0  # the default: half the cores (work_threads)
