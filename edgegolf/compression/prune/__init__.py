"""Structured pruning that changes tensor shapes: layers, attention heads, FFN neurons, vocabulary.

    config = parse_prune_spec("layers=3,heads=0.5,ffn=0.5,vocab=corpus.txt")
    student, tokenizer, report = prune_model(teacher, tokenizer, config, calibration_texts=texts)

Supported: BERT (and MiniLM), RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT, DeBERTa-v2/v3,
ModernBERT, MPNet (layers and FFN; heads refused), LLaMA / Mistral / Qwen2 (grouped-query
attention pruned by whole key/value groups) and GPT-2, one registered `Family` each
(arch.py: `@register_family`; a plugin adds one the same way). Vocabulary pruning: WordPiece
tokenizers. Unstructured magnitude pruning is offered too; it only shrinks the zstd size.

The config names import without torch (the CLI validates a spec before loading anything);
the rest loads torch and transformers on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from edgegolf.compression.prune.config import PruneConfig, parse_prune_spec, prune_config_from_dict

_LAZY = {
    "supported_types": "arch", "register_family": "arch", "family_for": "arch", "config_view": "arch",
    "ort_model_type": "arch", "Family": "arch", "ConfigView": "arch",
    "attention_dims": "folder", "load_pruned": "folder", "prune_folder": "folder", "save_pruned": "folder",
    "SparsityReport": "magnitude",
    "PruneReport": "model", "check_prune_fits": "model", "count_parameters": "model", "prune_model": "model",
    "VocabReport": "vocab", "read_corpus": "vocab", "unk_share": "vocab",
}

__all__ = ["PruneConfig", "parse_prune_spec", "prune_config_from_dict", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"edgegolf.compression.prune.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgegolf.compression.prune' has no attribute {name!r}")
