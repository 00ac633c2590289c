"""The causal-lm graph written with onnxruntime's fused ops (SimplifiedLayerNormalization,
SkipSimplifiedLayerNormalization, GroupQueryAttention with the rotary embedding inside) on tiny
LLaMA and Qwen2 models: it matches PyTorch on padded batches (right: a prompt, as scoring runs;
left: a prompt and a cached step, as generation runs), the runtime generates with it as PyTorch
does; GPT-2 (LayerNorm, learned positions, no grouped heads), which the writer refuses by name,
gets onnxruntime's own fusions of its traced graph under the same checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgegolf.errors import ExportError
from edgegolf.export.llm_fusions import (
    fusable,
    fuse_traced_causal_lm,
    left_padded,
    verify_fused,
    write_fused_causal_lm,
)
from edgegolf.export.llm_graph import build_fused_decoder, fused_op_counts
from edgegolf.runtime import open_model
from tests.builders.causal_lm import bbc_texts, export_tiny_lm, load_tiny_lm, save_tiny_lm, save_tiny_tied_lm

# arch-heads: 8-dim heads (tiny_config) get separate RotaryEmbedding ops, 16-dim ones (tied_config)
# the rotary embedding inside GroupQueryAttention (its CPU kernel rotates multiples of 16 only)
FUSED = ("llama-8", "qwen2-8", "llama-16", "qwen2-16")
BY_ARCH = [(kind.split("-")[0], kind) for kind in FUSED]  # (model_type, case): the support matrix's cells
PROMPTS = ["The government said on Tuesday that", "Shares in the", "Oil"]


def encoder(tokenizer):
    def encode(texts: list[str], side: str = "right") -> dict[str, np.ndarray]:
        tokenizer.padding_side = side
        batch = tokenizer(texts, padding=True, return_tensors="np")
        return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    return encode


@pytest.fixture(scope="module")
def fused(tmp_path_factory) -> dict[str, tuple]:
    """arch-heads -> (torch model, tokenizer, FusedGraph, folder) for tiny LLaMAs and Qwen2s."""
    found = {}
    for kind in FUSED:
        arch, heads = kind.split("-")
        save = save_tiny_lm if heads == "8" else save_tiny_tied_lm
        folder = save(tmp_path_factory.mktemp(f"tiny-{kind}"), arch)
        _, model, tokenizer = load_tiny_lm(folder)
        encode = encoder(tokenizer)
        texts = list(bbc_texts()[:3])
        graph = write_fused_causal_lm(model, folder / "fused.onnx", atol=1e-4,
                                      verify_feeds=[encode([texts[0][:100]]), encode([texts[1][:150], texts[2][:30]])])
        found[kind] = (model, tokenizer, graph, folder)
    return found


@pytest.mark.support(task="causal-lm", arch="{arch}", stage="optimize")
@pytest.mark.parametrize(("arch", "kind"), BY_ARCH)
def test_every_norm_rotary_and_attention_is_one_fused_op(fused, arch, kind):
    model, _, graph, _ = fused[kind]
    layers = model.config.num_hidden_layers
    # one plain RMSNorm (the first layer's, no residual yet); every other norm adds the residual
    inside = model.config.hidden_size // model.config.num_attention_heads % 16 == 0
    assert inside == kind.endswith("-16")
    want = {"SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 2 * layers,
            "GroupQueryAttention": layers} | ({} if inside else {"RotaryEmbedding": 2 * layers})
    assert graph.fused_ops == want
    written = onnx.load(str(graph.path))
    assert fused_op_counts(written) == want
    assert written.ir_version == 8  # opset 17's IR: onnxruntime 1.30 refused onnx 1.23's default (IR 14)
    assert graph.max_abs_diff < 1e-4
    attention = [n for n in written.graph.node if n.op_type == "GroupQueryAttention"]
    rotary = [onnx.helper.get_attribute_value(a) for n in attention for a in n.attribute if a.name == "do_rotary"]
    if inside:  # the rotary embedding is inside every attention, fed the packed q/k/v of one MatMul
        assert rotary == [1] * layers
        assert all(list(n.input[1:3]) == ["", ""] and list(n.input[7:9]) == ["rotary.cos", "rotary.sin"]
                   for n in attention)
    else:
        assert rotary == []
    # nothing of the unfused spelling is left: no Pow/ReduceMean (RMSNorm), no Softmax (attention), no Cos/Sin
    ops = {node.op_type for node in written.graph.node}
    assert not ops & {"Pow", "ReduceMean", "Softmax", "Sqrt", "Cos", "Sin"}


@pytest.mark.support(task="causal-lm", arch="{arch}", stage="optimize")
@pytest.mark.parametrize(("arch", "kind"), BY_ARCH)
@pytest.mark.parametrize("side", ["left", "right"])
def test_fused_graph_matches_pytorch_on_a_padded_batch_and_a_cached_step(fused, arch, kind, side):
    """verify_fused runs the prompt with an empty cache, then (left padding) one token on the graph's cache."""
    model, tokenizer, graph, _ = fused[kind]
    feeds = encoder(tokenizer)([bbc_texts()[5][:120], bbc_texts()[6][:20]], side)
    assert (feeds["attention_mask"] == 0).any()  # really padded
    assert verify_fused(graph.path, model, [feeds], atol=1e-4) < 1e-4


def test_left_padding_moves_every_rows_padding_to_the_front():
    feeds = {"input_ids": np.array([[5, 6, 7], [8, 9, 0]]), "attention_mask": np.array([[1, 1, 1], [1, 1, 0]])}
    moved = left_padded(feeds)
    assert moved["input_ids"].tolist() == [[5, 6, 7], [0, 8, 9]]
    assert moved["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]


def test_a_graph_of_other_weights_fails_the_check(fused, tmp_path):
    """The check can fail: the tiny LLaMA's graph checked against a LLaMA of other random weights."""
    model, tokenizer, graph, folder = fused["llama-16"]
    other_folder = save_tiny_tied_lm(tmp_path / "other", "llama", seed=1)
    _, other, _ = load_tiny_lm(other_folder)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        verify_fused(graph.path, other, [encoder(tokenizer)(["Oil prices"])], atol=1e-4)


@pytest.mark.support(task="causal-lm", arch="{arch}", stage=("optimize", "runtime", "generate"))
@pytest.mark.parametrize(("arch", "kind"), BY_ARCH)
def test_runtime_generates_with_the_fused_graph_as_pytorch_greedy(fused, arch, kind):
    model, tokenizer, graph, folder = fused[kind]
    assert_generates_as_pytorch_greedy(model, tokenizer, graph.path, folder)


def assert_generates_as_pytorch_greedy(model, tokenizer, graph: Path, folder: Path) -> None:
    """The runtime's contract holds: a left-padded batch, then one cached token per step."""
    from edgegolf.tasks import get_task

    adapter = get_task("causal-lm")
    spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), 64)
    tokenizer.save_pretrained(str(folder / "tok"))
    lm = open_model(graph, folder / "tok" / "tokenizer.json", spec, threads=1)
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**batch, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=2)[:, batch["input_ids"].shape[1]:].tolist()
    want = [row[:row.index(2) + 1] if 2 in row else row for row in out]  # up to the first end-of-text id
    got = lm.generate(PROMPTS, max_new_tokens=8)
    assert [g.token_ids for g in got] == want
    assert all(g.token_ids for g in got)


def test_a_tied_head_in_the_fused_graph_still_shares_the_quantized_table(tmp_path):
    """The LM head keeps the traced graph's form (MatMul by the table transposed), so the
    quantize stage's block tables still store the table once."""
    from edgegolf.compression.block_tables import quantize_gather_blocks

    _, model, _ = load_tiny_lm(save_tiny_tied_lm(tmp_path / "tied", "llama"))
    graph = build_fused_decoder(model)
    rewritten = quantize_gather_blocks(graph, bits=4, block_size=32)
    assert "lm_head/MatMul" in rewritten and "embed/Gather" in rewritten


@pytest.mark.support(task="causal-lm", arch="gpt2", stage=("optimize", "runtime", "generate"))
def test_gpt2_traced_graph_gets_onnxruntimes_fusions_checked_against_pytorch(tmp_path):
    """GPT-2 has LayerNorm (not RMSNorm), learned positions (no rotary) and a fused c_attn, so
    the graph writer refuses it; its traced graph goes through onnxruntime's optimizer instead,
    checked like the written graph (padded batches, a cached step) and generating as PyTorch does."""
    folder = save_tiny_lm(tmp_path / "gpt2", "gpt2")
    model, _ = export_tiny_lm(folder, tmp_path)
    _, _, tokenizer = load_tiny_lm(folder)
    assert "gpt2" in fusable(model.config)
    with pytest.raises(ExportError, match="gpt2 decoders"):
        build_fused_decoder(model)
    texts = list(bbc_texts()[:3])
    feeds = [encoder(tokenizer)([texts[0][:100]]), encoder(tokenizer)([texts[1][:150], texts[2][:30]])]
    graph = fuse_traced_causal_lm(tmp_path / "lm.onnx", model, tmp_path / "fused.onnx", model_type="gpt2",
                                  verify_feeds=feeds, atol=1e-4)
    layers = model.config.n_layer
    assert graph.fused_ops == {"FastGelu": layers, "SkipLayerNormalization": 2 * layers}
    assert graph.max_abs_diff < 1e-4
    assert_generates_as_pytorch_greedy(model, tokenizer, graph.path, folder)
    # another model's weights fail the check, and nothing is left behind
    _, other, _ = load_tiny_lm(save_tiny_lm(tmp_path / "other", "gpt2", seed=1))
    with pytest.raises(ExportError, match="differs from PyTorch"):
        fuse_traced_causal_lm(tmp_path / "lm.onnx", other, tmp_path / "wrong.onnx", model_type="gpt2",
                              verify_feeds=feeds, atol=1e-4)
    assert not (tmp_path / "wrong.onnx").exists()


def test_unsupported_paths_are_named(tmp_path: Path):
    from tests.builders.causal_lm import tiny_config

    assert "sliding-window" in fusable(tiny_config("qwen2", 64, use_sliding_window=True, sliding_window=16))
    assert fusable(tiny_config("llama", 64)) is None
