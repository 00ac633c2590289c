"""text-classification end to end on a tiny real classifier: labelled data files, every stage,
accuracy / macro-F1 / agreement for the teacher and each ONNX artifact, and the bundle in the runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgegolf
from edgegolf.data import load_labelled_texts
from edgegolf.runtime import load
from edgegolf.tasks.text_classification import class_ids, macro_f1
from tests.builders.cli import run_cli
from tests.builders.recipes import QUICK

CLASSES = ["business", "entertainment", "politics", "sports", "tech"]  # the tiny classifier's id2label


def bbc_rows(per_class: int) -> list[tuple[str, str]]:
    """A few real BBC News articles per class, under the tiny classifier's label names."""
    data = load_labelled_texts()
    rows, seen = [], {}
    for text, label in zip(data.texts, data.labels):
        name = "sports" if label == "sport" else label
        if seen.get(name, 0) < per_class:
            seen[name] = seen.get(name, 0) + 1
            rows.append((text[:600], name))
    return rows


def test_macro_f1_is_scikit_learns():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        truth, predicted = rng.integers(0, 5, 40), rng.integers(0, 6, 40)  # a class only predicted counts too
        assert macro_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert macro_f1(np.array([1, 1]), np.array([1, 1])) == 1.0


def test_data_labels_match_model_classes_by_name_or_by_id():
    assert class_ids(("neg", "pos"), ["pos", "neg", "other"]) == [1, 0, -1]
    assert class_ids(("LABEL_0", "LABEL_1"), ["1", "0", "7"]) == [1, 0, -1]  # ids where no label is a name


@pytest.mark.support(task="text-classification", arch="bert",
                     stage=("load", "export", "optimize", "quantize:int8-static", "evaluate", "runtime"))
def test_every_stage_reports_accuracy_macro_f1_and_agreement(tiny_classifier, tmp_path, capsys):
    """The CLI on a .csv with its own column names, calibrating int8-static on the train split.

    --optimize on: the fused graph carries no tensor types, and calibrating it untyped once
    left the pooler's Gather without a range (a raw ValueError from onnxruntime).
    """
    import csv

    with (tmp_path / "news.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "body", "topic"])
        writer.writerows((i, text, label) for i, (text, label) in enumerate(bbc_rows(10)))
    out = tmp_path / "bundle"
    code, stdout, stderr = run_cli([
        "compress", tiny_classifier, "-o", out, "--data", tmp_path / "news.csv", "--text-column", "body",
        "--label-column", "topic", "--quantize", "int8-static", "--optimize", "on", "--budget", "drop<=100"], capsys)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "text-classification"
    assert manifest["evaluation"]["classes"] == CLASSES and manifest["evaluation"]["test_texts"] == 15
    assert manifest["recipe"]["evaluate"]["text_column"] == "body"
    stages = manifest["stages"]
    assert sorted(stages) == ["onnx-fp32", "onnx-optimized", "quantized", "teacher"]
    for name, stage in stages.items():
        metrics = stage["metrics"]
        assert 0 <= metrics["accuracy"] <= 100 and 0 <= metrics["macro_f1"] <= 100, name
        assert "accuracy_is_agreement" not in metrics  # the data's labels are the model's classes
    assert stages["teacher"]["metrics"]["agreement"] == 100.0
    assert stages["onnx-fp32"]["metrics"]["agreement"] == 100.0  # the export predicts what PyTorch predicts
    assert stages["onnx-fp32"]["metrics"]["macro_f1"] == pytest.approx(stages["teacher"]["metrics"]["macro_f1"])
    assert stages["quantized"]["metrics"]["agreement"] >= 80.0
    quantize = next(r for r in manifest["provenance"] if r["stage"] == "quantize")
    assert quantize["settings"]["scheme"] == "int8-static"
    # The stage table (terminal and report.md) shows the classification metrics as columns.
    for text in (stdout, (out / "report.md").read_text()):
        assert "macro-F1" in text and "agreement" in text, text
    code, report, stderr = run_cli(["report", out], capsys)  # and `edgegolf report` reads them back
    assert code == 0 and "macro-F1 %" in report and "agreement %" in report, stderr
    predictions = load(out).classify(["Shares in the bank fell after the results.", "The striker scored twice."])
    assert all(p.label in CLASSES for p in predictions)


@pytest.mark.support(task="text-classification", arch="bert", stage=("prune", "distill", "optimize", "quantize:int4"))
def test_pruned_student_distills_with_the_files_hard_labels(tiny_classifier, tmp_path):
    rows = [{"text": text, "label": CLASSES.index(label)} for text, label in bbc_rows(8)]  # class ids, not names
    (tmp_path / "news.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    recipe = {**QUICK, "evaluate": {**QUICK["evaluate"], "data": str(tmp_path / "news.jsonl")},
              "prune": {"layers": 1}, "distill": {"steps": 4, "batch_size": 8, "eval_every": 2, "lr": 1e-3},
              "quantize": {"scheme": "int4"}, "optimize": {"mode": "on"}}
    result = edgegolf.compress(str(tiny_classifier), output=tmp_path / "out", recipe=recipe)
    assert [s.name for s in result.stages] == ["teacher", "onnx-fp32", "onnx-optimized", "quantized"]
    distill = next(r for r in result.manifest["provenance"] if r["stage"] == "distill")
    assert distill["measured"]["data"]["labelled"] is True
    # the hard-label cross-entropy is part of the loss: the file's class ids reached the student
    assert all("ce" in point for point in distill["measured"]["eval_history"])
    for stage in result.stages:
        assert {"accuracy", "macro_f1", "agreement"} <= set(stage.metrics)
    assert result.stages[0].size.raw_bytes > result.stages[1].size.raw_bytes > result.stages[3].size.raw_bytes
    assert load(result.output).classify(["Oil prices rose."])[0].label in CLASSES
