"""Tiny embedding graphs built with onnx.helper, and a real WordPiece tokenizer.json for them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from edgegolf.runtime.spec import ModelSpec

NAMES = ("input_ids", "attention_mask", "token_type_ids")


MAX_LENGTH = 256


def embedder_spec() -> ModelSpec:
    return ModelSpec(task="feature-extraction", input_names=NAMES, output_names=("last_hidden_state",),
                     max_length=MAX_LENGTH, pad_token_id=0, pad_token="[PAD]")


def save_wordpiece_tokenizer(path, vocab: dict[str, int]) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer.save(str(path))
    return tokenizer


def save_embedder(path, vocab_size: int, width: int) -> None:
    """last_hidden_state = (word[input_ids] + segment[token_type_ids]) * attention_mask."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gather", ["word", "input_ids"], ["w"]),
        helper.make_node("Gather", ["segment", "token_type_ids"], ["s"]),
        helper.make_node("Add", ["w", "s"], ["h"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
        helper.make_node("Mul", ["h", "m3"], ["last_hidden_state"]),
    ]
    graph = helper.make_graph(
        nodes, "embedder",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in NAMES],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", width])],
        [numpy_helper.from_array(rng.standard_normal((vocab_size, width)).astype(np.float32), "word"),
         numpy_helper.from_array(rng.standard_normal((2, width)).astype(np.float32), "segment"),
         numpy_helper.from_array(np.array([2], dtype=np.int64), "axis")],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

