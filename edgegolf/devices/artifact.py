"""What `edgegolf bench`, `compare` and `report` time: a bundle folder, or a bare .onnx file.

A bundle brings its own spec (manifest.json, hashes checked). A bare .onnx file needs the
tokenizer.json that sits beside it: benchmark inputs are always real text (inputs.py), and
the spec is read from the graph's own input and output names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgegolf.devices.size import external_data_files
from edgegolf.errors import BundleError
from edgegolf.runtime.manifest import MANIFEST_NAME, read_manifest
from edgegolf.runtime.spec import ModelSpec

BARE_MAX_LENGTH = 1 << 16  # a bare graph declares no limit; the requested --seq is the only one
PAD_TOKENS = ("[PAD]", "<pad>")


@dataclass
class Artifact:
    path: Path  # what the user named
    label: str
    onnx_path: Path
    tokenizer_path: Path
    spec: ModelSpec
    manifest: dict | None  # None for a bare .onnx file

    def files(self) -> list[Path]:
        """Everything a device needs to run it: the graph, its external data, the tokenizer."""
        return [self.onnx_path, *external_data_files(self.onnx_path), self.tokenizer_path]

    def to_dict(self) -> dict:
        return {"path": str(self.path), "label": self.label, "kind": "bundle" if self.manifest else "onnx",
                "onnx_file": self.onnx_path.name, "task": self.spec.task}


def open_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path, verify=True)
        spec = ModelSpec.from_dict(manifest["model"])
        return Artifact(path, path.resolve().name, path / spec.onnx_file, path / spec.tokenizer_file, spec, manifest)
    if path.is_file() and path.suffix == ".onnx":
        if (path.parent / MANIFEST_NAME).is_file():  # the graph of a bundle: use the bundle's spec
            bundle = open_artifact(path.parent)
            if bundle.onnx_path.resolve() == path.resolve():
                return bundle
        tokenizer = path.parent / "tokenizer.json"
        if not tokenizer.is_file():
            raise BundleError(f"{str(path)!r} has no tokenizer.json beside it; accepted: a bundle folder, or an .onnx "
                              "file with its tokenizer.json in the same folder (inputs are real text)")
        return Artifact(path, path.name, path, tokenizer, _bare_spec(path, tokenizer), None)
    if not path.exists():
        raise BundleError(f"{str(path)!r} does not exist; accepted: a bundle folder or an .onnx file")
    raise BundleError(f"{str(path)!r} is neither a bundle folder nor an .onnx file")


def _bare_spec(onnx_path: Path, tokenizer_path: Path) -> ModelSpec:
    from edgegolf.runtime.session import create_session

    session = create_session(onnx_path, threads=1)  # readable errors for a corrupt graph
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    vocab = _vocab(tokenizer_path)
    pad = next((token for token in PAD_TOKENS if token in vocab), PAD_TOKENS[0])
    task = "text-classification" if outputs and outputs[0] == "logits" else "feature-extraction"
    return ModelSpec(task=task, input_names=inputs, output_names=outputs, max_length=BARE_MAX_LENGTH,
                     pad_token_id=int(vocab.get(pad, 0)), pad_token=pad)


def _vocab(tokenizer_path: Path) -> dict:
    try:
        vocab = json.loads(tokenizer_path.read_text(encoding="utf-8"))["model"]["vocab"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return {}
    return vocab if isinstance(vocab, dict) else {}
