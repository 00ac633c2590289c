"""GPT-2: fused q/k/v projection (`c_attn`), Conv1D layers that store weights as (in, out).

GPT-2 derives head_dim from n_embd / n_head, so a head-pruned folder records the head size
in config["edgegolf_pruning"] and loads with `load_pruned`, as for BERT.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from edgegolf.compression.prune.arch import ConfigView, Family, HeadShape, Proj, head_columns, register_family
from edgegolf.errors import PruneError


@register_family
class Gpt2Family(Family):
    name = "gpt2"
    model_types = ("gpt2",)
    layers_path = "h"
    config_keys = {"layers": "n_layer", "heads": "n_head", "ffn": "n_inner", "hidden": "n_embd"}
    vocab_pruning = False  # byte-level BPE: not handled by vocab.py
    ort_model_type = "gpt2"

    def config_view(self, config: Any) -> ConfigView:
        view = super().config_view(config)
        if view.ffn is None and view.hidden:  # n_inner = None means 4 * n_embd (GPT2MLP)
            view = dataclasses.replace(view, ffn=4 * view.hidden)
        return view

    def check_layer_drop(self, config: Any) -> None:
        if getattr(config, "scale_attn_by_inverse_layer_idx", False):
            raise PruneError("GPT-2 with scale_attn_by_inverse_layer_idx=True scales attention by layer position; "
                             "layers cannot be dropped (accepted: heads, ffn, unstructured)")
        if getattr(config, "add_cross_attention", False):
            raise PruneError("GPT-2 with add_cross_attention=True is not supported; accepted: decoder-only GPT-2")

    def head_shape(self, block: nn.Module) -> HeadShape:
        attn = block.attn
        return HeadShape(attn.num_heads, attn.num_heads, attn.head_dim)

    def o_proj(self, block: nn.Module) -> Proj:
        return Proj(block.attn, "c_proj")

    def v_proj(self, block: nn.Module) -> tuple[Proj, int]:
        return Proj(block.attn, "c_attn"), 2 * block.attn.split_size

    def keep_heads(self, block: nn.Module, kv_groups: list[int]) -> None:
        attn = block.attn
        if getattr(attn, "is_cross_attention", False) or hasattr(block, "crossattention"):
            raise PruneError("GPT-2 with cross-attention is not supported; accepted: decoder-only GPT-2")
        width = attn.split_size  # q, k and v sit side by side in c_attn's output
        columns = head_columns(kv_groups, attn.head_dim)
        Proj(attn, "c_attn").keep_outputs(torch.cat([columns, columns + width, columns + 2 * width]))
        Proj(attn, "c_proj").keep_inputs(columns)
        attn.num_heads = len(kv_groups)
        attn.split_size = len(kv_groups) * attn.head_dim

    def ffn_in(self, block: nn.Module) -> list[Proj]:
        return [Proj(block.mlp, "c_fc")]

    def ffn_down(self, block: nn.Module) -> Proj:
        return Proj(block.mlp, "c_proj")
