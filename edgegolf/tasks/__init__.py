"""Task adapters: everything that differs between tasks lives in one file per task.

A task is registered once (edgegolf/tasks/registry.py): its adapter names its runtime model
and takes its name from it. The built-in tasks register on import, plugins on theirs.
"""

from __future__ import annotations

# ruff: noqa: I001  (registration order is the order of every task list: the built-ins in this order, then plugins)
from edgegolf.tasks import feature_extraction  # noqa: F401
from edgegolf.tasks import text_classification  # noqa: F401
from edgegolf.tasks import causal_lm  # noqa: F401
from edgegolf.tasks.base import TaskAdapter
from edgegolf.tasks.registry import adapter_names, get_task, infer_task, register_task

__all__ = ["TaskAdapter", "adapter_names", "get_task", "infer_task", "register_task"]
