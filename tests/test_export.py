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

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUTS = ["last_hidden_state"]


class LastHiddenState(torch.nn.Module):
    """The shape the task adapters give the exporter: positional inputs, a tuple out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return (self.model(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state,)


def tiny_bert(vocab_size: int, *, seed: int = 0, initializer_range: float = 0.1):
    """A 2-layer BERT; weights larger than BERT's 0.02 so that every MatMul shows in the output."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, initializer_range=initializer_range)
    config._attn_implementation = "eager"  # the pattern onnxruntime's fusions recognise (on transformers 5)
    return BertModel(config).eval()


class Texts:
    """Real BBC News text, tokenized with a WordPiece vocabulary of its own frequent words."""

    def __init__(self):
        from transformers import BertTokenizer

        from edgegolf.data import load_labelled_texts
        from tests.conftest import bbc_vocabulary

        self.vocab = bbc_vocabulary()
        # vocab=: on transformers 5, vocab_file= silently builds a 5-token vocabulary
        self.tokenizer = BertTokenizer(vocab=self.vocab, do_lower_case=True)
        self.texts = list(load_labelled_texts().texts[::97][:16])

    def feeds(self, texts: list[str], max_length: int = 64) -> dict[str, np.ndarray]:
        enc = self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        return {name: enc[name].astype(np.int64) for name in INPUTS}


@pytest.fixture(scope="session")
def texts() -> Texts:
    return Texts()


@pytest.fixture(scope="session")
def exported(texts, tmp_path_factory):
    """(module, path of its verified fp32 export)."""
    module = LastHiddenState(tiny_bert(len(texts.vocab)))
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    report = export_onnx(module, path, input_names=INPUTS, output_names=OUTPUTS,
                         sample_feeds=texts.feeds(texts.texts[:2]),
                         verify_feeds=[texts.feeds(texts.texts[:1]), texts.feeds(texts.texts[1:4], 48)], atol=1e-4)
    return module, report


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
