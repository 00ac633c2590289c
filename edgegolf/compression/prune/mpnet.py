"""MPNet encoders (all-mpnet-base-v2 and other sentence-transformers MPNet models).

A block is BERT-like with its own names: attention.attn.{q,k,v,o}, attention.LayerNorm,
intermediate.dense, output.dense. One relative position bias, an Embedding(buckets, heads)
owned by the encoder, is computed once and added to every layer's attention scores, so every
layer must keep the same heads; pruning chooses heads per layer by importance, so head
cuts are refused and layers and feed-forward neurons are cut.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgegolf.compression.prune.arch import Family, HeadShape, Proj, RefitPoint, register_family
from edgegolf.errors import PruneError


@register_family
class MPNetFamily(Family):
    name = "mpnet"
    model_types = ("mpnet",)
    layers_path = "encoder.layer"
    # onnxruntime's BERT fusions do not know the position bias added to the scores: no fused graph is claimed
    ort_model_type = "bert"

    def check_head_cut(self, config: Any) -> None:
        raise PruneError("MPNet adds one relative position bias, shared by all layers, to every head's scores, "
                         "so heads cannot be cut per layer; drop 'heads' from the prune spec "
                         "(layers and ffn are supported)")

    def refit_points(self, block: nn.Module) -> list[RefitPoint]:
        # MPNetAttention: LayerNorm(o(x) + input), but o is called inside attn; only the FFN matches forward(x, input)
        return [RefitPoint("ffn", block.output, block.output.dense, block.output.LayerNorm)]

    def head_shape(self, block: nn.Module) -> HeadShape:
        attn = block.attention.attn
        return HeadShape(attn.num_attention_heads, attn.num_attention_heads, attn.attention_head_size)

    def o_proj(self, block: nn.Module) -> Proj:
        return Proj(block.attention.attn, "o")

    def v_proj(self, block: nn.Module) -> tuple[Proj, int]:
        return Proj(block.attention.attn, "v"), 0

    def keep_heads(self, block: nn.Module, kv_groups: list[int]) -> None:
        self.check_head_cut(None)

    def ffn_in(self, block: nn.Module) -> list[Proj]:
        return [Proj(block.intermediate, "dense")]

    def ffn_down(self, block: nn.Module) -> Proj:
        return Proj(block.output, "dense")
