"""Distillation as a pipeline step (`compress --distill`, recipe [distill]) and as its own
command (`edgegolf distill`), end to end on the tiny real model of conftest."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from edgegolf.compression.distill.transfer import default_split
from edgegolf.pipeline import build_recipe
from tests.builders.cli import run_cli, run_cli_interrupted_after_checkpoint

SPEC = "steps=6,batch_size=8,lr=1e-3,max_length=32,eval_every=0,hidden_weight=1"


def test_compress_with_prune_and_distill_records_the_stage_and_its_data(tiny_bert, tmp_path, capsys):
    out = tmp_path / "bundle"
    code, _, stderr = run_cli(["compress", tiny_bert, "-o", out, "--prune", "layers=1,heads=0.5,ffn=0.5",
                               "--distill", SPEC, "--quantize", "none", "--optimize", "off", "--eval-limit", "40"],
                              capsys)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    names = [r["stage"] for r in manifest["provenance"]]
    assert names.index("prune") < names.index("distill") < names.index("export")
    record = manifest["provenance"][names.index("distill")]
    assert record["settings"]["steps"] == 6 and record["settings"]["data"] == "train-split"
    kept = manifest["provenance"][names.index("prune")]["measured"]["kept_layers"]
    assert record["settings"]["layer_map"] == kept  # matched to the teacher layer each student layer came from
    measured = record["measured"]
    assert measured["steps_run"] == 6 and 0 < measured["loss_last"] < 10  # the loss falling: test_distill.py
    assert measured["seconds"] > 0 and measured["cpu_seconds"] > 0 and measured["tokens_per_s"] > 0
    # the transfer data: the train half of the evaluation split, none of its test half
    assert measured["data"]["source"].endswith(":train")
    # --eval-limit shrinks only what is scored: distillation learns from the whole split's train half
    assert measured["data"]["texts"] + measured["data"]["dropped_test_overlap"] == len(default_split().train)
    assert manifest["evaluation"]["train_texts"] + manifest["evaluation"]["test_texts"] == pytest.approx(40, abs=3)
    assert "distilled 6 steps" in " ".join(manifest["stages"]["onnx-fp32"]["notes"])
    assert "after distillation" in manifest["stages"]["onnx-fp32"]["description"]
    # recipe.toml reruns the same distillation
    recipe, _ = build_recipe(out / "recipe.toml")
    assert recipe.distill.to_dict() == manifest["recipe"]["distill"] and recipe.distill.steps == 6


def test_distill_without_a_pruned_student_is_refused(tiny_bert, tmp_path, capsys):
    code, _, stderr = run_cli(["compress", tiny_bert, "-o", tmp_path / "b", "--distill", "steps=2",
                               "--quantize", "none", "--eval-limit", "40"], capsys)
    assert code == 2 and "add a [prune] section" in stderr and not (tmp_path / "b").exists()


def test_a_bad_distill_spec_fails_before_any_work(tiny_bert, tmp_path, capsys):
    code, _, stderr = run_cli(["compress", tiny_bert, "-o", tmp_path / "b", "--prune", "layers=1",
                               "--distill", "steps=2,lr=fast"], capsys)
    assert code == 2 and "distill.lr = 'fast'" in stderr and "Traceback" not in stderr


def test_distill_command_writes_a_model_folder(tiny_bert, pruned_folder, tmp_path, capsys):
    from edgegolf.compression.prune import load_pruned

    out = tmp_path / "distilled"
    code, stdout, stderr = run_cli(["distill", tiny_bert, pruned_folder, "-o", out, "--spec", SPEC], capsys)
    assert code == 0, stderr
    assert "distilled 6 steps" in stdout
    assert {"model.safetensors", "config.json", "tokenizer.json", "distill_report.json",
            "prune_report.json"} <= {p.name for p in out.iterdir()}
    assert not (tmp_path / "distilled.checkpoints").exists()  # removed once the output is complete
    report = json.loads((out / "distill_report.json").read_text())
    assert report["layer_map"] == json.loads((pruned_folder / "prune_report.json").read_text())["kept_layers"]
    before, after = load_file(str(pruned_folder / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    model = load_pruned(out)  # a head-pruned student loads back
    assert model.config.num_hidden_layers == 1
    code, _, stderr = run_cli(["distill", tiny_bert, pruned_folder, "-o", out, "--spec", SPEC], capsys)
    assert code == 2 and "already exists" in stderr


def test_distill_command_resumes_to_the_uninterrupted_result(tiny_bert, pruned_folder, tmp_path, capsys):
    spec = SPEC + ",checkpoint_every=3"
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_cli(["distill", tiny_bert, pruned_folder, "-o", whole, "--spec", spec], capsys)[0] == 0
    code, _, stderr = run_cli_interrupted_after_checkpoint(["distill", tiny_bert, pruned_folder, "-o", resumed,
                                                            "--spec", spec], 3, capsys)
    assert code != 0 and not resumed.exists()
    assert (tmp_path / "resumed.checkpoints" / "latest.json").exists()
    code, stdout, stderr = run_cli(["distill", tiny_bert, pruned_folder, "-o", resumed, "--spec", spec, "--resume"],
                                   capsys)
    assert code == 0, stderr
    assert json.loads((resumed / "distill_report.json").read_text())["resumed_from_step"] == 3
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("make", "expected"), [
    (None, "does not exist"),
    (lambda p: p.with_suffix(".txt").write_text(""), "is empty"),
    (lambda p: p.with_suffix(".csv").write_text("title,body\nA,B\n"), "has no column named"),
    (lambda p: p.with_suffix(".jsonl").write_text('{"text": 3}\n'), "not text"),
    (lambda p: p.with_suffix(".pdf").write_text("x"), "has type '.pdf'"),
])
def test_distill_command_refuses_bad_data_with_one_line(tiny_bert, pruned_folder, tmp_path, capsys, make, expected):
    path = tmp_path / "data.txt"
    if make is not None:
        make(tmp_path / "data")
        path = next(tmp_path.glob("data.*"))
    out = tmp_path / "distilled"
    code, _, stderr = run_cli(["distill", tiny_bert, pruned_folder, "-o", out, "--data", path, "--spec", SPEC], capsys)
    assert code == 2 and expected in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and not out.exists()


def test_refit_repairs_the_pruned_layers_before_training(tiny_bert, pruned_folder):
    from transformers import AutoTokenizer

    from edgegolf.compression.distill import distill, parse_distill_spec
    from edgegolf.compression.prune import load_pruned
    from edgegolf.tasks import get_task

    adapter = get_task("feature-extraction")
    teacher, student = adapter.load_model(tiny_bert), load_pruned(pruned_folder)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    texts = list(default_split().train.texts[:24])
    config = parse_distill_spec("steps=2,batch_size=8,max_length=32,eval_every=0,refit=true,refit_texts=16")
    report = distill(teacher, student, tokenizer, adapter, config, texts=texts)
    refit = report.refit
    assert refit["refitted"] and refit["tokens"] > 16 and len(refit["layers"]) == 1
    for layer in refit["layers"]:  # least squares on the calibration tokens: never worse than before
        assert layer["attention"][1] < layer["attention"][0] and layer["ffn"][1] < layer["ffn"][0]
    assert report.steps_run == 2


def test_recipe_distill_table_is_validated_and_its_data_path_is_relative_to_the_recipe(tmp_path):
    from edgegolf.errors import RecipeError

    with pytest.raises(RecipeError, match=r"distill.steps = 0 is out of range"):
        build_recipe({"prune": {"layers": 1}, "distill": {"steps": 0}})
    with pytest.raises(RecipeError, match=r"distill has unknown field 'step'"):
        build_recipe({"distill": {"step": 5}})
    (tmp_path / "r").mkdir()
    recipe_file = tmp_path / "r" / "recipe.toml"
    recipe_file.write_text('[prune]\nlayers = 1\n\n[distill]\nsteps = 5\ndata = "texts.txt"\n')
    recipe, _ = build_recipe(recipe_file)
    assert recipe.distill.data == str((tmp_path / "r" / "texts.txt").resolve())
    assert recipe.distill.steps == 5 and recipe.distill.refit is True  # the measured best default
    recipe, _ = build_recipe({"prune": {"layers": 1}, "distill": {"steps": 5}})
    assert recipe.distill.data == "train-split"
