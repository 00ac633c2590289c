"""What the runtime needs to know to feed a graph and read its outputs.

A `ModelSpec` is stored as the "model" section of a bundle's manifest.json. The pipeline
writes it; the runtime reads it. It holds no torch types so that apps can load it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgegolf.errors import BundleError

TASKS = ("feature-extraction", "text-classification")


@dataclass(frozen=True)
class ModelSpec:
    task: str  # one of TASKS
    input_names: tuple[str, ...]  # graph inputs, e.g. ("input_ids", "attention_mask", "token_type_ids")
    output_names: tuple[str, ...]  # graph outputs, e.g. ("last_hidden_state",) or ("logits",)
    max_length: int  # longer inputs are truncated to this many tokens
    pad_token_id: int
    pad_token: str
    pooling: str = "mean"  # feature-extraction: how token states become one vector
    normalize: bool = True  # feature-extraction: L2-normalise the pooled vector
    labels: tuple[str, ...] = ()  # text-classification: label of each logit, in order
    onnx_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("input_names", "output_names", "labels"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ModelSpec":
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
        if spec.task not in TASKS:
            raise BundleError(f"manifest names task {spec.task!r}; this runtime runs {list(TASKS)}")
        return spec
