"""ModernBERT encoders: pre-LayerNorm blocks, fused Wqkv, a gated (GLU) MLP, rotary positions,
and global ("full_attention") layers between local ("sliding_attention") ones.

- Heads: Wqkv's outputs are laid out [q | k | v], each heads x head_dim; a head cut keeps the
  same head columns in all three and Wo's matching inputs. The head size is hidden / heads in
  the stock class, so a head-pruned folder records it (config["edgegolf_pruning"]) and loads
  with `load_pruned`.
- FFN: Wi gives 2 x intermediate outputs, chunked into (input, gate); neuron n lives in
  column n and column intermediate + n, and in Wo's input n.
- Layers: each block keeps the attention kind it was built with and the config's layer_types
  is cut the same way (prune/model.py), so the kept layers attend as before and the saved
  config rebuilds the same pattern. The first block has no attention LayerNorm (the
  embeddings' norm precedes it); the stock class builds block 0 that way, so block 0 must stay first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgegolf.compression.prune.arch import Family, HeadShape, Proj, head_columns, register_family
from edgegolf.errors import PruneError


@dataclass
class _WiHalf(Proj):
    """One half of Wi's outputs (0: the input, 1: the gate), as the magnitude score reads it."""

    half: int = 0

    def weight_out_in(self) -> torch.Tensor:
        return self.module.weight.chunk(2, dim=0)[self.half]

    def keep_outputs(self, index: torch.Tensor) -> None:  # Wi is cut whole, by ModernBertFamily.keep_ffn
        raise NotImplementedError


@register_family
class ModernBertFamily(Family):
    name = "modernbert"
    model_types = ("modernbert",)
    layers_path = "layers"
    vocab_pruning = False  # byte-level BPE tokenizer

    def set_layers(self, base: nn.Module, kept: list[int]) -> None:
        if not kept or kept[0] != 0:
            raise PruneError(f"ModernBERT's first layer has no attention LayerNorm and must stay first, but the layers "
                             f"kept are {kept}; use layer_selection=even (keeps the first and last layers)")
        super().set_layers(base, kept)

    def head_shape(self, block: nn.Module) -> HeadShape:
        attn = block.attn
        heads = attn.Wqkv.out_features // (3 * attn.head_dim)
        return HeadShape(heads, heads, attn.head_dim)

    def o_proj(self, block: nn.Module) -> Proj:
        return Proj(block.attn, "Wo")

    def v_proj(self, block: nn.Module) -> tuple[Proj, int]:
        shape = self.head_shape(block)
        return Proj(block.attn, "Wqkv"), 2 * shape.num_heads * shape.head_dim

    def keep_heads(self, block: nn.Module, kv_groups: list[int]) -> None:
        shape = self.head_shape(block)
        width = shape.num_heads * shape.head_dim
        columns = head_columns(kv_groups, shape.head_dim)
        Proj(block.attn, "Wqkv").keep_outputs(torch.cat([columns, columns + width, columns + 2 * width]))
        Proj(block.attn, "Wo").keep_inputs(columns)

    def ffn_in(self, block: nn.Module) -> list[Proj]:
        return [_WiHalf(block.mlp, "Wi", 0), _WiHalf(block.mlp, "Wi", 1)]

    def ffn_down(self, block: nn.Module) -> Proj:
        return Proj(block.mlp, "Wo")

    def keep_ffn(self, block: nn.Module, neurons: torch.Tensor) -> None:
        size = block.mlp.Wo.in_features
        Proj(block.mlp, "Wi").keep_outputs(torch.cat([neurons, neurons + size]))  # (input, gate) halves
        Proj(block.mlp, "Wo").keep_inputs(neurons)
