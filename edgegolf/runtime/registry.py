"""Task name -> runtime model class: the runtime's half of a task's one registration.

A runtime model (a `TaskModel` subclass, edgegolf/runtime/models.py) registers itself with
`@runtime_model` under its `task` name; the task's adapter (edgegolf/tasks/) names that
class as its `runtime_model` and so is registered under the same name. Every list of task
names (recipe validation, CLI help) is read from here, which imports neither torch nor
transformers, so an app and the command line can ask without loading them.
"""

from __future__ import annotations

from typing import Any

_MODELS: dict[str, type] = {}  # registration order: the built-ins, then plugins


def runtime_model(cls: type) -> type:
    """Class decorator for a TaskModel subclass: bundles whose task is `cls.task` open as `cls`."""
    task = getattr(cls, "task", "")
    if not isinstance(task, str) or not task:
        raise ValueError(f"{cls.__qualname__} has no task name; set the class attribute task = 'my-task'")
    if task in _MODELS and _MODELS[task] is not cls:
        raise ValueError(f"task {task!r} already has the runtime model {_MODELS[task].__qualname__}")
    _MODELS[task] = cls
    return cls


def model_class(task: str) -> Any:
    """The runtime model class registered for `task`, or None."""
    return _MODELS.get(task)


def task_names() -> tuple[str, ...]:
    """Every task a bundle can have, in registration order."""
    import edgegolf.runtime  # noqa: F401  (the built-in models register on import)

    return tuple(_MODELS)
