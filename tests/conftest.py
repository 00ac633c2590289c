"""Shared fixtures: tiny real models (built by tests/builders), on a vocabulary taken from real BBC text.
Test modules import builders from tests/builders, never from each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders.models import save_tiny_bert

# The support matrix: a test claims (task, architecture, stage) cells it shows working with
#     @pytest.mark.support(task="causal-lm", arch="gpt2", stage=("export", "quantize:int4"))
# (arch: the config's model_type; stage: one name or a tuple, see tests/builders/support_matrix.STAGES;
# "{kind}" fills in a parametrize argument). `pytest --support-record PATH` records the outcomes;
# `python -m tests.builders.support_matrix --run` runs every marked test and renders the README table.
from tests.builders.support_matrix import (  # noqa: E402,F401  (pytest finds hooks by name here)
    pytest_addoption,
    pytest_configure,
    pytest_runtest_makereport,
    pytest_sessionfinish,
)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-classifier"), classifier=True)


@pytest.fixture(scope="session")
def pruned_folder(tiny_bert, tmp_path_factory) -> Path:
    """tiny_bert pruned to layers=1,heads=0.5,ffn=0.5 as `edgegolf prune` writes it: a distillation student."""
    from edgegolf.compression.distill.transfer import default_split
    from edgegolf.compression.prune import parse_prune_spec, prune_folder

    out = tmp_path_factory.mktemp("pruned") / "student"
    prune_folder(tiny_bert, out, parse_prune_spec("layers=1,heads=0.5,ffn=0.5"), list(default_split().train.texts[:8]))
    return out




# A tiny BERT exported once per session (tests/builders/export.py), for the export and quantize tests.
@pytest.fixture(scope="session")
def texts():
    """Real BBC News text and a WordPiece tokenizer of its own frequent words (builders.export.Texts)."""
    from tests.builders.export import Texts

    return Texts()


@pytest.fixture(scope="session")
def exported(texts, tmp_path_factory):
    """(module, path of its verified fp32 export)."""
    from edgegolf.export.onnx import export_onnx
    from tests.builders.export import INPUTS, OUTPUTS, LastHiddenState, tiny_bert_module

    module = LastHiddenState(tiny_bert_module(len(texts.vocab)))
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    report = export_onnx(module, path, input_names=INPUTS, output_names=OUTPUTS,
                         sample_feeds=texts.feeds(texts.texts[:2]),
                         verify_feeds=[texts.feeds(texts.texts[:1]), texts.feeds(texts.texts[1:4], 48)], atol=1e-4)
    return module, report
