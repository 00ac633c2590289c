"""sentence-transformers folders as they are: `edgegolf compress ST_FOLDER` reproduces
`SentenceTransformer(folder).encode` (pooling mode, Dense layers, Normalize, default prompt),
in the teacher row, the bundle and the torch-free runtime; a module it cannot reproduce is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgegolf
from edgegolf.errors import InputError, SourceError
from edgegolf.pipeline.stages import save_tokenizer
from edgegolf.runtime import load
from edgegolf.runtime.tokenize import make_tokenizer
from edgegolf.tasks.registry import get_task
from tests.builders.recipes import QUICK
from tests.builders.st_folders import TEXTS, save_st_folder, save_st_folder_with_lstm, st_encode

FOLDERS = {
    "cls-dense": {"pooling": "cls", "dense": (16,), "normalize": False},
    "mean-prompt": {"pooling": "mean", "prompts": {"query": "query: ", "document": ""}, "default_prompt_name": "query"},
    "max": {"pooling": "max"},
}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each folder of FOLDERS built once, and compressed once into an fp32 bundle: name -> (folder, result)."""
    folders: dict = {}

    def get(name: str, *, bundle: bool = False):
        if name not in folders:
            folders[name] = [save_st_folder(tmp_path_factory.mktemp("st") / name, **FOLDERS[name]), None]
        if bundle and folders[name][1] is None:
            recipe = {**QUICK, "quantize": {"scheme": "none"}, "optimize": {"mode": "off"},
                      "export": {"layout": [] if FOLDERS[name].get("dense") else ["sentence-transformers"]}}
            folders[name][1] = edgegolf.compress(str(folders[name][0]), output=tmp_path_factory.mktemp("out") / name,
                                                 recipe=recipe)
        return folders[name]

    return get


@pytest.fixture(params=list(FOLDERS))
def st_folder(request, built):
    return request.param, built(request.param)[0]


@pytest.fixture(params=list(FOLDERS))
def st_bundle(request, built):
    return (request.param, *built(request.param, bundle=True))


def test_the_teacher_row_is_the_sentence_transformers_model(st_folder, tmp_path):
    name, folder = st_folder
    adapter = get_task("feature-extraction")
    adapter.read_source(folder)
    model = adapter.load_model(folder)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), 128)
    tokenizer_json = save_tokenizer(tokenizer, tmp_path / "tok")
    encoder = make_tokenizer(tokenizer_json, spec)
    teacher = np.stack([adapter.teacher_item(model, encoder, text) for text in TEXTS])
    reference = st_encode(folder, TEXTS)
    assert teacher.shape == reference.shape
    np.testing.assert_allclose(teacher, reference, atol=1e-5)
    # what edgegolf did before (mean pooling, normalised, no prompt) is a different model for each of these folders
    plain = get_task("feature-extraction")
    plain_spec = plain.model_spec(model, tokenizer, spec.input_names, 128)
    before = np.stack([plain.teacher_item(model, make_tokenizer(tokenizer_json, plain_spec), text)
                       for text in TEXTS])
    assert before.shape != reference.shape or cosines(before, reference).min() < 0.999


@pytest.mark.support(task="feature-extraction", arch="bert", stage=("load", "export", "runtime"))
def test_the_fp32_bundle_embeds_as_sentence_transformers(st_bundle):
    name, folder, result = st_bundle
    fp32 = next(s for s in result.stages if s.name == "onnx-fp32")
    assert fp32.metrics["fidelity_min_cosine"] >= 0.9999  # the graph against the teacher row
    model = load(result.output)
    reference = st_encode(folder, TEXTS)
    embedded = model.embed(TEXTS)
    assert embedded.shape == reference.shape
    assert cosines(embedded, reference).min() >= 0.9999
    np.testing.assert_allclose(embedded, reference, atol=1e-4)  # norms too: Normalize or not, as the folder says
    spec = json.loads((result.output / "manifest.json").read_text())["model"]
    assert spec["pooling"] == FOLDERS[name]["pooling"]
    assert spec["normalize"] == FOLDERS[name].get("normalize", True)
    if FOLDERS[name].get("dense"):  # Dense layers run in the graph, after a pooling the graph does
        assert spec["output_names"] == ["sentence_embedding"] and embedded.shape[1] == FOLDERS[name]["dense"][-1]
    else:
        assert spec["output_names"] == ["last_hidden_state"]


def test_prompts_are_applied_by_the_runtime(built):
    folder, result = built("mean-prompt", bundle=True)
    model = load(result.output)
    assert model.spec.default_prompt_name == "query"
    # the default prompt is prepended unless another is named; "document" is empty
    np.testing.assert_allclose(model.embed(TEXTS, prompt_name="document"),
                               st_encode(folder, TEXTS, prompt_name="document"), atol=1e-4)
    np.testing.assert_allclose(model.embed(TEXTS), model.embed(["query: " + t for t in TEXTS], prompt_name="document"),
                               atol=1e-6)
    assert cosines(model.embed(TEXTS), model.embed(TEXTS, prompt_name="document")).min() < 0.9999
    with pytest.raises(InputError, match="prompt_name is 'pasage'"):
        model.embed(TEXTS, prompt_name="pasage")


@pytest.mark.parametrize("scheme", ["int8-dynamic", "int4"])
@pytest.mark.support(task="feature-extraction", arch="bert", stage=("quantize:{scheme}", "runtime"))
def test_quantized_sentence_transformers_folders(scheme, tmp_path):
    """CLS pooling with a Dense head quantizes (the Dense layer too) and stays close to sentence-transformers."""
    folder = save_st_folder(tmp_path / "st", pooling="cls", dense=(16,), normalize=False)
    recipe = {**QUICK, "quantize": {"scheme": scheme}}
    result = edgegolf.compress(str(folder), output=tmp_path / "out", recipe=recipe)
    assert result.final.name == "quantized" and result.final.metrics["fidelity_mean_cosine"] > 0.9
    embedded = load(result.output).embed(TEXTS)
    assert embedded.shape == (len(TEXTS), 16)
    assert cosines(embedded, st_encode(folder, TEXTS)).mean() > 0.9


def test_a_module_edgegolf_cannot_reproduce_is_refused_before_any_work(tmp_path):
    folder = save_st_folder_with_lstm(tmp_path / "lstm")
    with pytest.raises(SourceError, match=r"module '1' is a sentence_transformers\..*LSTM, which edgegolf cannot"):
        edgegolf.compress(str(folder), output=tmp_path / "out", recipe=QUICK)
    assert not (tmp_path / "out").exists()


def test_a_plain_hugging_face_folder_keeps_mean_pooling_and_normalize(tiny_bert):
    adapter = get_task("feature-extraction")
    adapter.read_source(tiny_bert)
    assert adapter.spec_fields(None) == {"pooling": "mean", "normalize": True, "prompts": {}, "default_prompt_name": ""}


def test_the_sentence_transformers_layout_keeps_pooling_and_prompts(built):
    from sentence_transformers.sentence_transformer.modules import Pooling

    for name in ("max", "mean-prompt"):
        folder, result = built(name, bundle=True)
        assert Pooling.load(str(result.output / "1_Pooling")).pooling_mode == FOLDERS[name]["pooling"]
        written = json.loads((result.output / "config_sentence_transformers.json").read_text())
        original = json.loads((folder / "config_sentence_transformers.json").read_text())
        assert written["prompts"] == original["prompts"]
        assert written["default_prompt_name"] == original["default_prompt_name"]


def test_the_bundled_minilm_folder_reads_as_before():
    """all-MiniLM-L6-v2 is a sentence-transformers folder (mean pooling, Normalize, no prompts, 256 tokens):
    its spec is the one edgegolf always gave it, so its results do not change."""
    from edgegolf.source import default_model_path

    adapter = get_task("feature-extraction")
    adapter.read_source(default_model_path())
    assert adapter.spec_fields(None) == {"pooling": "mean", "normalize": True, "prompts": {}, "default_prompt_name": ""}
    assert adapter.head.dense == () and adapter.head.max_seq_length == 256
    assert adapter.output_names == ("last_hidden_state",)


def test_prune_and_distill_keep_the_sentence_transformers_head(tmp_path):
    """The student is pooled and projected by the teacher's head: the bundle still gives the Dense width."""
    folder = save_st_folder(tmp_path / "st", pooling="cls", dense=(16,), normalize=False)
    recipe = {**QUICK, "prune": {"layers": 1}, "distill": {"steps": 2, "batch_size": 4}}
    result = edgegolf.compress(str(folder), output=tmp_path / "out", recipe=recipe)
    embedded = load(result.output).embed(TEXTS)
    assert embedded.shape == (len(TEXTS), 16)
    fp32 = next(s for s in result.stages if s.name == "onnx-fp32")
    assert fp32.metrics["fidelity_mean_cosine"] < 0.9999  # a different (pruned) model, compared with the teacher


def test_prune_and_distill_outputs_carry_the_sentence_transformers_head(tmp_path, capsys):
    """`edgegolf prune` and `edgegolf distill` write the head beside the smaller model: sentence-
    transformers reads their folders with the original pooling and Dense, and compress reproduces that."""
    from edgegolf.tasks.st_folder import read_sentence_head
    from tests.builders.cli import run_cli

    folder = save_st_folder(tmp_path / "st", pooling="cls", dense=(16,), normalize=False)
    pruned, distilled = tmp_path / "pruned", tmp_path / "distilled"
    code, _, stderr = run_cli(["prune", folder, "--spec", "layers=1,ffn=0.5", "-o", pruned,
                               "--calibration-size", "8"], capsys)
    assert code == 0, stderr
    code, _, stderr = run_cli(["distill", folder, pruned, "-o", distilled,
                               "--spec", "steps=2,batch_size=4,refit_texts=8"], capsys)
    assert code == 0, stderr
    for student in (pruned, distilled):
        head = read_sentence_head(student)
        assert head is not None and head.describe() == "cls pooling, Dense 32->16 Tanh"
        reference = st_encode(student, TEXTS)  # sentence-transformers itself, on the smaller model
        assert reference.shape == (len(TEXTS), 16)
    assert cosines(st_encode(distilled, TEXTS), st_encode(folder, TEXTS)).min() < 0.9999  # a different model
    recipe = {**QUICK, "quantize": {"scheme": "none"}, "optimize": {"mode": "off"}}
    result = edgegolf.compress(str(distilled), output=tmp_path / "out", recipe=recipe)
    assert cosines(load(result.output).embed(TEXTS), st_encode(distilled, TEXTS)).min() >= 0.9999


def test_do_lower_case_is_refused_only_where_the_tokenizer_keeps_case(tmp_path):
    folder = save_st_folder(tmp_path / "st")
    config = json.loads((folder / "sentence_bert_config.json").read_text())
    (folder / "sentence_bert_config.json").write_text(json.dumps({**config, "do_lower_case": True}))
    get_task("feature-extraction").read_source(folder)  # the tiny BERT's tokenizer lower-cases already
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(SourceError, match="do_lower_case with a tokenizer that keeps case"):
        get_task("feature-extraction").read_source(folder)


def test_the_minilm_teacher_row_is_sentence_transformers_encode(tmp_path):
    """The real all-MiniLM-L6-v2 folder: the teacher row edgegolf measures against is `encode`'s output."""
    from transformers import AutoTokenizer

    from edgegolf.source import default_model_path

    folder = default_model_path()
    adapter = get_task("feature-extraction")
    adapter.read_source(folder)
    model = adapter.load_model(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), 128)
    encoder = make_tokenizer(save_tokenizer(tokenizer, tmp_path / "tok"), spec)
    teacher = np.stack([adapter.teacher_item(model, encoder, text) for text in TEXTS])
    np.testing.assert_allclose(teacher, st_encode(folder, TEXTS), atol=1e-5)
