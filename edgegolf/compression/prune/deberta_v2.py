"""DeBERTa-v2 / v3 encoders: BERT's block layout with disentangled attention.

Each head reads content (query_proj, key_proj) and relative positions: the shared relative
embeddings go through pos_key_proj / pos_query_proj (or, with share_att_key as in v3, through
key_proj / query_proj themselves). A head cut slices the same head columns out of every one
of these, so a kept head sees exactly the position projections it had. The attention output
(attention.output.dense) is built hidden x hidden by the stock class, so, as for BERT, a
head-pruned folder records the head size (config["edgegolf_pruning"]) and loads with `load_pruned`.
"""

from __future__ import annotations

from torch import nn

from edgegolf.compression.prune.arch import HeadShape, Proj, head_columns, register_family
from edgegolf.compression.prune.bert import BertFamily


@register_family
class DebertaV2Family(BertFamily):
    name = "deberta-v2"
    model_types = ("deberta-v2",)
    auto_layer_selection = "even"  # importance is measured to pay on BERT only
    vocab_pruning = False  # SentencePiece tokenizers

    def head_shape(self, block: nn.Module) -> HeadShape:
        attn = self._self_attention(block)
        return HeadShape(attn.num_attention_heads, attn.num_attention_heads, attn.attention_head_size)

    def v_proj(self, block: nn.Module) -> tuple[Proj, int]:
        return Proj(self._self_attention(block), "value_proj"), 0

    def keep_heads(self, block: nn.Module, kv_groups: list[int]) -> None:
        attn = self._self_attention(block)
        columns = head_columns(kv_groups, attn.attention_head_size)
        names = ["query_proj", "key_proj", "value_proj"]
        # separate position projections (share_att_key=False) carry the same heads in the same columns
        names += [name for name in ("pos_key_proj", "pos_query_proj")
                  if isinstance(getattr(attn, name, None), nn.Linear)]
        for name in names:
            Proj(attn, name).keep_outputs(columns)
        self.o_proj(block).keep_inputs(columns)
        attn.num_attention_heads = len(kv_groups)
        attn.all_head_size = len(kv_groups) * attn.attention_head_size
