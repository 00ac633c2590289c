"""Unstructured magnitude pruning: set the smallest weights of the layers' projections to zero.

Reported for completeness and honestly: the tensors keep their shapes, so the raw ONNX size
and the latency do not change; only the compressed (zstd) size shrinks, because runs of
zeros compress well. Embeddings, norms, biases and task heads are left alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class SparsityReport:
    target: float  # share of weights asked to be zero
    scope: str  # global | layer
    weights: int  # weights considered (projection matrices of the transformer layers)
    zeros: int  # of those, how many are zero now
    note: str = "zeros shrink the zstd size only; raw size and latency are unchanged"

    @property
    def sparsity(self) -> float:
        return self.zeros / max(1, self.weights)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sparsity": self.sparsity}


def projection_weights(blocks: nn.ModuleList) -> list[nn.Parameter]:
    """The 2-D weights of every Linear / Conv1D inside the transformer layers."""
    weights = []
    for block in blocks:
        for module in block.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and weight.dim() == 2 and not isinstance(module, nn.Embedding):
                weights.append(weight)
    return weights


def _threshold(values: torch.Tensor, share: float) -> float:
    k = int(share * values.numel())
    return float(values.kthvalue(k).values) if k >= 1 else float("-inf")


def magnitude_prune(blocks: nn.ModuleList, share: float, scope: str) -> SparsityReport:
    """Zero `share` of the weights by |w|: one threshold for all ("global") or per weight matrix ("layer")."""
    weights = projection_weights(blocks)
    with torch.no_grad():
        if scope == "global":
            limit = _threshold(torch.cat([w.detach().abs().flatten().float() for w in weights]), share)
            limits = [limit] * len(weights)
        else:
            limits = [_threshold(w.detach().abs().flatten().float(), share) for w in weights]
        for weight, limit in zip(weights, limits):
            weight.masked_fill_(weight.abs() <= limit, 0.0)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return SparsityReport(share, scope, sum(w.numel() for w in weights), zeros)
