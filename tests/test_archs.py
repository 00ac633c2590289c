"""Encoders beyond BERT (issue 16): MPNet, XLM-RoBERTa, DeBERTa-v2/v3, ELECTRA and ModernBERT.

Tiny random models of each, built from their config classes (tests/builders/archs.py), go
through structured pruning (cutting a head or a neuron must compute what masking it computes),
the compress pipeline (prune, a few distillation steps, export, graph fusions, and every
quantization scheme: int8 dynamic and static, int4, fp16),
and the torch-free runtime, whose raw outputs must equal PyTorch's.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import BertTokenizer

import edgegolf
from edgegolf.compression.prune import load_pruned, parse_prune_spec, prune_model, supported_types
from edgegolf.errors import PruneError
from edgegolf.pipeline import StageCache
from edgegolf.runtime import load
from tests.builders.archs import ARCHS, save_tiny, tiny_model
from tests.builders.models import bbc_vocabulary
from tests.builders.recipes import QUICK

TEXTS = [
    "the government said the market would rise again next year after the election .",
    "the film won three awards and the music was played on the radio .",
    "shares in the bank fell after the results were published on monday .",
    "the team lost the game at home , and the manager said he would stay .",
    "new phone users can download the game from the company's web site .",
    "the minister said the new tax would be paid by the biggest firms .",
]
WITH_HEADS = [a for a in ARCHS if a != "mpnet"]  # MPNet's shared position bias: heads are refused


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(vocab=bbc_vocabulary(), do_lower_case=True)


def feeds(tokenizer, texts) -> dict[str, torch.Tensor]:
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def hidden(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch)[0]


def masked_copy(model, report, family):
    """The unpruned model with the cut heads' and neurons' contributions zeroed: what the cut must compute."""
    masked = copy.deepcopy(model)
    for layer, block in enumerate(family.layer_list(masked.base_model)):
        shape = family.head_shape(block)
        with torch.no_grad():
            if layer in report.kept_heads:
                dropped = [h for h in range(shape.num_heads) if h not in report.kept_heads[layer]]
                for h in dropped:  # a head writes through its columns of the output projection only
                    family.o_proj(block).module.weight[:, h * shape.head_dim:(h + 1) * shape.head_dim] = 0
            if layer in report.ffn_ranking:
                kept = report.ffn_ranking[layer][: report.shape_after["ffn"]]
                down = family.ffn_down(block).module.weight
                drop = torch.ones(down.shape[1], dtype=torch.bool)
                drop[kept] = False
                down[:, drop] = 0
    return masked


@pytest.mark.support(task="feature-extraction", arch="{arch}", stage="prune")
@pytest.mark.parametrize("arch", list(ARCHS))
def test_cutting_heads_and_neurons_computes_what_masking_them_computes(arch, tokenizer, tmp_path):
    model = tiny_model(arch, len(tokenizer))
    family = supported_types()[arch]
    spec = parse_prune_spec("ffn=0.5" if arch == "mpnet" else "heads=0.5,ffn=0.5")
    pruned, _, report = prune_model(model, tokenizer, spec, calibration_texts=TEXTS)
    after = report.shape_after
    assert after["ffn"] == 32 and after["heads"] == (4 if arch == "mpnet" else 2) and after["head_dim"] == 8
    assert report.params_after < report.params_before
    batch = feeds(tokenizer, TEXTS[:3])
    mask = batch["attention_mask"].bool()
    expected = hidden(masked_copy(model, report, family), batch)
    assert not torch.allclose(expected, hidden(model, batch), atol=1e-3)  # the cut changes the outputs...
    torch.testing.assert_close(hidden(pruned, batch)[mask], expected[mask], rtol=1e-4, atol=1e-5)  # ...as masking does
    pruned.save_pretrained(tmp_path)
    reloaded = load_pruned(tmp_path, attn_implementation="eager")
    shapes = {k: v.shape for k, v in pruned.state_dict().items()}
    assert {k: v.shape for k, v in reloaded.state_dict().items()} == shapes
    torch.testing.assert_close(hidden(reloaded, batch)[mask], hidden(pruned, batch)[mask], rtol=1e-5, atol=1e-6)


def test_deberta_v2_heads_keep_their_own_position_projections(tokenizer):
    """DeBERTa-v2 (share_att_key off): positions go through pos_key_proj / pos_query_proj, cut with the heads."""
    model = tiny_model("deberta-v2", len(tokenizer), share_att_key=False)
    family = supported_types()["deberta-v2"]
    pruned, _, report = prune_model(model, tokenizer, parse_prune_spec("heads=0.5"), calibration_texts=TEXTS)
    for layer, block in enumerate(family.layer_list(pruned.base_model)):
        source = family.layer_list(model.base_model)[layer].attention.self
        columns = torch.cat([torch.arange(h * 8, (h + 1) * 8) for h in report.kept_heads[layer]])
        for name in ("query_proj", "key_proj", "value_proj", "pos_key_proj", "pos_query_proj"):
            kept = getattr(block.attention.self, name).weight
            torch.testing.assert_close(kept, getattr(source, name).weight[columns])
    batch = feeds(tokenizer, TEXTS[:3])
    mask = batch["attention_mask"].bool()
    expected = hidden(masked_copy(model, report, family), batch)
    torch.testing.assert_close(hidden(pruned, batch)[mask], expected[mask], rtol=1e-4, atol=1e-5)


def test_mpnet_refuses_head_cuts_in_one_line(tokenizer, tmp_path):
    model = tiny_model("mpnet", len(tokenizer))
    with pytest.raises(PruneError, match="MPNet .*drop 'heads'") as caught:
        prune_model(model, tokenizer, parse_prune_spec("layers=2,heads=0.5"), calibration_texts=TEXTS)
    assert "\n" not in str(caught.value)
    source = save_tiny("mpnet", tmp_path / "mpnet")
    with pytest.raises(PruneError, match="MPNet"):  # the pipeline refuses before loading anything
        edgegolf.compress(str(source), output=tmp_path / "out", recipe={**QUICK, "prune": {"heads": 0.5}})
    assert not (tmp_path / "out").exists()


def test_modernbert_layer_drop_keeps_each_layers_attention_kind(tokenizer, tmp_path):
    """Global attention every 3rd layer (0, 3 of 6): layers 0, 2, 3, 5 kept keep their own kinds,
    and the saved config's layer_types rebuilds that pattern."""
    model = tiny_model("modernbert", len(tokenizer), layers=6)
    kinds = list(model.config.layer_types)
    assert kinds == ["full_attention", "sliding_attention", "sliding_attention"] * 2
    pruned, _, report = prune_model(model, tokenizer, parse_prune_spec("layers=4"))
    assert report.kept_layers == [0, 2, 3, 5]
    assert pruned.config.layer_types == [kinds[i] for i in report.kept_layers]
    assert [block.attention_type for block in pruned.layers] == pruned.config.layer_types
    batch = feeds(tokenizer, TEXTS[:3])  # longer than the local window of 8 tokens: the kinds differ
    pruned.save_pretrained(tmp_path)
    reloaded = load_pruned(tmp_path, attn_implementation="eager")
    assert [block.attention_type for block in reloaded.layers] == pruned.config.layer_types
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(hidden(reloaded, batch)[mask], hidden(pruned, batch)[mask], rtol=1e-5, atol=1e-6)
    family = supported_types()["modernbert"]
    with pytest.raises(PruneError, match="first layer"):
        family.set_layers(copy.deepcopy(model).base_model, [1, 2, 3])


def test_modernbert_exports_with_sdpa_attention_too(tokenizer, tmp_path):
    """The loader builds eager attention; a ModernBERT built with sdpa (the library's default) exports as well."""
    import onnxruntime as ort

    from edgegolf.export.onnx import export_onnx
    from edgegolf.tasks.base import OutputOf

    model = tiny_model("modernbert", len(tokenizer), attn_implementation="sdpa")
    batch = {k: v.numpy() for k, v in feeds(tokenizer, TEXTS[:2]).items()}
    other = {k: v.numpy() for k, v in feeds(tokenizer, TEXTS[2:5]).items()}
    report = export_onnx(OutputOf(model, "last_hidden_state"), tmp_path / "model.onnx",
                         input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                         sample_feeds=batch, verify_feeds=[other], atol=1e-4)
    assert report.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    got = session.run(None, other)[0]
    mask = other["attention_mask"].astype(bool)
    expected = hidden(model, {k: torch.from_numpy(v) for k, v in other.items()}).numpy()
    np.testing.assert_allclose(got[mask], expected[mask], rtol=1e-4, atol=1e-4)


# --- the compress pipeline, each architecture, each task -------------------------------------
SCHEMES = ("int8-dynamic", "int8-static", "int4", "fp16")  # every registered scheme but "none" (the runtime check's)
CASES = [pytest.param(task, arch, marks=pytest.mark.slow, id=f"{task}-{arch}")
         for task in ("feature-extraction", "text-classification") for arch in ARCHS]


def torch_outputs(folder, task: str, batch: dict[str, np.ndarray]) -> np.ndarray:
    import transformers

    from edgegolf.tasks.base import INPUT_ORDER

    auto = transformers.AutoModelForSequenceClassification if task == "text-classification" else transformers.AutoModel
    model = auto.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(batch[k]) for k in INPUT_ORDER if k in batch})[0].numpy()


# the support matrix reads these cells from the source: literal stages, "{task}" / "{arch}" filled per case
@pytest.mark.support(task="{task}", arch="{arch}", stage=("load", "prune", "distill", "export", "optimize",
                                                          "quantize:int8-dynamic", "quantize:int8-static",
                                                          "quantize:int4", "quantize:fp16", "runtime"))
@pytest.mark.parametrize(("task", "arch"), CASES)
def test_compress_prunes_distills_exports_quantizes_and_runs(task, arch, tmp_path):
    classifier = task == "text-classification"
    source = save_tiny(arch, tmp_path / "source", classifier=classifier)
    cache = StageCache(tmp_path / "cache")
    prune = {"layers": 2, "ffn": 0.5} if arch == "mpnet" else {"layers": 2, "heads": 0.5, "ffn": 0.5}
    base = {**QUICK, "evaluate": {**QUICK["evaluate"], "limit": 20}}
    student = {**base, "prune": prune, "distill": {"steps": 3, "batch_size": 4, "eval_every": 3,
                                                      # the default lr 1e-3 (measured best on MiniLM embeddings) turns
                                                      # these tiny random classifiers' argmax in 3 steps: agreement 0
                                                      "lr": 1e-4},
               "optimize": {"mode": "on"}}
    results = {scheme: edgegolf.compress(str(source), output=tmp_path / scheme, cache=cache,
                                         recipe={**student, "quantize": {"scheme": scheme}})
               for scheme in SCHEMES}
    for scheme, result in results.items():
        assert result.task == task
        assert [s.name for s in result.stages] == ["teacher", "onnx-fp32", "onnx-optimized", "quantized"], scheme
        records = {r["stage"]: r for r in result.manifest["provenance"]}
        assert records["prune"]["measured"]["params_after"] < records["prune"]["measured"]["params_before"]
        assert records["prune"]["measured"]["architecture"] == arch
        assert records["distill"]["measured"]["steps_run"] == 3 and records["distill"]["settings"]["steps"] == 3
        assert records["export"]["measured"]["max_abs_diff"] < 1e-3  # the student's export computes what it does
        assert records["optimize"]["measured"]["fused_ops"] and records["optimize"]["measured"]["max_abs_diff"] < 1e-3
        assert records["quantize"]["settings"]["scheme"] == scheme
        assert records["quantize"]["measured"]["quantized_ops"], scheme
        _, fp32, _, quantized = result.stages
        assert quantized.size.raw_bytes < fp32.size.raw_bytes
        bundle = load(result.output)
        if classifier:
            assert quantized.metrics["agreement"] >= 50
            assert {p.label for p in bundle.classify(TEXTS[:2])} <= {"business", "entertainment", "politics", "sports",
                                                                    "tech"}
        else:
            assert quantized.metrics["fidelity_mean_cosine"] > 0.8
            assert bundle.embed(TEXTS[:2]).shape == (2, 32)
    # every scheme after the first reused the first run's student
    assert cache.stage_hits["prune"] >= len(SCHEMES) - 1 and cache.stage_hits["distill"] >= len(SCHEMES) - 1

    # the runtime computes what PyTorch computes: the unpruned fp32 export, raw outputs, several lengths
    plain = edgegolf.compress(str(source), output=tmp_path / "fp32", cache=cache,
                              recipe={**base, "quantize": {"scheme": "none"}, "optimize": {"mode": "off"}})
    bundle = load(plain.output)
    batch = bundle.encode(TEXTS[:4])
    got = bundle.run(batch)[0]
    expected = torch_outputs(source, task, batch)
    if classifier:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    else:
        mask = batch["attention_mask"].astype(bool)
        np.testing.assert_allclose(got[mask], expected[mask], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_distillations_refit_repairs_post_layernorm_encoders_and_skips_modernbert(arch, tokenizer):
    from edgegolf.compression.distill.refit import refit_pruned_layers

    teacher = tiny_model(arch, len(tokenizer))
    spec = parse_prune_spec("layers=2,ffn=0.5" if arch == "mpnet" else "layers=2,heads=0.5,ffn=0.5")
    student, _, report = prune_model(teacher, tokenizer, spec, calibration_texts=TEXTS)
    result = refit_pruned_layers(teacher, student, feeds(tokenizer, TEXTS), report.kept_layers)
    if arch == "modernbert":  # pre-LayerNorm blocks: no sum entering a LayerNorm to fit
        assert result["refitted"] is False and "ModernBert" in result["reason"]
        return
    assert result["refitted"] is True
    fitted = [(name, value) for layer in result["layers"] for name, value in layer.items() if isinstance(value, list)]
    expected_points = {"ffn"} if arch == "mpnet" else {"attention", "ffn"}  # MPNet's o runs inside its attention
    assert {name for name, _ in fitted} == expected_points
    assert all(after <= before + 1e-6 for _, (before, after) in fitted), fitted
