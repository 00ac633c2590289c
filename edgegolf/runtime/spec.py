"""What the runtime needs to know to feed a graph and read its outputs.

A `ModelSpec` is stored as the "model" section of a bundle's manifest.json. The pipeline
writes it; the runtime reads it. It holds no torch types so that apps can load it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgegolf.errors import BundleError
from edgegolf.runtime.registry import task_names


@dataclass(frozen=True)
class ModelSpec:
    task: str  # a registered task (edgegolf.runtime.registry)
    input_names: tuple[str, ...]  # graph inputs, e.g. ("input_ids", "attention_mask", "token_type_ids")
    output_names: tuple[str, ...]  # graph outputs, e.g. ("last_hidden_state",) or ("logits",)
    max_length: int  # longer inputs are truncated to this many tokens
    pad_token_id: int
    pad_token: str
    pooling: str = "mean"  # feature-extraction: how token states become one vector (sentence-transformers' modes)
    normalize: bool = True  # feature-extraction: L2-normalise the pooled vector
    prompts: dict[str, str] = field(default_factory=dict)  # feature-extraction: named texts prepended to inputs
    default_prompt_name: str = ""  # feature-extraction: the prompt every input gets unless another is named
    labels: tuple[str, ...] = ()  # text-classification: label of each logit, in order
    onnx_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    extra: dict[str, Any] = field(default_factory=dict)  # causal-lm: its key/value cache inputs and shape

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("input_names", "output_names", "labels"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        if not isinstance(data, dict):
            raise BundleError("manifest 'model' section must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(f"manifest 'model' section has unknown fields {unknown}; known: {sorted(known)}")
        try:
            spec = cls(
                **{
                    **data,
                    "input_names": tuple(data["input_names"]),
                    "output_names": tuple(data["output_names"]),
                    "labels": tuple(data.get("labels", ())),
                }
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(f"manifest 'model' section is incomplete or malformed: {exc}") from None
        _check_types(spec, data)
        if spec.task not in task_names():
            raise BundleError(f"manifest names task {spec.task!r}; this runtime runs {list(task_names())}")
        return spec


_TYPES = {"task": str, "max_length": int, "pad_token_id": int, "pad_token": str, "pooling": str, "normalize": bool,
          "default_prompt_name": str,
          "onnx_file": str, "tokenizer_file": str, "extra": dict}


def _check_types(spec: ModelSpec, data: dict) -> None:
    """A manifest is untrusted input: every field must have the type the runtime uses it as."""
    for name in ("input_names", "output_names", "labels"):
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise BundleError(f"manifest 'model' field {name} = {value!r:.60} is not a list of strings")
    for name, kind in _TYPES.items():
        value = getattr(spec, name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BundleError(f"manifest 'model' field {name} = {value!r:.60} is not a {kind.__name__}")
    if not isinstance(spec.prompts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in spec.prompts.items()):
        raise BundleError(f"manifest 'model' field prompts = {spec.prompts!r:.60} does not map names to texts")
    if spec.default_prompt_name and spec.default_prompt_name not in spec.prompts:
        raise BundleError(f"manifest 'model' field default_prompt_name {spec.default_prompt_name!r} is not one of "
                          f"its prompts {sorted(spec.prompts)}")
    for name in ("past_inputs", "present_outputs"):  # causal-lm: the key/value cache's graph names
        value = spec.extra.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise BundleError(f"manifest 'model' field extra.{name} = {value!r:.60} is not a list of strings")
