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
    assert all(u["kl_bits_per_token"] >= 0 for u in plan["units"])
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
