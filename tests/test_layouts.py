"""`edgegolf compress --layout`: the files other loaders need, written into the bundle and
covered by its manifest; a layout that does not exist or does not fit the task is refused
before any work. (Loading the layouts in Optimum and sentence-transformers:
tests/test_layouts_optimum.py, in Optimum's environment.)"""

from __future__ import annotations

import json
import tomllib

import pytest

import edgegolf
from edgegolf.errors import RecipeError
from edgegolf.runtime import load
from edgegolf.runtime.manifest import sha256_file
from tests.builders.cli import run_cli
from tests.builders.recipes import QUICK

QUICK_ARGS = ["--eval-limit", "40", "--optimize", "off", "--quantize", "int8-dynamic"]


def test_layouts_are_written_into_the_bundle_and_hashed_by_its_manifest(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["compress", str(tiny_bert), "-o", str(out), *QUICK_ARGS,
                            "--layout", "sentence-transformers", "--layout", "optimum"], capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    st_files = ["1_Pooling/config.json", "config_sentence_transformers.json", "modules.json",
                "sentence_bert_config.json", "tokenizer_config.json"]
    assert manifest["layouts"] == {"sentence-transformers": st_files, "optimum": ["tokenizer_config.json"]}
    for name in st_files:
        assert manifest["files"][name]["sha256"] == sha256_file(out / name)
    spec = manifest["model"]
    # the tokenizer feeds what the graph takes, in every transformers release
    assert json.loads((out / "tokenizer_config.json").read_text())["model_input_names"] == spec["input_names"]
    pooling = json.loads((out / "1_Pooling/config.json").read_text())
    assert pooling["word_embedding_dimension"] == 32 and pooling["pooling_mode_mean_tokens"] is True
    assert not pooling["pooling_mode_cls_token"]
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == spec["max_length"]
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]  # spec normalizes
    # the recipe in the bundle reruns the same layouts
    assert tomllib.loads((out / "recipe.toml").read_text())["export"]["layout"] == ["sentence-transformers", "optimum"]
    assert load(out).embed(["Shares rose."]).shape == (1, 32)  # every hash still checks

    (out / "modules.json").write_text("[]")
    with pytest.raises(Exception, match="modules.json"):  # a changed layout file is caught like any other
        load(out)


def test_a_causal_lm_gets_the_generation_config_and_a_tokenizer_config_transformers_4_reads(tmp_path):
    from edgegolf.layouts import write_layouts

    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "model_type": "gpt2"}))
    # what transformers 5 saves for a tokenizer.json-only tokenizer; transformers 4 cannot load it
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend",
                                                                "eos_token": "</s>"}))
    manifest = {"model": {"task": "causal-lm", "pad_token_id": 0, "extra": {"eos_token_id": 5},
                          "input_names": ["input_ids", "attention_mask"]}}
    written = {"optimum": ["generation_config.json", "tokenizer_config.json"]}
    assert write_layouts(tmp_path, manifest, ["optimum"]) == written and manifest["layouts"] == written
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 1, "eos_token_id": 5, "pad_token_id": 0}  # the runtime's eos wins
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>",
        "model_input_names": ["input_ids", "attention_mask"]}


def test_an_unknown_layout_is_one_line_naming_the_accepted_ones(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["compress", str(tiny_bert), "-o", str(out), "--layout", "onnx-web"], capsys)
    assert code == 2 and not out.exists()
    line = err.strip()
    assert "\n" not in line and "Traceback" not in err
    assert "'onnx-web'" in line and "optimum" in line and "sentence-transformers" in line


def test_a_layout_for_another_task_is_refused_before_any_work(tiny_classifier, tmp_path):
    with pytest.raises(RecipeError, match="serves feature-extraction bundles; this bundle's task is "
                                          "'text-classification'.*optimum"):
        edgegolf.compress(str(tiny_classifier), output=tmp_path / "out",
                          recipe={**QUICK, "export": {"layout": ["sentence-transformers"]}})
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
