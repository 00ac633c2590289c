"""How each architecture family is laid out, so the pruning code can cut any of them.

A `Family` names where the layers live, which projections carry the attention heads and
the feed-forward neurons, and which config keys record their sizes; `config_view` reads a
config into one normalised `ConfigView` (layers, heads, kv heads, head size, hidden, FFN)
that the checks, the graph optimizer and the distillation refit use. Cutting is done by
`Proj.keep_outputs` / `Proj.keep_inputs`, which slice a Linear (or GPT-2's Conv1D) in place,
so hooks and parent modules keep pointing at the same objects.

A family is one file: a `Family` subclass decorated with `@register_family` (the built-ins
are bert.py, llama.py, gpt2.py; a plugin's module registers its own on import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from edgegolf.errors import PruneError


@dataclass
class Proj:
    """A projection inside a block, addressed as `parent.name`: an nn.Linear or a GPT-2 Conv1D."""

    parent: nn.Module
    name: str

    @property
    def module(self) -> nn.Module:
        return getattr(self.parent, self.name)

    @property
    def transposed(self) -> bool:
        # GPT-2's Conv1D stores its weight as (in, out), nn.Linear as (out, in)
        return not isinstance(self.module, nn.Linear)

    def weight_out_in(self) -> torch.Tensor:
        w = self.module.weight
        return w.t() if self.transposed else w

    def keep_outputs(self, index: torch.Tensor) -> None:
        m = self.module
        with torch.no_grad():
            if self.transposed:
                m.weight = nn.Parameter(m.weight[:, index].clone())
                m.nf = len(index)
            else:
                m.weight = nn.Parameter(m.weight[index].clone())
                m.out_features = len(index)
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias[index].clone())

    def keep_inputs(self, index: torch.Tensor) -> None:
        m = self.module
        with torch.no_grad():
            if self.transposed:
                m.weight = nn.Parameter(m.weight[index].clone())
                m.nx = len(index)
            else:
                m.weight = nn.Parameter(m.weight[:, index].clone())
                m.in_features = len(index)


@dataclass(frozen=True)
class HeadShape:
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (== num_heads without grouped-query attention)
    head_dim: int

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


def head_columns(heads: list[int], head_dim: int, offset: int = 0) -> torch.Tensor:
    """Output columns of a projection that belong to `heads` (in the order given)."""
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads]) + offset


@dataclass(frozen=True)
class ConfigView:
    """A model config in the same words for every family (None where the config does not say)."""

    model_type: str
    layers: int | None
    heads: int | None  # query heads (after a head cut: the kept ones)
    kv_heads: int | None  # key/value heads (== heads without grouped-query attention)
    head_dim: int | None  # the true head size, head-pruned or not
    hidden: int | None
    ffn: int | None

    @property
    def attention_width(self) -> int | None:
        """heads * head_dim: the width of the attention's projections (not hidden after a head cut)."""
        return self.heads * self.head_dim if self.heads and self.head_dim else None


@dataclass(frozen=True)
class RefitPoint:
    """A post-LayerNorm sublayer: `norm(projection(x) + residual)`, where `block_output` is the
    module whose forward takes (x before the projection, residual) positionally."""

    name: str  # "attention" | "ffn": how the refit report names it
    block_output: nn.Module
    projection: nn.Linear
    norm: nn.Module


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


class Family:
    """One architecture family. Subclasses fill in the names; methods default to the common case."""

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    layers_path: ClassVar[str] = ""  # from the base model to the nn.ModuleList of blocks
    # layers / heads / kv_heads / ffn / hidden -> config attribute (kv_heads only with grouped-query attention);
    # the default is the common Hugging Face names (BERT's): a family with other names gives its own
    config_keys: ClassVar[dict[str, str]] = {"layers": "num_hidden_layers", "heads": "num_attention_heads",
                                             "ffn": "intermediate_size", "hidden": "hidden_size"}
    stock_heads: ClassVar[bool] = False  # True when the stock class rebuilds a pruned head count from config alone
    vocab_pruning: ClassVar[bool] = True  # WordPiece vocabulary pruning is supported for this family's tokenizers
    ort_model_type: ClassVar[str] = "bert"  # onnxruntime.transformers.optimizer's name for its graphs
    # what layer_selection=auto means: "importance" where it was measured to pay (BERT; a few layers
    # keep its greedy search cheap), "even" elsewhere (a decoder's 30 layers cost ~n^2/2 forward passes)
    auto_layer_selection: ClassVar[str] = "even"

    # --- the config, normalised ----------------------------------------------------------
    def config_view(self, config: Any) -> ConfigView:
        keys = self.config_keys
        heads = _int_or_none(getattr(config, keys["heads"], None))
        hidden = _int_or_none(getattr(config, keys.get("hidden", "hidden_size"), None))
        kv_heads = _int_or_none(getattr(config, keys["kv_heads"], None)) if "kv_heads" in keys else None
        record = getattr(config, "edgegolf_pruning", None)  # head-pruned BERT / GPT-2: the true head size
        head_dim: int | None
        if isinstance(record, dict) and "head_dim" in record:
            head_dim = int(record["head_dim"])
        else:
            head_dim = _int_or_none(getattr(config, "head_dim", None)) or (hidden // heads if hidden and heads else None)
        return ConfigView(
            model_type=str(getattr(config, "model_type", "")), layers=_int_or_none(getattr(config, keys["layers"], None)),
            heads=heads, kv_heads=kv_heads or heads, head_dim=head_dim, hidden=hidden,
            ffn=_int_or_none(getattr(config, keys["ffn"], None)),
        )

    # --- distillation's least-squares refit (edgegolf/compression/distill/refit.py) -----------
    def refit_points(self, block: nn.Module) -> list[RefitPoint] | None:
        """The block's post-LayerNorm sublayers, in forward order; None: the refit does not apply."""
        return None

    # --- layers -------------------------------------------------------------------------
    def layer_list(self, base: nn.Module) -> nn.ModuleList:
        node: Any = base
        for part in self.layers_path.split("."):
            node = getattr(node, part)
        return node

    def set_layers(self, base: nn.Module, kept: list[int]) -> None:
        """Keep the blocks at positions `kept` of the current list, in that order."""
        blocks = self.layer_list(base)
        self.set_layer_list(base, [blocks[i] for i in kept])

    def set_layer_list(self, base: nn.Module, blocks: list[nn.Module]) -> None:
        *parents, last = self.layers_path.split(".")
        owner: Any = base
        for part in parents:
            owner = getattr(owner, part)
        setattr(owner, last, nn.ModuleList(blocks))
        for new_index, block in enumerate(blocks):
            # caches and per-layer settings are keyed by the layer's position
            for module in block.modules():
                if hasattr(module, "layer_idx") and isinstance(module.layer_idx, int):
                    module.layer_idx = new_index

    def check_layer_drop(self, config: Any) -> None:
        """Raise when dropping layers would change what the kept layers compute."""

    # --- attention heads ----------------------------------------------------------------
    def check_head_cut(self, config: Any) -> None:
        """Raise (PruneError, one line) when this family's heads cannot be cut: before any work."""

    def head_shape(self, block: nn.Module) -> HeadShape:
        raise NotImplementedError

    def o_proj(self, block: nn.Module) -> Proj:
        raise NotImplementedError

    def v_proj(self, block: nn.Module) -> tuple[Proj, int]:
        """The value projection and the column where the values start (GPT-2 fuses q, k, v)."""
        raise NotImplementedError

    def keep_heads(self, block: nn.Module, kv_groups: list[int]) -> None:
        """Keep whole key/value groups (plain heads without GQA), slicing q, k, v and o."""
        raise NotImplementedError

    # --- feed-forward -------------------------------------------------------------------
    def ffn_in(self, block: nn.Module) -> list[Proj]:
        raise NotImplementedError

    def ffn_down(self, block: nn.Module) -> Proj:
        raise NotImplementedError

    def keep_ffn(self, block: nn.Module, neurons: torch.Tensor) -> None:
        for proj in self.ffn_in(block):
            proj.keep_outputs(neurons)
        self.ffn_down(block).keep_inputs(neurons)

    # --- config -------------------------------------------------------------------------
    def shape_of(self, base: nn.Module) -> dict[str, int]:
        """The sizes pruning changes, read from the modules (the truth) rather than the config."""
        blocks = self.layer_list(base)
        shape = self.head_shape(blocks[0])
        return {
            "layers": len(blocks),
            "heads": shape.num_heads,
            "kv_heads": shape.num_kv_heads,
            "head_dim": shape.head_dim,
            "ffn": self.ffn_down(blocks[0]).weight_out_in().shape[1],
            "vocab": base.get_input_embeddings().weight.shape[0],
            "hidden": base.get_input_embeddings().weight.shape[1],
        }

    def write_config(self, config: Any, shape: dict[str, int]) -> None:
        keys = self.config_keys
        setattr(config, keys["layers"], shape["layers"])
        setattr(config, keys["heads"], shape["heads"])
        if "kv_heads" in keys:
            setattr(config, keys["kv_heads"], shape["kv_heads"])
        setattr(config, keys["ffn"], shape["ffn"])
        config.vocab_size = shape["vocab"]


_FAMILIES: dict[str, Family] = {}  # model_type -> family, registration order


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: models whose config.model_type is in `cls.model_types` are pruned as `cls` says."""
    if not cls.name or not cls.model_types:
        raise ValueError(f"{cls.__qualname__} needs a name and model_types")
    missing = {"layers", "heads", "ffn"} - set(cls.config_keys)
    if missing:
        raise ValueError(f"{cls.__qualname__}.config_keys lacks {sorted(missing)}")
    family = cls()
    for model_type in cls.model_types:
        if model_type in _FAMILIES and type(_FAMILIES[model_type]) is not cls:
            raise ValueError(f"model type {model_type!r} is already pruned by {type(_FAMILIES[model_type]).__qualname__}")
        _FAMILIES[model_type] = family
    return cls


def supported_types() -> dict[str, Family]:
    from edgegolf.compression.prune import (  # noqa: F401  (the built-in families register)
        bert,
        bert_like,
        deberta_v2,
        gpt2,
        llama,
        modernbert,
        mpnet,
    )

    return dict(_FAMILIES)


def family_for(config: Any) -> Family:
    families = supported_types()
    model_type = getattr(config, "model_type", None)
    if model_type not in families:
        raise PruneError(
            f"structured pruning does not support model type {model_type!r}; supported: {', '.join(sorted(families))}"
        )
    return families[model_type]


class _Generic(Family):
    """The common Hugging Face config keys, for a model no family claims (reading only, never cutting)."""

    config_keys = {**Family.config_keys, "kv_heads": "num_key_value_heads"}


def config_view(config: Any) -> ConfigView:
    """The normalised view of any config: its family's, else the common Hugging Face keys."""
    family = supported_types().get(str(getattr(config, "model_type", "")))
    return (family or _Generic()).config_view(config)


def ort_model_type(config: Any) -> str:
    """onnxruntime's optimizer name for the model's graph: its family's, else "bert" (the encoder fusions)."""
    family = supported_types().get(str(getattr(config, "model_type", "")))
    return family.ort_model_type if family is not None else "bert"
