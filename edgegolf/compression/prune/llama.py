"""LLaMA-family decoders (LLaMA, Mistral, Qwen2): grouped-query attention, gated MLP.

Heads are cut by whole key/value groups: a kept group keeps all the query heads that read
it, so num_attention_heads // num_key_value_heads stays what the modules were built with.
The config carries head_dim, so the stock classes rebuild pruned shapes from config alone.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgegolf.compression.prune.arch import Family, HeadShape, Proj, head_columns, register_family


@register_family
class LlamaFamily(Family):
    name = "llama"
    model_types = ("llama", "mistral", "qwen2")
    layers_path = "layers"
    config_keys = {**Family.config_keys, "kv_heads": "num_key_value_heads"}
    stock_heads = True
    vocab_pruning = False  # byte-level BPE / SentencePiece tokenizers: not handled by vocab.py

    def head_shape(self, block: nn.Module) -> HeadShape:
        attn = block.self_attn
        heads = attn.q_proj.weight.shape[0] // attn.head_dim
        return HeadShape(heads, heads // attn.num_key_value_groups, attn.head_dim)

    def o_proj(self, block: nn.Module) -> Proj:
        return Proj(block.self_attn, "o_proj")

    def v_proj(self, block: nn.Module) -> tuple[Proj, int]:
        return Proj(block.self_attn, "v_proj"), 0

    def keep_heads(self, block: nn.Module, kv_groups: list[int]) -> None:
        attn = block.self_attn
        group = attn.num_key_value_groups
        q_heads = [g * group + i for g in kv_groups for i in range(group)]
        q_columns = head_columns(q_heads, attn.head_dim)
        kv_columns = head_columns(kv_groups, attn.head_dim)
        Proj(attn, "q_proj").keep_outputs(q_columns)
        Proj(attn, "k_proj").keep_outputs(kv_columns)
        Proj(attn, "v_proj").keep_outputs(kv_columns)
        Proj(attn, "o_proj").keep_inputs(q_columns)

    def ffn_in(self, block: nn.Module) -> list[Proj]:
        return [Proj(block.mlp, "gate_proj"), Proj(block.mlp, "up_proj")]

    def ffn_down(self, block: nn.Module) -> Proj:
        return Proj(block.mlp, "down_proj")

    def write_config(self, config: Any, shape: dict[str, int]) -> None:
        super().write_config(config, shape)
        config.head_dim = shape["head_dim"]  # explicit, so hidden_size // heads is never used again
