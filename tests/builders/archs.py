"""Tiny random encoders of the architectures beyond BERT (issue 16), built from their config classes.

Every model shares one WordPiece tokenizer of BBC News words (tests/builders/models.py): the
ids it emits fit each model's vocabulary, which is all a random model needs. Sizes are small
(hidden 32, 4 heads of 8, 4 layers) so a test runs prune, distill, export and quantize in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# model_type -> (config class, base model class, classifier class), all in transformers
ARCHS: dict[str, tuple[str, str, str]] = {
    "mpnet": ("MPNetConfig", "MPNetModel", "MPNetForSequenceClassification"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", "XLMRobertaForSequenceClassification"),
    "deberta-v2": ("DebertaV2Config", "DebertaV2Model", "DebertaV2ForSequenceClassification"),
    "electra": ("ElectraConfig", "ElectraModel", "ElectraForSequenceClassification"),
    "modernbert": ("ModernBertConfig", "ModernBertModel", "ModernBertForSequenceClassification"),
}
LABELS = ["business", "entertainment", "politics", "sports", "tech"]


def tiny_config(arch: str, vocab_size: int, *, classifier: bool = False, layers: int = 4, **overrides: Any) -> Any:
    import transformers

    common: dict[str, Any] = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=64, pad_token_id=0)
    if classifier:
        common.update(id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    specific: dict[str, dict[str, Any]] = {
        "mpnet": dict(max_position_embeddings=514),
        "xlm-roberta": dict(max_position_embeddings=514, type_vocab_size=1),
        # DeBERTa-v3's settings: shared key projections for positions, bucketed relative positions
        "deberta-v2": dict(max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
                           pos_att_type=["p2c", "c2p"], position_buckets=32, max_relative_positions=-1,
                           share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False),
        "electra": dict(max_position_embeddings=512, embedding_size=16),  # projected up to hidden_size
        # global attention every 3rd layer, local windows of 8 tokens: shorter than the test texts
        "modernbert": dict(max_position_embeddings=512, global_attn_every_n_layers=3, local_attention=8,
                           bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
                           attn_implementation="eager"),
    }
    config_class = getattr(transformers, ARCHS[arch][0])
    return config_class(**{**common, **specific[arch], **overrides})


def tiny_model(arch: str, vocab_size: int, *, classifier: bool = False, seed: int = 0, **overrides: Any) -> Any:
    import torch
    import transformers

    torch.manual_seed(seed)
    config = tiny_config(arch, vocab_size, classifier=classifier, **overrides)
    model_class = getattr(transformers, ARCHS[arch][2 if classifier else 1])
    return model_class(config).eval()


def save_tiny(arch: str, folder: Path, *, classifier: bool = False, seed: int = 0, **overrides: Any) -> Path:
    """A model folder as save_pretrained writes it, with the BBC WordPiece tokenizer."""
    from transformers import BertTokenizer

    from tests.builders.models import bbc_vocabulary

    vocab = bbc_vocabulary()
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tiny_model(arch, len(vocab), classifier=classifier, seed=seed, **overrides).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
