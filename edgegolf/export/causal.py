"""Export a causal LM as one ONNX graph that scores text and generates with a key/value cache.

Graph inputs:  input_ids [batch, seq], attention_mask [batch, past + seq],
               past.{i}.key / past.{i}.value [batch, kv_heads, past, head_dim] per layer
Graph outputs: logits [batch, seq, vocab], present.{i}.key / present.{i}.value [.., past + seq, ..]

One graph serves both uses: scoring and the prompt feed an empty cache (past length 0), each
generation step feeds the previous step's presents. Shipping one graph keeps the bundle at one
copy of the weights (two graphs, prompt and step, would double it). Position ids are derived
from the attention mask inside the graph (cumsum - 1), as `generate` does, so left- and
right-padded batches score the same as single texts.

Traced with `torch.onnx.export(dynamo=False)` like every other edgegolf export; the tracer sees
transformers' `DynamicCache` only through the tensors this wrapper passes in and reads out.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from edgegolf.export.onnx import ExportReport, export_onnx

TEXT_INPUTS = ("input_ids", "attention_mask")


def cache_names(num_layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names), key then value per layer."""
    past = [f"past.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return past, [name.replace("past.", "present.", 1) for name in past]


def cache_shape(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a decoder's cache, from its config."""
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layers = int(getattr(config, "num_hidden_layers", None) or config.n_layer)
    heads = int(getattr(config, "num_attention_heads", None) or config.n_head)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    hidden = int(getattr(config, "hidden_size", None) or config.n_embd)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    return layers, kv_heads, head_dim


class CausalWithCache(torch.nn.Module):
    """forward(input_ids, attention_mask, *past) -> (logits, *present); no past = an empty cache."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.num_layers = cache_shape(model.config)[0]
        # transformers 5.24 names the cache argument and output `cache`; earlier releases
        # (5.17: seen failing on the GPU machine) `past_key_values`
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(self, input_ids, attention_mask, *past):
        from transformers import DynamicCache

        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        cache = DynamicCache(pairs or None, config=self.model.config)
        # positions count only real tokens, so left padding and the cache give the same positions
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, attention_mask.shape[1] - input_ids.shape[1]:]
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         use_cache=True, **{self.cache_argument: cache})
        present = []
        for layer in getattr(out, self.cache_argument).layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def empty_past(config, batch: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Past length 0 for every layer: what scoring and a prompt feed."""
    layers, kv_heads, head_dim = cache_shape(config)
    past, _ = cache_names(layers)
    return {name: np.zeros((batch, kv_heads, 0, head_dim), dtype=dtype) for name in past}


def with_cache_feeds(config, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feeds` plus an empty cache where it has none."""
    batch = feeds["input_ids"].shape[0]
    return {**empty_past(config, batch), **feeds}


def step_feed(module: CausalWithCache, feeds: dict[str, np.ndarray], next_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The feed of one generation step after `feeds` (PyTorch presents become the past)."""
    layers = module.num_layers
    past_names, _ = cache_names(layers)
    full = with_cache_feeds(module.model.config, feeds)
    with torch.no_grad():
        outputs = module(*(torch.from_numpy(full[n]) for n in [*TEXT_INPUTS, *past_names]))
    mask = np.concatenate([feeds["attention_mask"], np.ones((next_ids.shape[0], 1), dtype=np.int64)], axis=1)
    step = {"input_ids": next_ids.astype(np.int64), "attention_mask": mask}
    step.update({name: outputs[1 + i].numpy() for i, name in enumerate(past_names)})
    return step


def _require_transformers_5() -> None:
    """transformers 4.57's masking code breaks the tracer ("unordered_map::at", seen with
    torch 2.13); 5.17 and 5.24 export and verify. Say so instead of the tracer's message."""
    import transformers

    from edgegolf.errors import ExportError

    if int(transformers.__version__.split(".")[0]) < 5:
        raise ExportError(f"exporting a causal LM needs transformers>=5 (installed: {transformers.__version__}); "
                          "pip install 'transformers>=5'")


def export_causal_lm(model, out_path: Path, *, sample_feeds: dict[str, np.ndarray],
                     verify_feeds: list[dict[str, np.ndarray]], opset: int = 17, atol: float = 1e-4) -> ExportReport:
    """Export `model` (a *ForCausalLM) with its cache and verify it against PyTorch.

    Verification covers every feed of `verify_feeds` with an empty cache (padding included
    when a feed is a padded batch) and, for each, one generation step on a real cache.
    """
    _require_transformers_5()
    module = CausalWithCache(model).eval()
    layers = module.num_layers
    past, present = cache_names(layers)
    input_names = [*TEXT_INPUTS, *past]
    output_names = ["logits", *present]
    # trace with a non-empty cache so that nothing about the past length is frozen into the graph
    sample = step_feed(module, sample_feeds, sample_feeds["input_ids"][:, -1:])
    checks = []
    for feeds in verify_feeds:
        checks.append(with_cache_feeds(model.config, feeds))
        checks.append(step_feed(module, feeds, feeds["input_ids"][:, :1]))
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "logits": {0: "batch", 1: "sequence"}}
    axes.update({name: {0: "batch", 2: "past_sequence"} for name in past})
    axes.update({name: {0: "batch", 2: "total_sequence"} for name in present})
    return export_onnx(module, out_path, input_names=input_names, output_names=output_names, sample_feeds=sample,
                       verify_feeds=checks, opset=opset, atol=atol, dynamic_axes=axes)
