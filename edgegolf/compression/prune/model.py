"""`prune_model`: cut layers, heads, feed-forward neurons and vocabulary of a HF model.

Order matters: layers are chosen first (on the whole model), head and neuron importance is
then measured on the layers that remain, the vocabulary is cut independently, and
unstructured zeros come last, on the final shapes.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from edgegolf.compression.prune import importance
from edgegolf.compression.prune.arch import Family, family_for
from edgegolf.compression.prune.config import PruneConfig
from edgegolf.compression.prune.magnitude import SparsityReport, magnitude_prune
from edgegolf.compression.prune.vocab import VocabReport, prune_vocabulary, read_corpus
from edgegolf.errors import DataError, PruneError

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    """What was cut and why; `to_dict()` is the provenance record (JSON-ready).

    Layer indices are those of the source model. Rankings list groups / neurons most
    important first; for LLaMA-family models a head "group" is one key/value head with all
    the query heads that read it, elsewhere it is one attention head.
    """

    architecture: str
    config: PruneConfig
    params_before: int
    params_after: int
    shape_before: dict[str, int]  # layers, heads, kv_heads, head_dim, ffn, vocab, hidden
    shape_after: dict[str, int]
    importance: str  # activation | magnitude | none
    calibration_texts: int
    kept_layers: list[int]
    layer_removal: list[dict[str, float]] | None = None  # importance selection: removal steps, in order
    head_ranking: dict[int, list[int]] = field(default_factory=dict)
    head_scores: dict[int, list[float]] = field(default_factory=dict)
    kept_heads: dict[int, list[int]] = field(default_factory=dict)
    ffn_ranking: dict[int, list[int]] = field(default_factory=dict)  # full; summarised in to_dict()
    ffn_score_kept: dict[int, float] = field(default_factory=dict)  # share of the layer's total score kept
    vocab: VocabReport | None = None
    sparsity: SparsityReport | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        ffn = {
            str(layer): {
                "kept": self.shape_after["ffn"], "of": len(ranking), "score_share_kept": self.ffn_score_kept[layer],
                "ranking_sha256": hashlib.sha256(",".join(map(str, ranking)).encode()).hexdigest(),
            }
            for layer, ranking in self.ffn_ranking.items()
        }
        return {
            "architecture": self.architecture,
            "config": self.config.to_dict(),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "shape_before": self.shape_before,
            "shape_after": self.shape_after,
            "importance": self.importance,
            "calibration_texts": self.calibration_texts,
            "kept_layers": self.kept_layers,
            "layer_removal": self.layer_removal,
            "head_ranking": {str(k): v for k, v in self.head_ranking.items()},
            "head_scores": {str(k): v for k, v in self.head_scores.items()},
            "kept_heads": {str(k): v for k, v in self.kept_heads.items()},
            "ffn": ffn,
            "vocab": self.vocab.to_dict() if self.vocab else None,
            "unstructured": self.sparsity.to_dict() if self.sparsity else None,
            "seconds": self.seconds,
        }


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights count once


def even_layers(total: int, keep: int) -> list[int]:
    """`keep` evenly spaced layer indices out of `total`, first and last included (keep >= 2)."""
    if keep == 1:
        return [0]
    step = (total - 1) / (keep - 1)
    return [int(i * step + 0.5) for i in range(keep)]


def _keep_count(fraction: float, total: int) -> int:
    return min(total, max(1, round(fraction * total)))


def prune_model(
    model: nn.Module,
    tokenizer: Any,
    config: PruneConfig,
    *,
    calibration_texts: list[str] | None = None,
    vocab_texts: list[str] | None = None,
    max_length: int = 128,
    batch_size: int = 8,
    inplace: bool = False,
) -> tuple[nn.Module, Any, PruneReport]:
    """Prune a transformers model; returns (pruned model, tokenizer for it, report).

    The model is copied first unless `inplace`, so a teacher passed in stays whole. Only
    uniform sizes are produced: every layer keeps the same number of heads and FFN neurons.
    `calibration_texts` feed the activation importance (and importance layer selection);
    `vocab_texts` override the corpus file named by `config.vocab`. The tokenizer comes back
    unchanged unless the vocabulary was pruned.
    """
    start = time.perf_counter()
    family = family_for(model.config)
    if config.layer_selection == "auto":
        config = replace(config, layer_selection=family.auto_layer_selection if calibration_texts else "even")
    prune_vocab = config.vocab is not None or vocab_texts is not None
    if prune_vocab and not family.vocab_pruning:
        raise PruneError(f"vocabulary pruning supports WordPiece tokenizers (BERT, DistilBERT, MiniLM); model type "
                         f"{model.config.model_type!r} uses BPE or SentencePiece: drop 'vocab' from the prune spec")
    check_prune_fits(config, model.config)  # a cut the model cannot take is named before any other complaint
    texts = list(calibration_texts or [])
    if config.needs_calibration and not texts:
        raise DataError("pruning by measured importance needs calibration texts; pass some, or set "
                        "importance=magnitude (heads, ffn) and layer_selection=even (layers)")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    base = model.base_model
    params_before = count_parameters(model)
    shape_before = family.shape_of(base)
    batches = importance.calibration_batches(tokenizer, texts, max_length=max_length, batch_size=batch_size) \
        if config.needs_calibration else []

    # source index of every layer still in the model
    source_layers = list(range(shape_before["layers"]))
    layer_removal = None
    if config.layers is not None and config.layers != shape_before["layers"]:
        source_layers, layer_removal = _drop_layers(model, family, config, batches, shape_before["layers"])

    report = PruneReport(
        architecture=family.name, config=config, params_before=params_before, params_after=0,
        shape_before=shape_before, shape_after={}, calibration_texts=len(texts) if config.needs_calibration else 0,
        importance=config.importance if (config.heads or config.ffn) else "none",
        kept_layers=source_layers, layer_removal=layer_removal,
    )
    if config.heads is not None or config.ffn is not None:
        _cut_heads_and_ffn(model, family, config, batches, source_layers, report)
    if prune_vocab:
        corpus = vocab_texts if vocab_texts is not None else read_corpus(config.vocab)
        tokenizer, report.vocab = prune_vocabulary(model, tokenizer, corpus, min_count=config.vocab_min_count,
                                                   alphabet=config.vocab_alphabet)
    shape_after = family.shape_of(base)
    family.write_config(model.config, shape_after)
    if shape_after["heads"] != shape_before["heads"] and not family.stock_heads:
        # the stock class would derive head_dim = hidden / heads: record the true one for load_pruned
        model.config.edgegolf_pruning = {"head_dim": shape_after["head_dim"]}
    if config.unstructured is not None:
        report.sparsity = magnitude_prune(family.layer_list(base), config.unstructured, config.unstructured_scope)
    report.shape_after = shape_after
    report.params_after = count_parameters(model)
    report.seconds = time.perf_counter() - start
    log.info("pruned %s: %d -> %d parameters in %.1f s", family.name, params_before, report.params_after,
             report.seconds)
    return model, tokenizer, report


def check_prune_fits(config: PruneConfig, model_config: Any) -> None:
    """Refuse, from the model's config alone, a cut it cannot take: before any model is loaded."""
    family = family_for(model_config)
    if config.heads is not None:
        family.check_head_cut(model_config)
    total = family.config_view(model_config).layers
    if config.layers is not None and total is not None:
        _check_layer_count(config.layers, total)


def _check_layer_count(layers: int, total: int) -> None:
    if layers > total:
        raise PruneError(f"prune.layers = {layers} asks for more layers than the model has; accepted: 1 to {total}")


def _drop_layers(model: nn.Module, family: Family, config: PruneConfig, batches: list, total: int
                 ) -> tuple[list[int], list[dict[str, float]] | None]:
    _check_layer_count(config.layers, total)
    family.check_layer_drop(model.config)
    steps = None
    if config.layer_selection == "importance":
        kept, steps = importance.greedy_layer_removal(model, family, batches, config.layers)
    else:
        kept = even_layers(total, config.layers)
    family.set_layers(model.base_model, kept)
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == total:
        model.config.layer_types = [layer_types[i] for i in kept]
    log.info("kept layers %s of %d (%s)", kept, total, config.layer_selection)
    return kept, steps


def _cut_heads_and_ffn(model: nn.Module, family: Family, config: PruneConfig, batches: list,
                       source_layers: list[int], report: PruneReport) -> None:
    heads, ffn = config.heads is not None, config.ffn is not None
    if config.importance == "activation":
        head_scores, ffn_scores = importance.activation_scores(model, family, batches, heads=heads, ffn=ffn)
    else:
        head_scores, ffn_scores = importance.magnitude_scores(model, family, heads=heads, ffn=ffn)
    blocks = family.layer_list(model.base_model)
    for position, (source, block) in enumerate(zip(source_layers, blocks)):
        if heads:
            scores = head_scores[position]
            ranking = torch.argsort(scores, descending=True, stable=True).tolist()
            kept = sorted(ranking[: _keep_count(config.heads, len(ranking))])
            report.head_ranking[source] = ranking
            report.head_scores[source] = [round(float(s), 6) for s in scores]
            report.kept_heads[source] = kept
            family.keep_heads(block, kept)
        if ffn:
            scores = ffn_scores[position]
            ranking = torch.argsort(scores, descending=True, stable=True)
            kept = torch.sort(ranking[: _keep_count(config.ffn, len(ranking))]).values
            report.ffn_ranking[source] = ranking.tolist()
            report.ffn_score_kept[source] = round(float(scores[kept].sum() / scores.sum().clamp_min(1e-12)), 6)
            family.keep_ffn(block, kept)
