"""How much each layer, head group and feed-forward neuron matters.

Measured ("activation") scores run the model on calibration text with forward hooks:
- a head's score is the mean norm of what it writes to the residual stream, ||x_h W_o,h^T||
  over the real (unpadded) tokens; a key/value group scores the sum of its query heads;
- a neuron's score is mean |a_i| times the norm of its output column ||W_down[:, i]||, its
  expected contribution to the block output;
- layers are removed greedily, each time the one whose absence changes the model's last
  hidden state least (mean cosine over real tokens); this costs about n * (n - keep) passes
  over the calibration text but measures what matters, the output.
"Magnitude" scores use the weights alone (no data): ||W_o,h|| * ||W_v,h|| for heads and
||W_in,i|| * ||W_down[:, i]|| for neurons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgegolf.compression.prune.arch import Family, head_columns
from edgegolf.errors import PruneError

log = logging.getLogger(__name__)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return self.attention_mask.reshape(-1).bool()


def calibration_batches(tokenizer: Any, texts: list[str], *, max_length: int = 128, batch_size: int = 8) -> list[Batch]:
    """Tokenize, truncate and right-pad texts into batches (works for tokenizers without a pad token)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    encoded = [ids for ids in encoded if ids]
    batches = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        width = max(len(ids) for ids in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        batches.append(Batch(ids, mask))
    return batches


def _run(model: nn.Module, batches: list[Batch], on_batch) -> None:
    with torch.no_grad():
        for batch in batches:
            on_batch(batch)
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)


def _final_states(base: nn.Module, batches: list[Batch]) -> list[torch.Tensor]:
    """The base model's last hidden state at every real token, batch by batch."""
    states = []
    with torch.no_grad():
        for b in batches:
            hidden = base(input_ids=b.input_ids, attention_mask=b.attention_mask)[0]
            states.append(hidden.reshape(-1, hidden.shape[-1])[b.valid].float())
    return states


def greedy_layer_removal(model: nn.Module, family: Family, batches: list[Batch], keep: int
                         ) -> tuple[list[int], list[dict[str, float]]]:
    """Remove layers one at a time, each time the one whose absence changes the output least.

    "Least" is the highest mean cosine, over real calibration tokens, between the whole
    model's last hidden state and that of the model without the layer (and without those
    removed before). Returns the kept source indices and the removal steps in order. The
    model is left with all its layers; the caller cuts.
    """
    base = model.base_model
    original = list(family.layer_list(base))
    reference = _final_states(base, batches)
    current = list(range(len(original)))
    steps: list[dict[str, float]] = []
    try:
        while len(current) > keep:
            best: tuple[int, float] | None = None
            for layer in current:
                family.set_layer_list(base, [original[i] for i in current if i != layer])
                trial = _final_states(base, batches)
                cosine = torch.cat([nn.functional.cosine_similarity(a, b, dim=-1) for a, b in zip(reference, trial)])
                score = float(cosine.mean())
                if best is None or score > best[1]:
                    best = (layer, score)
            current.remove(best[0])
            steps.append({"removed": best[0], "output_cosine": round(best[1], 6)})
            log.info("layer %d removed: output cosine to the whole model %.4f", best[0], best[1])
    finally:
        family.set_layer_list(base, original)
    return current, steps


def _real_tokens(rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    if rows.shape[0] != valid.numel():
        # e.g. chunk_size_feed_forward > 0 feeds the FFN a slice of the sequence at a time
        raise PruneError(f"a projection saw {rows.shape[0]} positions where the batch has {valid.numel()}; "
                         "chunked feed-forward is not supported for measured importance: use importance=magnitude")
    return rows[valid]


def activation_scores(model: nn.Module, family: Family, batches: list[Batch], *, heads: bool, ffn: bool
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: key/value group scores and neuron scores, mean over real calibration tokens."""
    blocks = list(family.layer_list(model.base_model))
    head_sums = [torch.zeros(family.head_shape(b).num_kv_heads, dtype=torch.float64) for b in blocks]
    neuron_sums = [torch.zeros(family.ffn_down(b).weight_out_in().shape[1], dtype=torch.float64) for b in blocks]
    state: dict[str, Any] = {"tokens": 0}
    handles = []
    for i, block in enumerate(blocks):
        if heads:
            shape = family.head_shape(block)
            o_proj = family.o_proj(block)

            def on_attention_out(module, args, output, i=i, shape=shape, o_proj=o_proj):
                x = _real_tokens(args[0].reshape(-1, shape.num_heads, shape.head_dim), state["valid"]).float()
                w = o_proj.weight_out_in().detach().float().reshape(-1, shape.num_heads, shape.head_dim)
                per_head = torch.stack([(x[:, h] @ w[:, h].T).norm(dim=-1).sum() for h in range(shape.num_heads)])
                head_sums[i] += per_head.double().reshape(shape.num_kv_heads, shape.group_size).sum(dim=1)

            handles.append(o_proj.module.register_forward_hook(on_attention_out))
        if ffn:
            down = family.ffn_down(block)

            def on_ffn_down(module, args, output, i=i):
                a = _real_tokens(args[0].reshape(-1, args[0].shape[-1]), state["valid"]).float()
                neuron_sums[i] += a.abs().sum(dim=0).double()

            handles.append(down.module.register_forward_hook(on_ffn_down))

    def on_batch(batch: Batch) -> None:
        state["valid"] = batch.valid
        state["tokens"] += int(batch.valid.sum())

    try:
        _run(model, batches, on_batch)
    finally:
        for handle in handles:
            handle.remove()
    tokens = max(1, state["tokens"])
    head_scores = [(s / tokens).float() for s in head_sums] if heads else []
    ffn_scores = []
    if ffn:
        for block, sums in zip(blocks, neuron_sums):
            column_norms = family.ffn_down(block).weight_out_in().detach().float().norm(dim=0)
            ffn_scores.append((sums / tokens).float() * column_norms)
    return head_scores, ffn_scores


def magnitude_scores(model: nn.Module, family: Family, *, heads: bool, ffn: bool
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: key/value group and neuron scores from the weights alone."""
    head_scores, ffn_scores = [], []
    with torch.no_grad():
        for block in family.layer_list(model.base_model):
            if heads:
                shape = family.head_shape(block)
                w_o = family.o_proj(block).weight_out_in().float()
                v_proj, offset = family.v_proj(block)
                w_v = v_proj.weight_out_in().float()
                scores = []
                for g in range(shape.num_kv_heads):
                    q_heads = list(range(g * shape.group_size, (g + 1) * shape.group_size))
                    out_norm = w_o[:, head_columns(q_heads, shape.head_dim)].norm()
                    value_norm = w_v[head_columns([g], shape.head_dim, offset)].norm()
                    scores.append(out_norm * value_norm)
                head_scores.append(torch.stack(scores))
            if ffn:
                score = family.ffn_down(block).weight_out_in().float().norm(dim=0)
                for proj in family.ffn_in(block):
                    score = score * proj.weight_out_in().float().norm(dim=1)
                ffn_scores.append(score)
    return head_scores, ffn_scores
