"""torch -> ONNX export, its verification, and onnxruntime's fusions, on a tiny BERT built here
and fed real BBC News text."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgegolf.errors import ExportError, RecipeError
from edgegolf.export.onnx import export_onnx, verify_onnx
from edgegolf.export.optimize import optimize_graph
from tests.builders.export import INPUTS, OUTPUTS


def torch_reference(module):
    def reference(feeds):
        with torch.no_grad():
            return [o.numpy() for o in module(*(torch.from_numpy(feeds[n]) for n in INPUTS))]
    return reference


def test_export_writes_a_verified_graph(exported):
    module, report = exported
    assert report.path.is_file()
    assert 0.0 <= report.max_abs_diff <= report.tolerance == 1e-4
    assert report.input_names == INPUTS and report.output_names == OUTPUTS
    model = onnx.load(str(report.path))
    assert [i.name for i in model.graph.input] == INPUTS
    assert [o.name for o in model.graph.output] == OUTPUTS
    assert any(op.domain in ("", "ai.onnx") and op.version == 17 for op in model.opset_import)
    assert not list(report.path.parent.glob(".*tmp")), "the temporary file was left behind"


@pytest.mark.parametrize("batch,length", [(1, 9), (3, 40), (5, 64)])
def test_dynamic_axes_run_at_other_shapes(exported, texts, batch, length):
    module, report = exported
    # the last text is cut short so that a batch holds padding
    feeds = texts.feeds(texts.texts[4:3 + batch] + [texts.texts[3 + batch][:60]], max_length=length)
    if batch > 1:
        assert (feeds["attention_mask"] == 0).any(), "the batch should include padding"
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    got = session.run(OUTPUTS, feeds)[0]
    want = torch_reference(module)(feeds)[0]
    assert got.shape == want.shape == (batch, feeds["input_ids"].shape[1], 32)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_verify_raises_when_the_reference_differs(exported, texts):
    module, report = exported
    feeds = [texts.feeds(texts.texts[:2])]
    reference = torch_reference(module)
    assert verify_onnx(report.path, reference, feeds, atol=1e-4, output_names=OUTPUTS) <= 1e-4
    shifted = lambda f: [o + 0.01 for o in reference(f)]  # noqa: E731
    with pytest.raises(ExportError, match=r"output 'last_hidden_state' differs from PyTorch by 0\.01.*atol=0\.001"):
        verify_onnx(report.path, shifted, feeds, atol=1e-3, output_names=OUTPUTS)


class SignBranch(torch.nn.Module):
    """Python control flow: the tracer records only the branch the sample took."""

    def forward(self, x):
        return (x * 2 if float(x.sum()) > 0 else x * 3,)


def test_a_graph_that_disagrees_with_torch_is_not_written(tmp_path):
    out = tmp_path / "branch.onnx"
    positive = {"x": np.ones((2, 3), dtype=np.float32)}
    with pytest.raises(ExportError, match=r"output 'y' differs from PyTorch by 1 on feed 1"):
        export_onnx(SignBranch(), out, input_names=["x"], output_names=["y"], sample_feeds=positive,
                    verify_feeds=[positive, {"x": -np.ones((2, 3), dtype=np.float32)}])
    assert list(tmp_path.iterdir()) == []


class Unexportable(torch.nn.Module):
    def forward(self, x):
        raise ValueError("this model cannot be traced\nsecond line")


def test_export_failure_names_the_model_and_the_cause(tmp_path):
    x = {"x": np.ones((1, 2), dtype=np.float32)}
    with pytest.raises(ExportError, match=r"export of Unexportable failed: this model cannot be traced$"):
        export_onnx(Unexportable(), tmp_path / "m.onnx", input_names=["x"], output_names=["y"],
                    sample_feeds=x, verify_feeds=[x])
    assert list(tmp_path.iterdir()) == []


def test_optimize_fuses_attention_and_layer_norms(exported, texts, tmp_path):
    module, report = exported
    optimized = optimize_graph(report.path, tmp_path / "fused.onnx", num_heads=2, hidden_size=32)
    assert optimized.fused_ops.get("Attention") == 2  # one per layer
    assert optimized.fused_ops.get("SkipLayerNormalization", 0) >= 2
    model = onnx.load(str(optimized.path))
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.output)
    feeds = [texts.feeds(texts.texts[5:6]), texts.feeds(texts.texts[6:9], 50)]
    assert verify_onnx(optimized.path, torch_reference(module), feeds, atol=1e-4, output_names=OUTPUTS) <= 1e-4


def test_optimize_rejects_unknown_model_types(exported, tmp_path):
    with pytest.raises(RecipeError, match=r"model_type = 'lstm' is not supported; choose one of: bert"):
        optimize_graph(exported[1].path, tmp_path / "x.onnx", model_type="lstm", num_heads=2, hidden_size=32)
