"""A budget's size limit chooses the quantization scheme when nobody chose one
(edgegolf/compression/quantize/choose.py): a tiny tied LLaMA through `edgegolf.compress` and the
CLI, and a tiny BERT export through `quantize` with the choice as its config."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

import edgegolf
from edgegolf.compression.quantize import Int4WeightOnly, config_to_dict, default_int8, quantize
from edgegolf.compression.quantize.choose import SchemeChoice, graph_facts, least_bytes
from edgegolf.errors import EXIT_DOES_NOT_FIT
from edgegolf.pipeline.compress import scheme_asked
from edgegolf.recipe import Recipe, load_recipe_file
from edgegolf.runtime import load
from tests.builders.causal_lm import bbc_text_file, save_tiny_tied_lm
from tests.builders.cli import run_cli
from tests.builders.recipes import QUICK

# the fused graph's keep-or-drop is a timing call; off, every run quantizes the same plain export
LM_RECIPE = {**QUICK, "evaluate": {"calibration_size": 4}, "bench": {**QUICK["bench"], "seq": 32},
             "optimize": {"mode": "off"}}


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny LLaMA with a tied embedding table, a BBC News .txt file to score it on)."""
    root = tmp_path_factory.mktemp("choice-llama")
    return save_tiny_tied_lm(root / "model", "llama"), bbc_text_file(root / "bbc.txt", 1000, 1010)


@pytest.fixture(scope="module")
def default_run(llama, tmp_path_factory):
    """A budget without a size limit: the default int8, as before."""
    model, text = llama
    return edgegolf.compress(str(model), output=tmp_path_factory.mktemp("default") / "out", task="causal-lm",
                             recipe=LM_RECIPE, overrides={"evaluate.data": str(text)}, budget="drop<=100")


def quantize_record(manifest: dict) -> dict:
    return next(r for r in manifest["provenance"] if r["stage"] == "quantize")


def int8_mb(default_run) -> float:
    return default_run.final.size.raw_bytes / 1e6


def test_without_a_size_limit_the_default_int8_stays(default_run):
    record = quantize_record(default_run.manifest)
    assert record["settings"] == config_to_dict(default_int8())
    assert "scheme_choice" not in record["measured"] and default_run.scheme_choice is None
    assert default_run.recipe.to_dict()["quantize"] == {"scheme": "default"}
    assert default_run.final.description == "int8-dynamic quantized"


def test_a_limit_the_int8_default_misses_gets_mixed_int4_that_fits(default_run, llama, tmp_path):
    model, text = llama
    limit = round(int8_mb(default_run) * 0.85, 4)  # below int8, above int4's all-4-bit floor
    out = tmp_path / "out"
    result = edgegolf.compress(str(model), output=out, task="causal-lm", recipe=LM_RECIPE,
                               overrides={"evaluate.data": str(text)}, budget=f"size<={limit}MB")

    assert result.verdict.fits and result.final.size.raw_bytes / 1e6 <= limit
    choice = result.scheme_choice
    assert choice["chosen"] == "int4 mixed 4/8-bit" and choice["scheme"] == "int4"
    int8, mixed = choice["tried"]
    assert int8["candidate"] == "int8 default" and not int8["fits"] and int8["why"]
    assert mixed["fits"] and mixed["size_mb"] <= limit
    beside = (out / "tokenizer.json").stat().st_size / 1e6
    assert choice["settings"]["mixed_size_mb"] == pytest.approx(limit - beside)  # the graph's share of the limit
    record = quantize_record(json.loads((out / "manifest.json").read_text()))
    assert record["measured"]["scheme_choice"] == choice and record["settings"] == choice["settings"]
    assert record["measured"]["mixed_precision"]["size_limit_mb"] == choice["settings"]["mixed_size_mb"]
    assert "MatMulNBits" in record["measured"]["quantized_ops"]
    assert result.final.description == "int4 quantized" and choice["summary"] in result.final.notes
    assert choice["summary"].startswith(f"size<={limit:g}MB chose int4 mixed 4/8-bit") and "int8 default" in \
        choice["summary"]
    # recipe.toml reruns the scheme the limit chose, not the choice
    table, budget = load_recipe_file(out / "recipe.toml")
    rerun = Recipe.from_dict(table).quantize
    assert isinstance(rerun, Int4WeightOnly) and rerun.mixed_size_mb == choice["settings"]["mixed_size_mb"]
    assert budget == {"size_mb": limit}


def test_a_limit_nothing_meets_keeps_the_smallest_and_exits_3_naming_the_limit(default_run, llama, tmp_path,
                                                                             capsys):
    model, text = llama
    limit = round(int8_mb(default_run) * 0.25, 4)  # below even 4 bits everywhere
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["compress", model, "--task", "causal-lm", "--data", text, "-o", out, "--budget",
                                    f"size<={limit}MB", "--optimize", "off", "--eval-limit", "2000"], capsys)
    assert code == EXIT_DOES_NOT_FIT, stderr
    assert "DOES NOT FIT: size" in stdout and f"exceeds {limit:g} MB by" in stdout  # the verdict's words
    line = next(li for li in stdout.splitlines() if li.startswith("quantization: "))
    assert f"size<={limit:g}MB: no scheme fits, kept the smallest, int4 all 4-bit" in line
    assert "int8 default: at least" in line  # predicted from the graph, not built
    assert "int4 mixed 4/8-bit: 4 bits everywhere take" in line
    manifest = json.loads((out / "manifest.json").read_text())  # a whole bundle, as for any missed budget
    choice = quantize_record(manifest)["measured"]["scheme_choice"]
    assert choice["fits"] is False and choice["chosen"] == "int4 all 4-bit"
    assert quantize_record(manifest)["settings"] == choice["settings"]
    assert not manifest["verdict"]["fits"] and manifest["verdict"]["binding"] == "size_mb"
    load(out, threads=1)  # every file matches its manifest hash


def test_an_explicit_scheme_is_never_replaced(default_run, llama, tmp_path, capsys):
    model, text = llama
    limit = round(int8_mb(default_run) * 0.85, 4)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["compress", model, "--task", "causal-lm", "--data", text, "-o", out,
                                    "--budget", f"size<={limit}MB", "--quantize", "default", "--optimize", "off",
                                    "--eval-limit", "2000"], capsys)
    assert code == EXIT_DOES_NOT_FIT, stderr
    assert "DOES NOT FIT: size" in stdout and "quantization:" not in stdout
    record = quantize_record(json.loads((out / "manifest.json").read_text()))
    assert record["settings"] == config_to_dict(default_int8()) and "scheme_choice" not in record["measured"]
    assert tomllib.loads((out / "recipe.toml").read_text())["quantize"] == {"scheme": "default"}


def test_every_way_of_asking_for_a_scheme_counts(tmp_path):
    recipe_file = tmp_path / "recipe.toml"
    recipe_file.write_text('[quantize]\nscheme = "default"\n')
    plain_file = tmp_path / "plain.toml"
    plain_file.write_text('[evaluate]\nlimit = 10\n')
    asked = [(None, {"quantize.scheme": "int4"}), (None, {"quantize.exclude": ["*/lm_head/*"]}),
             ({"quantize": {"scheme": "default"}}, None), (recipe_file, None),
             (Recipe(quantize=Int4WeightOnly()), None), (Recipe(), {"quantize": {"scheme": "int8-dynamic"}})]
    not_asked = [(None, None), (None, {"quantize.scheme": None, "evaluate.limit": 5}), ({"quantize": {}}, None),
                 (plain_file, None), (Recipe(), None)]
    assert all(scheme_asked(recipe, overrides) for recipe, overrides in asked)
    assert not any(scheme_asked(recipe, overrides) for recipe, overrides in not_asked)


def test_an_encoder_gets_a_4_bit_word_table_when_int8_misses(exported, texts, tmp_path):
    fp32 = exported[1].path
    calibration = [texts.feeds([t]) for t in texts.texts[1:5]]
    int8 = quantize(fp32, tmp_path / "int8.onnx", default_int8()).path.stat().st_size
    decoder, weights = graph_facts(fp32)
    assert not decoder and weights <= int8 and least_bytes(default_int8(), weights) == weights  # a lower bound
    assert least_bytes(Int4WeightOnly(), weights) is None

    fits = quantize(fp32, tmp_path / "a.onnx", SchemeChoice(size_mb=int8 * 1.01 / 1e6), calibration_feeds=calibration)
    assert fits.scheme == "int8-dynamic" and fits.details["scheme_choice"]["chosen"] == "int8 default"
    assert fits.details["scheme_choice"]["summary"].endswith("the first candidate fits")

    limit = int8 * 0.9 / 1e6
    report = quantize(fp32, tmp_path / "b.onnx", SchemeChoice(size_mb=limit), calibration_feeds=calibration)
    choice = report.details["scheme_choice"]
    assert choice["chosen"] == "int8 default, 4-bit word table" and report.settings["embeddings"] == "int4-block"
    assert report.path.stat().st_size <= limit * 1e6 < int8
    assert "GatherBlockQuantized" in report.quantized_ops
    assert not list(tmp_path.glob("*candidate*"))  # the rejected candidates' files are gone
