"""Tiny real bundles for the runtime tests, built without torch.

The graph is made with onnx.helper: token states are an embedding lookup plus a token-type
lookup plus a bias on the tokens the attention mask keeps, so a test can compute by hand in
numpy what the runtime must return. The tokenizer is a real WordPiece tokenizer built with
the tokenizers library, saved with padding and truncation of its own (as all-MiniLM-L6-v2's
tokenizer.json is) so that the tests prove the runtime replaces them with the spec's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from edgegolf.runtime.manifest import write_manifest
from edgegolf.runtime.spec import ModelSpec

WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "bank", "shares", "fell", "rose", "band", "album", "new", "a", "of", "in", "game", "won",
    "team", "music", "market", "play", "after", "results", "released", "film", "vote", "election",
    "##s", "##ed", ".", ",",
]
VOCAB = {word: i for i, word in enumerate(WORDS)}
LABELS = ("business", "entertainment", "sport")
HIDDEN = 8
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class TinyBundle:
    folder: Path
    spec: ModelSpec
    word: np.ndarray  # [vocab, hidden]
    types: np.ndarray  # [2, hidden]
    bias: np.ndarray  # [hidden]
    head: np.ndarray | None = None  # [hidden, labels]
    head_bias: np.ndarray | None = None  # [labels]

    def ids(self, text: str, max_length: int | None = None) -> list[int]:
        """Token ids by hand: [CLS] + one id per space-separated known word + [SEP], truncated
        the way a BERT tokenizer truncates (the special tokens stay)."""
        words = text.lower().split()[: (max_length or self.spec.max_length) - 2]
        return [VOCAB["[CLS]"]] + [VOCAB[w] for w in words] + [VOCAB["[SEP]"]]

    def states(self, text: str) -> np.ndarray:
        return self.word[self.ids(text)] + self.types[0] + self.bias

    def embedding(self, text: str) -> np.ndarray:
        pooled = self.states(text).mean(axis=0)
        return pooled / np.linalg.norm(pooled)

    def logits(self, text: str) -> np.ndarray:
        return self.states(text).mean(axis=0) @ self.head + self.head_bias


def save_tokenizer(path: Path) -> Path:
    tokenizer = Tokenizer(models.WordPiece(VOCAB, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])],
    )
    # settings of its own that the runtime must override with the spec's
    tokenizer.enable_truncation(5)
    tokenizer.enable_padding(length=40, pad_id=VOCAB["[PAD]"], pad_token="[PAD]")
    tokenizer.save(str(path))
    return path


def build_graph(path: Path, bundle: TinyBundle, *, opset: int = 17) -> Path:
    """last_hidden_state = word[ids] + types[type_ids] + mask * bias; logits = masked mean @ head + b."""
    batch_seq = ["batch", "seq"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, batch_seq) for n in INPUTS]
    inits = [
        numpy_helper.from_array(bundle.word, "word"),
        numpy_helper.from_array(bundle.types, "types"),
        numpy_helper.from_array(bundle.bias, "bias"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
    ]
    nodes = [
        helper.make_node("Gather", ["word", "input_ids"], ["w"]),
        helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["mask3", "bias"], ["b"]),
        helper.make_node("Add", ["w", "t"], ["wt"]),
        helper.make_node("Add", ["wt", "b"], ["last_hidden_state"]),
    ]
    if bundle.spec.task == "text-classification":
        inits += [numpy_helper.from_array(bundle.head, "head"), numpy_helper.from_array(bundle.head_bias, "head_bias"),
                  numpy_helper.from_array(np.array([1], dtype=np.int64), "seq_axis")]
        nodes += [
            helper.make_node("Mul", ["last_hidden_state", "mask3"], ["kept"]),
            helper.make_node("ReduceSum", ["kept", "seq_axis"], ["summed"], keepdims=0),
            helper.make_node("ReduceSum", ["mask3", "seq_axis"], ["count"], keepdims=0),
            helper.make_node("Div", ["summed", "count"], ["pooled"]),
            helper.make_node("MatMul", ["pooled", "head"], ["scores"]),
            helper.make_node("Add", ["scores", "head_bias"], ["logits"]),
        ]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])]
    else:
        outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", HIDDEN])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgegolf-tests")
    model.ir_version = 8  # read by every onnxruntime this project supports
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_bundle(folder: Path, *, task: str = "feature-extraction", max_length: int = 16, seed: int = 0,
                 **spec_fields) -> TinyBundle:
    """A complete bundle in `folder`: model.onnx, tokenizer.json, manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classify = task == "text-classification"
    spec = ModelSpec(
        task=task, input_names=INPUTS, output_names=("logits",) if classify else ("last_hidden_state",),
        max_length=max_length, pad_token_id=VOCAB["[PAD]"], pad_token="[PAD]",
        labels=LABELS if classify else (), **spec_fields,
    )
    bundle = TinyBundle(
        folder, spec,
        word=rng.standard_normal((len(VOCAB), HIDDEN)).astype(np.float32),
        types=rng.standard_normal((2, HIDDEN)).astype(np.float32),
        bias=rng.standard_normal(HIDDEN).astype(np.float32),
        head=(0.3 * rng.standard_normal((HIDDEN, len(LABELS)))).astype(np.float32) if classify else None,
        head_bias=rng.standard_normal(len(LABELS)).astype(np.float32) if classify else None,
    )
    build_graph(folder / spec.onnx_file, bundle)
    save_tokenizer(folder / spec.tokenizer_file)
    write_manifest(folder, {"task": task, "model": spec.to_dict()})
    return bundle
