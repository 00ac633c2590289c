"""edgegolf.runtime on tiny real bundles: values by hand, bad bundles, bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest

from edgegolf.errors import BundleError, InputError, MissingExtraError
from edgegolf.runtime import (
    ClassificationModel,
    EmbeddingModel,
    Prediction,
    load,
    open_model,
)
from edgegolf.runtime.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    read_manifest,
    sha256_file,
    write_manifest,
)
from edgegolf.runtime.spec import ModelSpec
from tests.builders.bundles import VOCAB, build_bundle

TEXTS = [
    "the bank shares fell",
    "new album released",
    "the team won a game in the election of the market",
    "film",
    "",  # only [CLS] [SEP]: still one vector
]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("runtime") / "embed")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("runtime") / "classify", task="text-classification", seed=1)


@pytest.fixture
def bundle_copy(embedder, tmp_path):
    """A private copy of the embedding bundle that a test may damage."""
    return shutil.copytree(embedder.folder, tmp_path / "bundle")


def edit_manifest(folder, change) -> None:
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


# --- values ---------------------------------------------------------------------------------
def test_embed_matches_numpy_by_hand(embedder):
    model = load(embedder.folder)
    assert isinstance(model, EmbeddingModel) and model.spec == embedder.spec
    vectors = model.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 8)
    expected = np.stack([embedder.embedding(t) for t in TEXTS])
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_classify_and_logits_match_numpy_by_hand(classifier):
    model = load(classifier.folder)
    assert isinstance(model, ClassificationModel)
    logits = model.logits(TEXTS)
    expected = np.stack([classifier.logits(t) for t in TEXTS])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    probs = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
    predictions = model.classify(TEXTS)
    assert [p.label for p in predictions] == [classifier.spec.labels[i] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose([p.score for p in predictions], probs.max(axis=1), rtol=1e-5)
    assert all(isinstance(p, Prediction) and 0 < p.score <= 1 for p in predictions)


def test_cls_pooling_without_normalising(tmp_path):
    bundle = build_bundle(tmp_path / "cls", pooling="cls", normalize=False)
    vectors = load(bundle.folder).embed(TEXTS[:2])
    np.testing.assert_allclose(vectors, np.stack([bundle.states(t)[0] for t in TEXTS[:2]]), rtol=1e-6)


def test_pool_is_the_pooling_of_embed(embedder):
    model = load(embedder.folder)
    feeds = model.encode(TEXTS)
    outputs = model.run(feeds)
    assert outputs[0].shape == feeds["input_ids"].shape + (8,)
    pooled = model.pool(outputs, feeds["attention_mask"])
    np.testing.assert_array_equal(pooled, model.pool(outputs[0], feeds["attention_mask"]))
    np.testing.assert_allclose(pooled, model.embed(TEXTS), atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batches_give_what_one_batch_gives(embedder, classifier, batch_size):
    embed, classify = load(embedder.folder), load(classifier.folder)
    np.testing.assert_allclose(embed.embed(TEXTS, batch_size=batch_size), embed.embed(TEXTS, batch_size=64), atol=1e-6)
    np.testing.assert_allclose(classify.logits(TEXTS, batch_size=batch_size), classify.logits(TEXTS), atol=1e-5)


def test_a_generator_and_a_tuple_are_accepted(embedder):
    model = load(embedder.folder)
    np.testing.assert_array_equal(model.embed(t for t in TEXTS), model.embed(tuple(TEXTS)))


# --- tokenization ---------------------------------------------------------------------------
def test_encode_truncates_at_max_length_and_pads_to_the_longest(tmp_path):
    bundle = build_bundle(tmp_path / "short", max_length=6)
    model = load(bundle.folder)
    long_text = "the team won a game in the election"  # 8 words + 2 special tokens
    feeds = model.encode([long_text, "film"])
    assert list(feeds) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(a.dtype == np.int64 and a.shape == (2, 6) for a in feeds.values())
    assert feeds["input_ids"][0].tolist() == bundle.ids(long_text) and feeds["input_ids"][0, -1] == VOCAB["[SEP]"]
    assert feeds["input_ids"][1].tolist() == bundle.ids("film") + [VOCAB["[PAD]"]] * 3
    assert feeds["attention_mask"].tolist() == [[1] * 6, [1] * 3 + [0] * 3]
    # the truncated text embeds as its first max_length tokens, by hand
    np.testing.assert_allclose(model.embed([long_text])[0], bundle.embedding(long_text), atol=1e-6)


def test_the_tokenizer_files_own_padding_and_truncation_are_replaced(embedder):
    # tokenizer.json says: truncate at 5, pad to 40; the spec says: truncate at 16, pad to the longest
    feeds = load(embedder.folder).encode(["the team won a game in the election", "film"])
    assert feeds["input_ids"].shape == (2, 10)  # 8 words + [CLS] [SEP]


def test_encode_pad_to_gives_exactly_that_many_tokens(embedder):
    model = load(embedder.folder)
    feeds = model.encode(["film", "the team won a game in the election"], pad_to=5)
    assert all(a.shape == (2, 5) for a in feeds.values())
    assert feeds["input_ids"].tolist() == [embedder.ids("film") + [0, 0], embedder.ids("the team won", 5)]
    wide = model.encode(["film"], pad_to=16)
    assert wide["input_ids"].shape == (1, 16) and wide["attention_mask"].sum() == 3


@pytest.mark.parametrize("pad_to", [0, 1, 17, 2.5, True])
def test_encode_refuses_a_bad_pad_to(embedder, pad_to):
    # 2: the tokenizer adds [CLS] and [SEP], and cannot truncate below them
    with pytest.raises(InputError, match=r"pad_to is .*accepted: None or an integer from 2 to max_length 16"):
        load(embedder.folder).encode(["film"], pad_to=pad_to)


def test_a_max_length_below_the_special_tokens_is_refused(tmp_path):
    with pytest.raises(BundleError, match="manifest max_length is 1; tokenizer.json adds 2 special tokens"):
        load(build_bundle(tmp_path / "b", max_length=1).folder)


def test_pad_token_that_disagrees_with_the_tokenizer_is_refused(embedder):
    spec = replace(embedder.spec, pad_token_id=3)
    with pytest.raises(BundleError, match=r"maps pad token '\[PAD\]' to id 0, but the manifest says 3"):
        open_model(embedder.folder / "model.onnx", embedder.folder / "tokenizer.json", spec)


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "texts is empty; pass at least one string"),
        (["fine", 3], r"texts\[1\] is a int \(3\); every item must be a str"),
        (["fine", None], r"texts\[1\] is a NoneType"),
        ("the bank", r"texts is a single str \('the bank'\); pass a list of strings"),
        (b"bytes", r"texts is a single bytes"),
        (None, "texts is a NoneType; pass a list of strings"),
    ],
)
def test_bad_texts_are_refused_with_what_was_wrong(embedder, classifier, texts, message):
    with pytest.raises(InputError, match=message):
        load(embedder.folder).embed(texts)
    with pytest.raises(InputError, match=message):
        load(classifier.folder).classify(texts)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, None])
def test_bad_batch_size_is_refused(embedder, batch_size):
    with pytest.raises(InputError, match=f"batch_size is {batch_size!r}; accepted: a positive integer"):
        load(embedder.folder).embed(["film"], batch_size=batch_size)


def test_a_call_for_another_task_names_the_task(embedder, classifier):
    embed, classify = load(embedder.folder), load(classifier.folder)
    with pytest.raises(InputError, match=r"\.classify\(\) needs a text-classification bundle, .* task is 'feature-extraction'; use \.embed\(\)"):
        embed.classify(["film"])
    with pytest.raises(InputError, match=r"\.logits\(\) needs a text-classification bundle"):
        embed.logits(["film"])
    with pytest.raises(InputError, match=r"\.embed\(\) needs a feature-extraction bundle, .*use \.classify\(\) or \.logits\(\)"):
        classify.embed(["film"])


def test_run_refuses_feeds_it_cannot_run(embedder):
    model = load(embedder.folder)
    feeds = model.encode(["film"])
    with pytest.raises(InputError, match=r"feeds are named \['attention_mask', 'input_ids'\]; the graph takes exactly"):
        model.run({k: v for k, v in feeds.items() if k != "token_type_ids"})
    with pytest.raises(InputError, match="onnxruntime refused the feeds"):
        model.run({k: v.astype(np.int32) for k, v in feeds.items()})
    with pytest.raises(InputError, match="feeds is a list"):
        model.run(list(feeds.values()))


# --- sessions -------------------------------------------------------------------------------
def test_threads_and_provider_are_chosen_and_logged(embedder, caplog):
    with caplog.at_level(logging.INFO, logger="edgegolf.runtime"):
        model = load(embedder.folder, threads=1, providers=["cpu"])
    assert model.providers[0] == "CPUExecutionProvider"
    assert "model.onnx runs on CPUExecutionProvider (1 threads)" in caplog.text
    assert model.manifest["model"] == embedder.spec.to_dict()


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime-gpu is installed")
def test_cuda_without_onnxruntime_gpu_says_what_is_needed(embedder):
    with pytest.raises(MissingExtraError, match=r"provider 'cuda' needs onnxruntime-gpu"):
        load(embedder.folder, providers=["cuda"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"providers": ["tpu"]}, "provider 'tpu' is not available here"),
    ({"providers": "cpu"}, r"providers is 'cpu'; accepted: None or a non-empty list"),
    ({"providers": []}, "providers is"),
    ({"threads": 0}, "threads is 0; accepted: None"),
])
def test_bad_session_settings_are_refused(embedder, kwargs, message):
    with pytest.raises(InputError, match=message):
        load(embedder.folder, **kwargs)


def test_a_graph_that_does_not_take_the_specs_inputs_is_refused(embedder):
    spec = replace(embedder.spec, input_names=("input_ids", "attention_mask"))
    with pytest.raises(BundleError, match=r"the graph takes inputs \['input_ids', 'attention_mask', 'token_type_ids'\]"):
        open_model(embedder.folder / "model.onnx", embedder.folder / "tokenizer.json", spec)
    spec = replace(embedder.spec, output_names=("pooler_output",))
    with pytest.raises(BundleError, match=r"the graph has no outputs \['pooler_output'\]"):
        open_model(embedder.folder / "model.onnx", embedder.folder / "tokenizer.json", spec)


def test_labels_that_do_not_match_the_logits_are_refused(classifier):
    spec = replace(classifier.spec, labels=("a", "b"))
    with pytest.raises(BundleError, match=r"the graph gives 3 logits; the manifest names 2 labels"):
        open_model(classifier.folder / "model.onnx", classifier.folder / "tokenizer.json", spec)


# --- bundles that must not load -------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json"])
def test_a_tampered_byte_names_the_file(bundle_copy, name):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"^{name} differs from its manifest hash — the bundle was modified after it was built$"):
        load(bundle_copy)
    read_manifest(bundle_copy, verify=False)  # inspection without verification still reads it


def test_a_missing_file_is_named(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is listed in manifest.json but missing from the bundle"):
        load(bundle_copy)


@pytest.mark.parametrize(("name", "message"), [
    ("../outside.bin", r"lists '../outside.bin', which contains '..'"),
    ("sub/../../outside.bin", "which contains '..'"),
    ("/etc/passwd", "lists an absolute path '/etc/passwd'"),
    ("C:\\Windows\\win.ini", "lists an absolute path"),
])
def test_paths_outside_the_bundle_are_refused(bundle_copy, name, message):
    (bundle_copy.parent / "outside.bin").write_bytes(b"x")
    edit_manifest(bundle_copy, lambda m: m["files"].update({name: {"sha256": sha256_file(bundle_copy.parent / "outside.bin"), "bytes": 1}}))
    with pytest.raises(BundleError, match=message):
        load(bundle_copy)
    with pytest.raises(BundleError, match=message):
        read_manifest(bundle_copy, verify=False)


def test_a_symlink_pointing_outside_is_refused(bundle_copy):
    outside = bundle_copy.parent / "secret.txt"
    outside.write_text("not part of the bundle")
    os.symlink(outside, bundle_copy / "vocab.txt")
    edit_manifest(bundle_copy, lambda m: m["files"].update({"vocab.txt": {"sha256": sha256_file(outside), "bytes": 22}}))
    with pytest.raises(BundleError, match=r"lists 'vocab.txt', which resolves \(through a symlink\) outside the bundle"):
        load(bundle_copy)


def test_a_symlinked_model_file_pointing_outside_is_refused(bundle_copy):
    moved = bundle_copy.parent / "model.onnx"
    shutil.move(bundle_copy / "model.onnx", moved)
    os.symlink(moved, bundle_copy / "model.onnx")  # the hash still matches: only the path gives it away
    with pytest.raises(BundleError, match="lists 'model.onnx', which resolves .* outside the bundle"):
        load(bundle_copy)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(format_version=FORMAT_VERSION + 1), r"format_version is 2; this runtime reads version 1"),
    (lambda m: m.pop("format_version"), "format_version is None; this runtime reads version 1"),
    (lambda m: m.update(format="onnx-zip"), "format is 'onnx-zip'; this runtime reads 'edgegolf-bundle'"),
    (lambda m: m["model"].update(task="translation"), r"names task 'translation'; this runtime runs"),
    (lambda m: m.pop("model"), "'model' section must be a JSON object"),
    (lambda m: m["model"].update(onnx_file="other.onnx"), "the model's onnx_file 'other.onnx' is not listed in manifest.json"),
    (lambda m: m.pop("files"), "manifest.json has no 'files' table"),
])
def test_manifests_this_runtime_cannot_read_are_refused(bundle_copy, change, message):
    edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        load(bundle_copy)


def test_a_folder_without_a_readable_manifest_is_refused(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="does not exist; pass the folder that holds manifest.json"):
        load(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="is a file; pass the bundle folder"):
        load(bundle_copy / "model.onnx")
    (bundle_copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json in .* is not valid JSON"):
        load(bundle_copy)
    (bundle_copy / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="has no manifest.json; it is not an edgegolf bundle"):
        load(bundle_copy)


def test_a_corrupt_onnx_file_is_named_not_a_traceback(bundle_copy):
    path = bundle_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:200])  # truncated, then re-listed so the hashes match
    manifest = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    write_manifest(bundle_copy, {k: v for k, v in manifest.items() if k != "files"})
    with pytest.raises(BundleError, match=r"^model.onnx is not a loadable ONNX model \(corrupt, truncated"):
        load(bundle_copy)


def test_a_corrupt_tokenizer_file_is_named(bundle_copy, embedder):
    (bundle_copy / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    with pytest.raises(BundleError, match="^tokenizer.json is not a tokenizers tokenizer.json file"):
        open_model(bundle_copy / "model.onnx", bundle_copy / "tokenizer.json", embedder.spec)


# --- writing manifests ----------------------------------------------------------------------
def test_write_manifest_lists_every_file_but_itself(bundle_copy):
    (bundle_copy / "plots").mkdir()
    (bundle_copy / "plots" / "latency.svg").write_text("<svg/>")
    manifest = read_manifest(bundle_copy)
    full = write_manifest(bundle_copy, {"model": manifest["model"], "note": "é"})
    on_disk = (bundle_copy / MANIFEST_NAME).read_text(encoding="utf-8")
    assert json.loads(on_disk) == full and on_disk == json.dumps(full, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert sorted(full["files"]) == ["model.onnx", "plots/latency.svg", "tokenizer.json"]
    assert full["files"]["plots/latency.svg"] == {"sha256": sha256_file(bundle_copy / "plots" / "latency.svg"), "bytes": 6}
    assert (full["format"], full["format_version"]) == ("edgegolf-bundle", 1)
    assert sorted(p.name for p in bundle_copy.iterdir()) == ["manifest.json", "model.onnx", "plots", "tokenizer.json"]
    assert isinstance(load(bundle_copy), EmbeddingModel)


def test_write_manifest_refuses_links_and_bad_model_sections(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="names task 'translation'"):
        write_manifest(bundle_copy, {"model": {**read_manifest(bundle_copy)["model"], "task": "translation"}})
    os.symlink(bundle_copy / "model.onnx", bundle_copy / "link.onnx")
    with pytest.raises(BundleError, match="bundle file 'link.onnx' is a symlink; a bundle holds plain files only"):
        write_manifest(bundle_copy, {})
    with pytest.raises(BundleError, match="does not exist or is not a folder"):
        write_manifest(tmp_path / "nowhere", {})


def test_an_unlisted_file_is_reported_but_not_used(bundle_copy, caplog):
    (bundle_copy / "notes.txt").write_text("added later")
    with caplog.at_level(logging.WARNING, logger="edgegolf.runtime"):
        load(bundle_copy)
    assert "does not list (not verified, not used): ['notes.txt']" in caplog.text


def test_open_model_needs_a_model_spec(embedder):
    with pytest.raises(BundleError, match="spec is a dict; expected a ModelSpec"):
        open_model(embedder.folder / "model.onnx", embedder.folder / "tokenizer.json", embedder.spec.to_dict())
    assert ModelSpec.from_dict(embedder.spec.to_dict()) == embedder.spec
