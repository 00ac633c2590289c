"""The loss terms distillation composes; they live with the task adapters (edgegolf/tasks/losses.py),
which declare how each task is distilled. Re-exported here for callers of the trainer."""

from edgegolf.tasks.losses import (  # noqa: F401
    HIDDEN_SEQUENCE_DIMS,
    cosine_loss,
    hard_label_ce,
    mapped_hidden_states,
    masked_hidden_mse,
    mean_pool,
    mse_loss,
    soft_kl,
)
