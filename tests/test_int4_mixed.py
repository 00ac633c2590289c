"""Mixed 4/8-bit weights from measured sensitivity (Int4WeightOnly.mixed_size_mb) on a tiny tied
LLaMA export fed real BBC text: the plan keeps the size limit, is recorded, gives 8-bit
MatMulNBits, and brings the logits closer to the float graph's than all-4-bit does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgegolf.compression.quantize import Int4WeightOnly, config_from_dict, quantize
from edgegolf.compression.quantize.mixed import unit_key
from edgegolf.errors import DataError, RecipeError
from edgegolf.export.causal import export_causal_lm, with_cache_feeds
from tests.builders.causal_lm import bbc_texts, save_tiny_tied_lm


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> tuple[Path, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """(fp32 export of a tiny tied LLaMA, calibration feeds from train-like text, held-out feeds)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = save_tiny_tied_lm(tmp_path_factory.mktemp("mixed-llama"), "llama")
    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def encode(text: str) -> dict[str, np.ndarray]:
        batch = tokenizer([text], return_tensors="np")
        return with_cache_feeds(model.config, {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")})

    texts = list(bbc_texts()[:10])
    path = folder / "lm.onnx"
    plain = {k: v for k, v in encode(texts[0][:80]).items() if k in ("input_ids", "attention_mask")}
    export_causal_lm(model, path, sample_feeds=plain, verify_feeds=[plain])
    return path, [encode(t[:400]) for t in texts[:4]], [encode(t[:400]) for t in texts[6:10]]


def log_probs(path: Path, feeds) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = np.concatenate([session.run(["logits"], {k: v for k, v in f.items() if k in names})[0][0] for f in feeds])
    out = out - out.max(axis=-1, keepdims=True)
    return out - np.log(np.exp(out).sum(axis=-1, keepdims=True))


def kl(reference: np.ndarray, other: np.ndarray) -> float:
    return float((np.exp(reference) * (reference - other)).sum(axis=-1).mean())


@pytest.mark.parametrize("unit", ["matmul", "block"])
def test_mixed_plan_keeps_the_limit_is_recorded_and_beats_all_4_bit(llama, tmp_path, unit):
    path, calibration, held_out = llama
    base = Int4WeightOnly(embeddings="int4-block", symmetric=False, block_size=32)
    four = quantize(path, tmp_path / "int4.onnx", base, calibration_feeds=calibration)
    four_mb = four.path.stat().st_size / 1e6
    limit = round(four_mb * 1.25, 3)  # room for some units at 8 bits, not all
    config = Int4WeightOnly(embeddings="int4-block", symmetric=False, block_size=32, mixed_size_mb=limit,
                            mixed_unit=unit)
    report = quantize(path, tmp_path / "mixed.onnx", config, calibration_feeds=calibration)

    size_mb = report.path.stat().st_size / 1e6
    assert four_mb < size_mb <= limit
    plan = report.details["mixed_precision"]
    assert plan["size_limit_mb"] == limit and plan["unit"] == unit
    assert abs(plan["written_mb"] - size_mb) < 0.01
    bits = {u["name"]: u["bits"] for u in plan["units"]}
    assert set(bits.values()) == {4, 8}, bits  # the limit allows some 8-bit units and not all
    assert all(u["cost"] >= 0 for u in plan["units"]) and plan["sensitivity"].startswith("KL bits/token")
    chosen = [u for u in plan["units"] if u["bits"] == 8]
    assert sum(u["extra_mb_at_8_bits"] for u in chosen) <= limit - four_mb + 1e-3
    if unit == "block":
        blocks = sorted(set(bits) - {"embedding table"})
        assert "embedding table" in bits and [b.rsplit("/", 1)[1] for b in blocks] == ["layers.0", "layers.1"]

    graph = onnx.load(str(report.path)).graph
    nbits = {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in graph.node
             if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}
    assert 8 in nbits.values() and 4 in nbits.values()
    for name, b in nbits.items():  # what the graph holds is what the plan says
        owner = "embedding table" if "embed" in name or "lm_head" in name else unit_key(name.removesuffix("_Q4"), unit)
        assert bits[owner] == b, (name, owner)

    reference = log_probs(path, held_out)
    assert kl(reference, log_probs(report.path, held_out)) < kl(reference, log_probs(four.path, held_out))


def test_a_limit_below_the_all_4_bit_graph_is_one_clear_error(llama, tmp_path):
    path, calibration, _ = llama
    config = Int4WeightOnly(embeddings="int4-block", symmetric=False, mixed_size_mb=0.01)
    with pytest.raises(DataError, match=r"mixed_size_mb = 0.01 is below the all-4-bit graph's .* give a limit of at "
                                        r"least"):
        quantize(path, tmp_path / "small.onnx", config, calibration_feeds=calibration)
    assert not (tmp_path / "small.onnx").exists()
    with pytest.raises(DataError, match="needs calibration feeds"):
        quantize(path, tmp_path / "none.onnx", config, calibration_feeds=None)


def test_mixed_settings_are_checked():
    config = config_from_dict({"scheme": "int4", "mixed_size_mb": 90, "mixed_unit": "matmul"})
    assert (config.mixed_size_mb, config.mixed_unit) == (90, "matmul")
    with pytest.raises(RecipeError, match="mixed_size_mb"):
        config_from_dict({"scheme": "int4", "mixed_size_mb": -1})
    with pytest.raises(RecipeError, match="mixed_unit"):
        config_from_dict({"scheme": "int4", "mixed_unit": "layerwise"})


@pytest.mark.parametrize("node, block", [
    ("/model/layers.3/self_attn/q_proj/MatMul", "/model/layers.3"),  # the traced export
    ("/transformer/h.11/mlp/c_fc/MatMul", "/transformer/h.11"),
    ("model.layers.3.self_attn.qkv_proj/MatMul", "model.layers.3"),  # the fused graph (export/llm_graph.py)
    ("model.layers.12.mlp.gate_up_proj/MatMul", "model.layers.12"),
])
def test_a_block_unit_groups_the_matmuls_of_one_block_in_both_graph_namings(node, block):
    assert unit_key(node, "block") == block
    assert unit_key(node, "matmul") == node


def test_an_encoders_plan_measures_cosine_distance_and_brings_its_hidden_states_closer(tmp_path):
    """An encoder's output is hidden states, not a distribution: its units are ranked by the
    cosine distance they cause, and the plan beats all-4-bit on held-out text."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from edgegolf.export.onnx import export_onnx
    from edgegolf.tasks.base import OutputOf
    from tests.builders.models import bbc_vocabulary

    tokenizer = BertTokenizer(vocab=bbc_vocabulary(), do_lower_case=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                 intermediate_size=64, attn_implementation="eager")).eval()
    texts = bbc_texts()

    def encode(text: str) -> dict[str, np.ndarray]:
        batch = tokenizer([text], truncation=True, max_length=64, return_tensors="np")
        return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    calibration, held_out = [encode(t) for t in texts[:8]], [encode(t) for t in texts[20:26]]
    path = export_onnx(OutputOf(model, "last_hidden_state"), tmp_path / "encoder.onnx",
                       input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                       sample_feeds=calibration[0], verify_feeds=[calibration[1]], atol=1e-4).path
    base = dict(embeddings="per-row", symmetric=False, block_size=32)
    four = quantize(path, tmp_path / "int4.onnx", Int4WeightOnly(**base), calibration_feeds=calibration)
    limit = round(four.path.stat().st_size / 1e6 + 0.009, 4)  # a block at 8 bits adds ~4.1 kB: room for 2 of 4
    report = quantize(path, tmp_path / "mixed.onnx", Int4WeightOnly(**base, mixed_size_mb=limit),
                      calibration_feeds=calibration)
    assert report.path.stat().st_size / 1e6 <= limit
    plan = report.details["mixed_precision"]
    assert plan["sensitivity"].startswith("cosine distance (1 - cos) per token from the float graph's "
                                          "last_hidden_state")
    assert {u["bits"] for u in plan["units"]} == {4, 8} and all(u["cost"] > 0 for u in plan["units"])
    assert [u["name"].rsplit("/", 1)[1] for u in plan["units"]] == [f"layer.{i}" for i in range(4)]

    def distance(candidate: Path) -> float:
        float_session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
        gaps = []
        for feed in held_out:
            a, b = float_session.run(None, feed)[0][0], session.run(None, feed)[0][0]
            gaps.append(1 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)))
        return float(np.concatenate(gaps).mean())

    assert distance(report.path) < distance(four.path)
