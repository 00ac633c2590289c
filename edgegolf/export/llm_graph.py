"""The cached graph of a LLaMA- or Qwen2-family decoder, written op by op with onnxruntime's fused ops.

The traced export (edgegolf/export/causal.py) spells every RMSNorm, rotary embedding and
attention as dozens of small ops. This module writes the same function directly from the
model's config and weights, with onnxruntime's contrib ops (com.microsoft, reference:
https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md):

- SimplifiedLayerNormalization (RMSNorm) before the first layer, and
  SkipSimplifiedLayerNormalization (residual add + RMSNorm) everywhere after;
- GroupQueryAttention over the BNSH cache, fed one packed q/k/v MatMul, with the rotary
  embedding inside it (do_rotary) and an additive bias that masks padding keys (heads whose
  size is not a multiple of 16, which its CPU kernel cannot rotate: a Split and two
  RotaryEmbedding ops at PyTorch's positions before it);
- one MatMul for gate/up (then a Split): fewer, larger products.

Rotary positions. GroupQueryAttention rotates each token at its index in the cache (every row
grows by plain concatenation: seqlens_k = total length - 1 for all rows), while PyTorch counts
only real tokens (cumsum of the mask - 1). Under rotary embedding an attention score depends
only on the difference of two positions, so a row whose positions are all shifted by the same
amount gives the same logits: that holds for unpadded rows, right-padded prompts (scoring:
tokens sit at their true positions) and left-padded prompts with their cached steps
(generation: every position shifted by the row's padding). The cache of a left-padded row then
holds keys rotated by shifted positions: equal to PyTorch's up to that shift, and read only by
this graph. Not supported: a cached step after a right-padded prompt (a gap of padding in the
middle of a row), which the runtime never feeds (its generation batches are left-padded).
Measured on SmolLM2-135M int4 (benchmarks/smollm2_fusions.py), packing q/k/v with rotary
inside took 10% off a decode step against separate RotaryEmbedding ops.

The contract is the traced graph's, so the runtime (edgegolf/runtime/causal_lm.py) and the
quantize stage take either graph: inputs input_ids [batch, seq], attention_mask [batch, past +
seq], past.{i}.key/value [batch, kv_heads, past, head_dim]; outputs logits and
present.{i}.key/value [batch, kv_heads, past + seq, head_dim]. The cache grows by plain
concatenation for every row (seqlens_k = total length - 1 for all rows), and padding is masked
by the bias, as the traced graph's mask does. A tied LM head gets its own
transposed copy, as in the traced graph: the quantize stage's block tables find and share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edgegolf.errors import ExportError
from edgegolf.export.causal import cache_names

MS = "com.microsoft"
FAMILIES = ("llama", "qwen2")  # model_type values whose decoder layer this module writes
# the most negative float32: a padded key's score + this is still finite (no NaN on fully masked rows)
MASKED = float(np.finfo(np.float32).min)
# GroupQueryAttention's CPU kernel rotates inside only heads of a multiple of 16 dims ("head_size
# shall be a multiple of 16", onnxruntime 1.32); smaller heads get separate RotaryEmbedding ops
ROTARY_INSIDE_MULTIPLE = 16


def unsupported_reason(config) -> str | None:
    """Why this module cannot write `config`'s decoder, or None when it can."""
    model_type = getattr(config, "model_type", "?")
    if model_type not in FAMILIES:
        return f"{model_type} decoders are not written with fused ops (only {', '.join(FAMILIES)})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} (only silu)"
    if getattr(config, "use_sliding_window", False) or any(
            t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        return "sliding-window attention layers"
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None) or {}
    if str(rope.get("rope_type", rope.get("type", "default"))) in ("dynamic", "longrope"):
        return f"rotary scaling {rope.get('rope_type')!r} changes with the sequence length"
    return None


@dataclass
class _Graph:
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | str, name: str, domain: str = "",
             **attrs) -> list[str]:
        outputs = [outputs] if isinstance(outputs, str) else outputs
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs


def _weight(linear: torch.nn.Linear) -> np.ndarray:
    return linear.weight.detach().float().numpy()


def _bias(linear: torch.nn.Linear) -> np.ndarray | None:
    return None if linear.bias is None else linear.bias.detach().float().numpy()


def _linear(g: _Graph, x: str, linears: list[torch.nn.Linear], name: str) -> str:
    """x @ [W_1; W_2; ...]^T (+ biases): the given Linear layers as one MatMul."""
    weight = np.concatenate([_weight(lin) for lin in linears], axis=0).T
    out = g.node("MatMul", [x, g.constant(f"{name}.weight", weight)], f"{name}/out", f"{name}/MatMul")[0]
    biases = [_bias(lin) for lin in linears]
    if all(b is None for b in biases):
        return out
    bias = np.concatenate([b if b is not None else np.zeros(lin.out_features, np.float32)
                           for b, lin in zip(biases, linears, strict=True)])
    return g.node("Add", [out, g.constant(f"{name}.bias", bias)], f"{name}/biased", f"{name}/Add")[0]


def _rotary_tables(model, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [positions, rotary_dim / 2] as the model's own rotary module computes them
    (its scaling included): the halves RotaryEmbedding (non-interleaved) reads."""
    rotary = model.model.rotary_emb
    ids = torch.arange(positions).unsqueeze(0)
    probe = torch.zeros(1, dtype=torch.float32)
    with torch.no_grad():
        cos, sin = rotary(probe, ids)
    half = cos.shape[-1] // 2
    return cos[0, :, :half].float().numpy(), sin[0, :, :half].float().numpy()


def build_fused_decoder(model) -> onnx.ModelProto:
    """The cached graph of `model` (a LlamaForCausalLM or Qwen2ForCausalLM) with fused ops."""
    config = model.config
    reason = unsupported_reason(config)
    if reason:
        raise ExportError(f"no fused graph for this model: {reason}")
    layers = model.model.layers
    attn0 = layers[0].self_attn
    # heads from the projections' widths: a head-pruned model's are the truth
    head_dim = int(attn0.head_dim)
    num_heads, kv_heads = attn0.q_proj.out_features // head_dim, attn0.k_proj.out_features // head_dim
    positions = int(getattr(config, "max_position_embeddings", 0) or 4096)
    g = _Graph()

    # --- positions, lengths and the padding bias, shared by every layer
    cos, sin = _rotary_tables(model, positions)
    if 2 * cos.shape[1] != head_dim:
        raise ExportError(f"no fused graph for this model: rotary on {2 * cos.shape[1]} of {head_dim} head dims")
    g.constant("rotary.cos", cos)
    g.constant("rotary.sin", sin)
    g.constant("one_i64", np.array([1], np.int64))
    g.node("Shape", ["input_ids"], "ids_shape", "lengths/ShapeIds")
    g.node("Shape", ["attention_mask"], "mask_shape", "lengths/ShapeMask")
    g.node("Slice", ["ids_shape", "one_i64", g.constant("two_i64", np.array([2], np.int64))], "seq_len", "lengths/Seq")
    g.node("Slice", ["ids_shape", g.constant("zero_1d", np.array([0], np.int64)), "one_i64"], "batch", "lengths/Batch")
    inner_rotary = head_dim % ROTARY_INSIDE_MULTIPLE == 0
    if not inner_rotary:  # separate RotaryEmbedding ops at PyTorch's positions: cumsum of the mask - 1
        g.node("CumSum", ["attention_mask", g.constant("axis1", np.array(1, np.int64))], "mask_cumsum",
               "positions/CumSum")
        g.node("Sub", ["mask_cumsum", "one_i64"], "positions_all", "positions/Sub")
        g.node("Max", ["positions_all", g.constant("zero_i64", np.array(0, np.int64))], "positions_clamped",
               "positions/Max")  # padding before the text: 0
        g.node("Neg", ["seq_len"], "minus_seq_len", "positions/Neg")
        g.node("Slice", ["positions_clamped", "minus_seq_len", g.constant("end", np.array([2**62], np.int64)),
                         "one_i64"], "position_ids", "positions/Slice")  # the positions of this call's tokens
    g.node("Gather", ["mask_shape", "one_i64"], "total_1d", "lengths/Total")
    g.node("Cast", ["total_1d"], "total_1d_i32", "lengths/CastTotal", to=TensorProto.INT32)
    g.node("Squeeze", ["total_1d_i32"], "total_sequence_length", "lengths/Squeeze")
    g.node("Sub", ["total_1d_i32", g.constant("one_i32", np.array([1], np.int32))], "last_index", "lengths/Last")
    g.node("Expand", ["last_index", "batch"], "seqlens_k", "lengths/SeqlensK")  # every row: total - 1
    # bias [batch, 1, seq, total]: 0 where the key is a token, MASKED where it is padding
    g.node("Cast", ["attention_mask"], "mask_f", "bias/Cast", to=TensorProto.FLOAT)
    g.node("Sub", [g.constant("one_f", np.array(1.0, np.float32)), "mask_f"], "padding_f", "bias/Sub")
    g.node("Mul", ["padding_f", g.constant("masked", np.array(MASKED, np.float32))], "bias_2d", "bias/Mul")
    g.node("Unsqueeze", ["bias_2d", g.constant("axes12", np.array([1, 2], np.int64))], "bias_4d", "bias/Unsqueeze")
    g.node("Concat", ["batch", "one_i64", "seq_len", "total_1d"], "bias_shape", "bias/Shape", axis=0)
    g.node("Expand", ["bias_4d", "bias_shape"], "attention_bias", "bias/Expand")

    embed = model.model.embed_tokens.weight.detach().float().numpy()
    g.node("Gather", [g.constant("model.embed_tokens.weight", embed), "input_ids"], "embeddings", "embed/Gather")
    past, present = cache_names(len(layers))
    hidden, residual = "embeddings", None
    q_size, kv_size = num_heads * head_dim, kv_heads * head_dim

    def norm(x: str, residual: str | None, weight: torch.Tensor, eps: float, name: str) -> tuple[str, str]:
        """RMSNorm of x (+ residual): (normed, the sum that is the next residual)."""
        scale = g.constant(f"{name}.weight", weight.detach().float().numpy())
        if residual is None:
            return g.node("SimplifiedLayerNormalization", [x, scale], f"{name}/out", f"{name}/Norm", axis=-1,
                          epsilon=eps)[0], x
        out = g.node("SkipSimplifiedLayerNormalization", [x, residual, scale], [f"{name}/out", "", "", f"{name}/sum"],
                     f"{name}/SkipNorm", domain=MS, epsilon=eps)
        return out[0], out[3]

    for i, layer in enumerate(layers):
        attn, mlp, prefix = layer.self_attn, layer.mlp, f"model.layers.{i}"
        eps = float(layer.input_layernorm.variance_epsilon)
        normed, residual = norm(hidden, residual, layer.input_layernorm.weight, eps, f"{prefix}.input_layernorm")
        qkv = _linear(g, normed, [attn.q_proj, attn.k_proj, attn.v_proj], f"{prefix}.self_attn.qkv_proj")
        if inner_rotary:  # packed q/k/v in, rotary inside: at each key's index in the cache
            qkv_inputs, rotary = [qkv, "", ""], {"do_rotary": 1}
        else:
            sizes = g.constant(f"{prefix}.qkv_sizes", np.array([q_size, kv_size, kv_size], np.int64))
            q, k, v = g.node("Split", [qkv, sizes], [f"{prefix}/q", f"{prefix}/k", f"{prefix}/v"],
                             f"{prefix}.self_attn/Split", axis=-1)
            q = g.node("RotaryEmbedding", [q, "position_ids", "rotary.cos", "rotary.sin"], f"{prefix}/q_rot",
                       f"{prefix}.self_attn/RotaryQ", domain=MS, num_heads=num_heads)[0]
            k = g.node("RotaryEmbedding", [k, "position_ids", "rotary.cos", "rotary.sin"], f"{prefix}/k_rot",
                       f"{prefix}.self_attn/RotaryK", domain=MS, num_heads=kv_heads)[0]
            qkv_inputs, rotary = [q, k, v], {}
        context = g.node("GroupQueryAttention",
                         [*qkv_inputs, past[2 * i], past[2 * i + 1], "seqlens_k", "total_sequence_length",
                          *(["rotary.cos", "rotary.sin"] if inner_rotary else ["", ""]), "", "attention_bias"],
                         [f"{prefix}/context", present[2 * i], present[2 * i + 1]], f"{prefix}.self_attn/GQA",
                         domain=MS, num_heads=num_heads, kv_num_heads=kv_heads, scale=float(attn.scaling), **rotary)[0]
        attn_out = _linear(g, context, [attn.o_proj], f"{prefix}.self_attn.o_proj")
        eps = float(layer.post_attention_layernorm.variance_epsilon)
        normed, residual = norm(attn_out, residual, layer.post_attention_layernorm.weight, eps,
                                f"{prefix}.post_attention_layernorm")
        gate_up = _linear(g, normed, [mlp.gate_proj, mlp.up_proj], f"{prefix}.mlp.gate_up_proj")
        gate, up = g.node("Split", [gate_up, g.constant(f"{prefix}.gate_up_sizes", np.array(
            [mlp.gate_proj.out_features, mlp.up_proj.out_features], np.int64))], [f"{prefix}/gate", f"{prefix}/up"],
            f"{prefix}.mlp/Split", axis=-1)
        sigmoid = g.node("Sigmoid", [gate], f"{prefix}/gate_sigmoid", f"{prefix}.mlp/Sigmoid")[0]
        silu = g.node("Mul", [gate, sigmoid], f"{prefix}/gate_silu", f"{prefix}.mlp/SiLU")[0]
        product = g.node("Mul", [silu, up], f"{prefix}/gated", f"{prefix}.mlp/Mul")[0]
        hidden = _linear(g, product, [mlp.down_proj], f"{prefix}.mlp.down_proj")

    final, _ = norm(hidden, residual, model.model.norm.weight, float(model.model.norm.variance_epsilon), "model.norm")
    head = model.lm_head.weight.detach().float().numpy().T
    g.node("MatMul", [final, g.constant("lm_head.weight", head)], "logits", "lm_head/MatMul")

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_sequence"])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", kv_heads, "past_sequence", head_dim])
               for n in past]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", head.shape[1]])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", kv_heads, "total_sequence", head_dim])
                for n in present]
    graph = helper.make_graph(g.nodes, "edgegolf_fused_decoder", inputs, outputs, g.initializers)
    # IR 8, what opset 17 needs (as the traced export writes): make_model's default is the
    # installed onnx's newest IR (14 with onnx 1.23), which onnxruntime 1.30 refuses to load
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                             producer_name="edgegolf", ir_version=8)


def fused_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many of each fused op the graph holds (what a test and the manifest check)."""
    wanted = ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "RotaryEmbedding",
              "GroupQueryAttention")
    counts = {op: 0 for op in wanted}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return {op: n for op, n in counts.items() if n}
