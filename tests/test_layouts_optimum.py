"""Bundles in the code people already run: Optimum's ORTModel classes and
sentence-transformers' ONNX backend give what `edgegolf.runtime` gives.

Runs in Optimum's environment (transformers<4.58, built by .ci/run), on bundles built the way
users build them: by `edgegolf compress --layout ...` in the main environment
(EDGEGOLF_BUNDLE_PYTHON, which .ci/run points at .venv/bin/python; without it, this
environment builds them). Each loader is used as its own documentation shows, with the
bundle folder as the model path.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

HAS_OPTIMUM = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.onnxruntime") is not None
pytestmark = [
    pytest.mark.optimum,
    # .ci/run sets EDGEGOLF_REQUIRE_OPTIMUM in the optimum environment, so a broken install fails there.
    pytest.mark.skipif(not HAS_OPTIMUM and not os.environ.get("EDGEGOLF_REQUIRE_OPTIMUM"),
                       reason="needs the optimum environment (.ci/run builds it)"),
]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from tests.builders.layouts import build_layout_bundles

    return build_layout_bundles(tmp_path_factory.mktemp("layouts") / "bundles")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    from edgegolf.data import load_labelled_texts

    articles = load_labelled_texts().texts
    # short lines and one whole article, longer than the bundle's max_length: truncation must agree too
    return [articles[0].split("\n")[0], articles[700].split("\n")[0], "Shares rose.", articles[1500]]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _unchanged(folder) -> None:
    """The loaders left the bundle as it was: the runtime still verifies every hash."""
    from edgegolf.runtime import load

    load(folder, threads=1)


def test_minilm_bundle_in_ort_model_for_feature_extraction(bundles, texts):
    import torch
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer

    from edgegolf.runtime import load

    folder = bundles["minilm"]
    runtime = load(folder, threads=1)
    expected = np.concatenate([runtime.embed([t]) for t in texts])
    model = ORTModelForFeatureExtraction.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    got = []
    for text in texts:  # one at a time, as the runtime ran them: dynamic int8 depends on batch neighbours
        inputs = tokenizer([text], return_tensors="pt", truncation=True, max_length=runtime.spec.max_length)
        hidden = model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        got.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy())
    assert _cosines(np.concatenate(got), expected).min() >= 0.9999
    _unchanged(folder)


def test_minilm_bundle_in_sentence_transformers_onnx_backend(bundles, texts):
    from sentence_transformers import SentenceTransformer

    from edgegolf.runtime import load

    folder = bundles["minilm"]
    runtime = load(folder, threads=1)
    expected = np.concatenate([runtime.embed([t]) for t in texts])
    model = SentenceTransformer(str(folder), backend="onnx", device="cpu")
    assert model.max_seq_length == runtime.spec.max_length
    got = np.stack([model.encode([t], batch_size=1)[0] for t in texts])
    assert got.shape == expected.shape
    assert _cosines(got, expected).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)  # the Normalize module is there
    _unchanged(folder)


def test_classifier_bundle_in_ort_model_for_sequence_classification(bundles, texts):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    from edgegolf.runtime import load

    folder = bundles["classifier"]
    runtime = load(folder, threads=1)
    model = ORTModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for text in texts:
        inputs = tokenizer([text], return_tensors="pt", truncation=True, max_length=runtime.spec.max_length)
        logits = model(**inputs).logits.numpy()
        expected = runtime.logits([text])
        assert _cosines(logits, expected).min() >= 0.9999
        assert np.allclose(logits, expected, atol=1e-4)
        assert model.config.id2label[int(logits.argmax())] == runtime.classify([text])[0].label
    _unchanged(folder)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_causal_lm_bundle_in_ort_model_for_causal_lm_generates_the_runtime_tokens(bundles, arch):
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    from edgegolf.runtime import load

    folder = bundles[arch]
    runtime = load(folder, threads=1)
    model = ORTModelForCausalLM.from_pretrained(folder)
    assert model.can_use_cache  # it found the key/value cache inputs and outputs
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for prompt in ["The company said", "Shares in the bank rose"]:
        expected = runtime.generate(prompt, max_new_tokens=8)
        inputs = tokenizer([prompt], return_tensors="pt")
        assert inputs["input_ids"][0].tolist() == expected.prompt_ids
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        assert out[0, inputs["input_ids"].shape[1]:].tolist() == expected.token_ids
        logits = model(**inputs).logits[0, -1].numpy()
        assert _cosines(logits[None], runtime.prefill(expected.prompt_ids)[0][None]).min() >= 0.9999
    _unchanged(folder)
