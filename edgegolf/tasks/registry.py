"""Task name -> adapter class: the torch side of a task's one registration.

An adapter declares the runtime model its bundles open as (`runtime_model`, registered in
edgegolf/runtime/registry.py) and takes its name from it, so a task is named once:

    @runtime_model
    class ToyModel(TaskModel): task = "toy"           # what an app calls
    @register_task
    class Toy(TaskAdapter): runtime_model = ToyModel  # how the pipeline loads, exports, scores, distills
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgegolf.errors import RecipeError
from edgegolf.runtime.registry import model_class

if TYPE_CHECKING:
    from edgegolf.tasks.base import TaskAdapter

_ADAPTERS: dict[str, type["TaskAdapter"]] = {}
DEFAULT_TASK = "feature-extraction"  # a model whose config names no head any adapter claims


def register_task(cls: type["TaskAdapter"]) -> type["TaskAdapter"]:
    """Class decorator: register an adapter under its runtime model's task name."""
    runtime = getattr(cls, "runtime_model", None)
    name = getattr(runtime, "task", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__} needs runtime_model = a TaskModel subclass with a task name")
    if model_class(name) is not runtime:
        raise ValueError(f"{cls.__qualname__}.runtime_model {getattr(runtime, '__qualname__', runtime)} is not "
                         "registered; decorate it "
                         "with edgegolf.runtime.registry.runtime_model")
    if name in _ADAPTERS and _ADAPTERS[name] is not cls:
        raise ValueError(f"task {name!r} already has the adapter {_ADAPTERS[name].__qualname__}")
    cls.name = name
    _ADAPTERS[name] = cls
    return cls


def adapter_names() -> tuple[str, ...]:
    return tuple(_ADAPTERS)


def get_task(name: str) -> "TaskAdapter":
    try:
        return _ADAPTERS[name]()
    except (KeyError, TypeError):
        raise RecipeError(f"task {name!r} is not supported; choose one of: {', '.join(_ADAPTERS)}") from None


def infer_task(config) -> str:
    """The task a model was built for, from its config's architectures."""
    for architecture in getattr(config, "architectures", None) or ():
        for adapter in _ADAPTERS.values():
            if adapter.claims(architecture):
                return adapter.name
    return DEFAULT_TASK
