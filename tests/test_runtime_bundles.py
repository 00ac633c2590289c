"""The tiny-bundle builder (tests/builders/bundles.py) itself: what it writes is checked."""

from __future__ import annotations

import onnx

from tests.builders.bundles import build_bundle


def test_builder_writes_a_checked_graph_and_a_manifest(tmp_path):
    bundle = build_bundle(tmp_path / "b", task="text-classification")
    onnx.checker.check_model(onnx.load(str(bundle.folder / "model.onnx")))
    assert sorted(p.name for p in bundle.folder.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
