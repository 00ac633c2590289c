"""A tiny torch BERT wrapped the way the task adapters give it to the exporter, and real BBC
News text tokenized for it."""

from __future__ import annotations

import numpy as np
import torch

from tests.builders.models import bbc_vocabulary

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


OUTPUTS = ["last_hidden_state"]


class LastHiddenState(torch.nn.Module):
    """The shape the task adapters give the exporter: positional inputs, a tuple out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return (self.model(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state,)


def tiny_bert_module(vocab_size: int, *, seed: int = 0, initializer_range: float = 0.1):
    """A 2-layer BERT; weights larger than BERT's 0.02 so that every MatMul shows in the output."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, initializer_range=initializer_range)
    config._attn_implementation = "eager"  # the pattern onnxruntime's fusions recognise (on transformers 5)
    return BertModel(config).eval()


class Texts:
    """Real BBC News text, tokenized with a WordPiece vocabulary of its own frequent words."""

    def __init__(self):
        from transformers import BertTokenizer

        from edgegolf.data import load_labelled_texts

        self.vocab = bbc_vocabulary()
        # vocab=: on transformers 5, vocab_file= silently builds a 5-token vocabulary
        self.tokenizer = BertTokenizer(vocab=self.vocab, do_lower_case=True)
        self.texts = list(load_labelled_texts().texts[::97][:16])

    def feeds(self, texts: list[str], max_length: int = 64) -> dict[str, np.ndarray]:
        enc = self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        return {name: enc[name].astype(np.int64) for name in INPUTS}

