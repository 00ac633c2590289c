"""Knowledge distillation: a pruned or smaller student learns its teacher's outputs.

    config = parse_distill_spec("steps=600,data=bbc-news,lr=1e-4")
    report = distill(teacher, student, tokenizer, "feature-extraction", config, checkpoint_dir=Path("ckpt"))

Losses are the task adapter's (`distill_view` / `distill_loss` in edgegolf/tasks/):
feature-extraction matches mean-pooled embeddings (cosine or MSE), text-classification
temperature-softened logits (KL) plus hard labels where the data has them; both can add MSE
between hidden states of mapped layers. One process on one device, or several processes
(GPUs or machines) started by `accelerate launch` (the 'distributed' extra; see parallel.py).

The config names import without torch (the CLI validates a spec before loading anything);
the rest loads torch and transformers on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from edgegolf.compression.distill.config import (
    DistillConfig,
    distill_config_from_dict,
    parse_distill_spec,
)

_LAZY = {
    "DistillReport": "report", "distill": "train", "auto_layer_map": "pairing", "lr_factor": "optimization",
    "TransferData": "transfer", "load_transfer": "transfer", "load_transfer_texts": "transfer",
    "latest_checkpoint": "checkpoint",
    "distill_folder": "stage", "distill_pruned": "stage", "transfer_data": "stage",
    "refit_pruned_layers": "refit",
}

__all__ = [  # the config names and every lazy name
    "DistillConfig", "DistillReport", "TransferData", "auto_layer_map", "distill", "distill_config_from_dict",
    "distill_folder", "distill_pruned", "latest_checkpoint", "load_transfer", "load_transfer_texts", "lr_factor",
    "parse_distill_spec", "refit_pruned_layers", "transfer_data",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"edgegolf.compression.distill.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgegolf.compression.distill' has no attribute {name!r}")
