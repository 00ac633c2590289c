"""Task adapters: everything that differs between tasks lives in one file per task."""

from __future__ import annotations

from edgegolf.errors import RecipeError
from edgegolf.tasks.base import TaskAdapter
from edgegolf.tasks.causal_lm import CausalLM
from edgegolf.tasks.feature_extraction import FeatureExtraction
from edgegolf.tasks.text_classification import TextClassification

_ADAPTERS: dict[str, type[TaskAdapter]] = {
    FeatureExtraction.name: FeatureExtraction,
    TextClassification.name: TextClassification,
    CausalLM.name: CausalLM,
}
TASK_NAMES = tuple(_ADAPTERS)


def get_task(name: str) -> TaskAdapter:
    try:
        return _ADAPTERS[name]()
    except KeyError:
        raise RecipeError(f"task {name!r} is not supported; choose one of: {', '.join(TASK_NAMES)}") from None


def infer_task(config) -> str:
    """The task a model was built for, from its config's architectures."""
    for architecture in getattr(config, "architectures", None) or ():
        for adapter in _ADAPTERS.values():
            if adapter.claims(architecture):
                return adapter.name
    return FeatureExtraction.name
