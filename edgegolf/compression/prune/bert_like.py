"""Encoders laid out exactly like BERT (the same module names in every block): XLM-RoBERTa, ELECTRA.

Their blocks are BertLayer copies (query/key/value, attention.output.dense, intermediate,
output), so BertFamily's cuts apply unchanged; each gets its own registered name so the
prune report and the support matrix say which one was cut. ELECTRA may project a smaller
`embedding_size` up to `hidden_size` before the blocks; pruning leaves that projection alone.
"""

from __future__ import annotations

from edgegolf.compression.prune.arch import register_family
from edgegolf.compression.prune.bert import BertFamily


@register_family
class XLMRobertaFamily(BertFamily):
    name = "xlm-roberta"
    model_types = ("xlm-roberta",)
    auto_layer_selection = "even"  # importance is measured to pay on BERT only
    vocab_pruning = False  # SentencePiece tokenizer: vocab.py handles WordPiece only


@register_family
class ElectraFamily(BertFamily):
    name = "electra"
    model_types = ("electra",)
    auto_layer_selection = "even"  # importance is measured to pay on BERT only
