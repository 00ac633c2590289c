"""Tiny real BERT models, on a WordPiece vocabulary of BBC News's most frequent words."""

from __future__ import annotations

import collections
import re
from pathlib import Path

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
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        BertTokenizer,
    )

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

