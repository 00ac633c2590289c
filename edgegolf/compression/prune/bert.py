"""BERT-family encoders: BERT (and MiniLM, which is a BertModel), RoBERTa, DistilBERT.

Their attention derives the head size from hidden_size / num_attention_heads, so a stock
class cannot rebuild fewer heads of the original size from the config alone: a head-pruned
folder records the head size in config["edgegolf_pruning"] and loads with `load_pruned`.
"""

from __future__ import annotations

from torch import nn

from edgegolf.compression.prune.arch import Family, HeadShape, Proj, RefitPoint, head_columns, register_family


@register_family
class BertFamily(Family):
    name = "bert"
    # MiniLM cut to 3 layers and distilled 1,700 steps: fidelity 0.905 against 0.888 evenly spaced
    auto_layer_selection = "importance"
    model_types = ("bert", "roberta")
    layers_path = "encoder.layer"

    def refit_points(self, block: nn.Module) -> list[RefitPoint]:
        # BertSelfOutput / BertOutput: LayerNorm(dense(x) + input_tensor), forward(x, input_tensor)
        return [RefitPoint("attention", block.attention.output, block.attention.output.dense,
                           block.attention.output.LayerNorm),
                RefitPoint("ffn", block.output, block.output.dense, block.output.LayerNorm)]

    @staticmethod
    def _self_attention(block: nn.Module) -> nn.Module:
        return block.attention.self

    def head_shape(self, block: nn.Module) -> HeadShape:
        attn = self._self_attention(block)
        return HeadShape(attn.num_attention_heads, attn.num_attention_heads, attn.attention_head_size)

    def o_proj(self, block: nn.Module) -> Proj:
        return Proj(block.attention.output, "dense")

    def v_proj(self, block: nn.Module) -> tuple[Proj, int]:
        return Proj(self._self_attention(block), "value"), 0

    def keep_heads(self, block: nn.Module, kv_groups: list[int]) -> None:
        attn = self._self_attention(block)
        columns = head_columns(kv_groups, attn.attention_head_size)
        for name in ("query", "key", "value"):
            Proj(attn, name).keep_outputs(columns)
        self.o_proj(block).keep_inputs(columns)
        # forward reshapes with (-1, attention_head_size); these two are kept true for readers
        attn.num_attention_heads = len(kv_groups)
        attn.all_head_size = len(kv_groups) * attn.attention_head_size

    def ffn_in(self, block: nn.Module) -> list[Proj]:
        return [Proj(block.intermediate, "dense")]

    def ffn_down(self, block: nn.Module) -> Proj:
        return Proj(block.output, "dense")


@register_family
class DistilBertFamily(Family):
    name = "distilbert"
    model_types = ("distilbert",)
    layers_path = "transformer.layer"
    config_keys = {"layers": "n_layers", "heads": "n_heads", "ffn": "hidden_dim", "hidden": "dim"}

    def set_layer_list(self, base: nn.Module, blocks: list[nn.Module]) -> None:
        super().set_layer_list(base, blocks)
        base.transformer.n_layers = len(blocks)

    def head_shape(self, block: nn.Module) -> HeadShape:
        attn = block.attention
        return HeadShape(attn.n_heads, attn.n_heads, attn.attention_head_size)

    def o_proj(self, block: nn.Module) -> Proj:
        return Proj(block.attention, "out_lin")

    def v_proj(self, block: nn.Module) -> tuple[Proj, int]:
        return Proj(block.attention, "v_lin"), 0

    def keep_heads(self, block: nn.Module, kv_groups: list[int]) -> None:
        attn = block.attention
        columns = head_columns(kv_groups, attn.attention_head_size)
        for name in ("q_lin", "k_lin", "v_lin"):
            Proj(attn, name).keep_outputs(columns)
        Proj(attn, "out_lin").keep_inputs(columns)
        attn.n_heads = len(kv_groups)

    def ffn_in(self, block: nn.Module) -> list[Proj]:
        return [Proj(block.ffn, "lin1")]

    def ffn_down(self, block: nn.Module) -> Proj:
        return Proj(block.ffn, "lin2")
