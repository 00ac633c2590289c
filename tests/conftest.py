"""Shared fixtures: tiny real models built here, on a vocabulary taken from real BBC text."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

# The support matrix: a test claims (task, architecture, stage) cells it shows working with
#     @pytest.mark.support(task="causal-lm", arch="gpt2", stage=("export", "quantize:int4"))
# (arch: the config's model_type; stage: one name or a tuple, see tests/support_matrix.STAGES;
# "{kind}" fills in a parametrize argument). `pytest --support-record PATH` records the outcomes;
# `python -m tests.support_matrix --run` runs every marked test and renders the README table.
from tests.support_matrix import (  # noqa: E402,F401  (pytest finds hooks by name here)
    pytest_addoption,
    pytest_configure,
    pytest_runtest_makereport,
    pytest_sessionfinish,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bbc_vocabulary(size: int = 1500) -> dict[str, int]:
    """The most frequent lower-cased words of BBC News, as a WordPiece vocabulary."""
    from edgegolf.data import load_labelled_texts

    counts = collections.Counter()
    for text in load_labelled_texts().texts[::5]:
        counts.update(re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]", text.lower()))
    words = [w for w, _ in counts.most_common(size)]
    return {token: i for i, token in enumerate(SPECIALS + words)}


def save_tiny_bert(folder: Path, *, classifier: bool = False, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

    torch.manual_seed(seed)
    vocab = bbc_vocabulary()
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    labels = ["business", "entertainment", "politics", "sports", "tech"]
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=256, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
    )
    model = (BertForSequenceClassification if classifier else BertModel)(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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


# A quick recipe for tests: a small stratified evaluation subset and short latency runs.
QUICK = {
    "evaluate": {"limit": 60, "calibration_size": 8},
    "bench": {"runs": 10, "warmup": 2, "max_seconds": 2.0},
}
