"""Vocabulary pruning: keep the tokens a domain corpus uses, shrink the embedding table,
and ship a tokenizer that emits the new ids.

Only WordPiece (BERT, DistilBERT, MiniLM) is handled. WordPiece picks the longest prefix
found in the vocabulary, so a word whose pieces were all kept is split exactly as before:
in-vocabulary text gets the same pieces, renumbered, and the same embedding rows, hence the
same outputs. Kept ids stay in their original order, so special tokens keep their order too.
Single characters (and their ##-continuations) are kept by default, so a word the corpus
never used is spelled out in pieces instead of falling to [UNK].
"""

from __future__ import annotations

import collections
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgegolf.errors import DataError, PruneError

log = logging.getLogger(__name__)

_SPECIAL_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id",
                      "unk_token_id", "mask_token_id", "decoder_start_token_id")


@dataclass
class VocabReport:
    kept: int  # tokens in the new vocabulary
    total: int  # tokens in the old one
    corpus_tokens: int  # tokens in the corpus, as the old tokenizer splits it
    corpus_used: int  # distinct token ids the corpus uses
    unk_share_before: float  # share of corpus tokens that were [UNK] with the old tokenizer
    unk_share: float  # ... with the new one (rises only when vocab_min_count drops rare tokens)
    alphabet_kept: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_corpus(path: Path) -> list[str]:
    """A .txt file (one document per line) or a folder of .txt files (searched recursively)."""
    path = Path(path)
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    texts: list[str] = []
    for file in files:
        try:
            texts.extend(line for line in file.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())
        except OSError as exc:
            raise DataError(f"vocabulary corpus file {str(file)!r} cannot be read: {exc.strerror}") from None
    if not texts:
        raise DataError(f"vocabulary corpus {str(path)!r} has no text; give a .txt file or a folder of .txt files")
    return texts


def _backend_json(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise PruneError(f"vocabulary pruning needs a fast tokenizer (tokenizer.json); got {type(tokenizer).__name__}")
    data = json.loads(backend.to_str())
    kind = data.get("model", {}).get("type")
    if kind != "WordPiece":
        raise PruneError(f"vocabulary pruning supports WordPiece tokenizers (BERT, DistilBERT, MiniLM); "
                         f"this tokenizer's model is {kind!r}")
    return data


def _encode_all(tokenizer_json: str, texts: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_truncation()  # count every token of the corpus, not the first 128
    tok.no_padding()
    return [enc.ids for enc in tok.encode_batch(texts, add_special_tokens=False)]


def corpus_token_counts(tokenizer: Any, texts: list[str]) -> collections.Counter[int]:
    return collections.Counter(i for ids in _encode_all(tokenizer.backend_tokenizer.to_str(), texts) for i in ids)


def unk_share(tokenizer: Any, texts: list[str]) -> float:
    """Share of the tokens of `texts` that the tokenizer maps to its unknown token."""
    ids = [i for seq in _encode_all(tokenizer.backend_tokenizer.to_str(), texts) for i in seq]
    return sum(i == tokenizer.unk_token_id for i in ids) / max(1, len(ids))


def choose_tokens(tokenizer: Any, counts: collections.Counter[int], *, min_count: int, alphabet: bool) -> list[int]:
    """Old ids to keep, ascending: special and added tokens, corpus tokens seen >= min_count, the alphabet."""
    data = _backend_json(tokenizer)
    vocab: dict[str, int] = data["model"]["vocab"]
    prefix = data["model"].get("continuing_subword_prefix", "##")
    keep = {entry["id"] for entry in data.get("added_tokens", [])}
    keep |= {i for i in tokenizer.all_special_ids if i is not None}
    keep |= {vocab[data["model"]["unk_token"]]}
    keep |= {i for i, n in counts.items() if n >= min_count}
    if alphabet:
        keep |= {i for t, i in vocab.items() if len(t) == 1 or (t.startswith(prefix) and len(t) == len(prefix) + 1)}
    return sorted(keep)


def rewrite_tokenizer(tokenizer: Any, kept: list[int]) -> Any:
    """A tokenizer of the same class whose vocabulary is `kept` (old ids), renumbered 0..n-1 in order."""
    from transformers import AutoTokenizer

    data = _backend_json(tokenizer)
    new_id = {old: new for new, old in enumerate(kept)}
    old_vocab: dict[str, int] = data["model"]["vocab"]
    data["model"]["vocab"] = {t: new_id[i] for t, i in sorted(old_vocab.items(), key=lambda kv: kv[1]) if i in new_id}
    for entry in data.get("added_tokens", []):
        entry["id"] = new_id[entry["id"]]
    _remap_post_processor(data.get("post_processor"), new_id)
    if data.get("padding"):
        data["padding"]["pad_id"] = new_id.get(data["padding"]["pad_id"], data["padding"]["pad_id"])
    with tempfile.TemporaryDirectory(prefix="edgegolf-vocab-") as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(folder)
        (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        vocab_txt = folder / "vocab.txt"
        if vocab_txt.exists():  # kept in step with tokenizer.json for tools that read vocab.txt
            tokens = sorted(data["model"]["vocab"], key=data["model"]["vocab"].get)
            vocab_txt.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
        config_file = folder / "tokenizer_config.json"
        if config_file.exists():
            config = json.loads(config_file.read_text(encoding="utf-8"))
            if isinstance(config.get("added_tokens_decoder"), dict):
                config["added_tokens_decoder"] = {
                    str(new_id[int(k)]): v for k, v in config["added_tokens_decoder"].items() if int(k) in new_id
                }
            config_file.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        new = AutoTokenizer.from_pretrained(folder)
    if len(new) != len(kept):
        raise PruneError(f"the rewritten tokenizer has {len(new)} tokens instead of {len(kept)}; "
                         f"tokenizer class {type(tokenizer).__name__} is not supported for vocabulary pruning")
    return new


def _remap_post_processor(node: Any, new_id: dict[int, int]) -> None:
    """Special-token ids baked into TemplateProcessing / BertProcessing / Sequence post-processors."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "TemplateProcessing":
        for special in node.get("special_tokens", {}).values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old = node[key]
            node[key] = [token, new_id[old]]
    elif kind == "Sequence":
        for child in node.get("processors", []):
            _remap_post_processor(child, new_id)


def slice_vocabulary(model: nn.Module, kept: list[int]) -> None:
    """Keep the embedding rows (and LM-head rows, tied or not) of `kept`; renumber special ids in the config."""
    old_size = model.get_input_embeddings().weight.shape[0]
    index = torch.tensor(kept, dtype=torch.long)
    new_id = {old: new for new, old in enumerate(kept)}
    replaced: dict[int, nn.Parameter] = {}  # shared (tied) parameters stay shared

    def sliced(param: nn.Parameter) -> nn.Parameter:
        if id(param) not in replaced:
            replaced[id(param)] = nn.Parameter(param.detach()[index].clone(), requires_grad=param.requires_grad)
        return replaced[id(param)]

    embedding = model.get_input_embeddings()
    embedding.weight = sliced(embedding.weight)
    embedding.num_embeddings = len(kept)
    if embedding.padding_idx is not None:
        embedding.padding_idx = new_id.get(embedding.padding_idx)
    head = model.get_output_embeddings()
    if head is not None:
        head.weight = sliced(head.weight)
        if getattr(head, "bias", None) is not None:
            head.bias = sliced(head.bias)
        if hasattr(head, "out_features"):
            head.out_features = len(kept)
        # BERT's MLM head keeps its own bias beside the decoder
        for module in model.modules():
            if any(child is head for child in module.children()):
                bias = getattr(module, "bias", None)
                if isinstance(bias, nn.Parameter) and bias.shape == (old_size,):
                    module.bias = sliced(bias)
    config = model.config
    config.vocab_size = len(kept)
    for field in _SPECIAL_ID_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int):
            setattr(config, field, new_id.get(value))


def prune_vocabulary(model: nn.Module, tokenizer: Any, texts: list[str], *, min_count: int = 1, alphabet: bool = True
                     ) -> tuple[Any, VocabReport]:
    """Shrink `model`'s vocabulary (in place) to what `texts` use; return the new tokenizer and a report."""
    if not texts:
        raise DataError("vocabulary pruning got an empty corpus; give a .txt file or a folder of .txt files with text")
    data = _backend_json(tokenizer)
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != len(tokenizer):
        raise PruneError(f"the embedding table has {rows} rows but the tokenizer {len(tokenizer)} tokens; "
                         "vocabulary pruning needs them equal")
    counts = corpus_token_counts(tokenizer, texts)
    kept = choose_tokens(tokenizer, counts, min_count=min_count, alphabet=alphabet)
    new_tokenizer = rewrite_tokenizer(tokenizer, kept)
    slice_vocabulary(model, kept)
    total = sum(counts.values())
    unk = data["model"]["vocab"][data["model"]["unk_token"]]
    report = VocabReport(
        kept=len(kept), total=rows, corpus_tokens=total, corpus_used=len(counts),
        unk_share_before=counts.get(unk, 0) / max(1, total), unk_share=unk_share(new_tokenizer, texts),
        alphabet_kept=alphabet,
    )
    log.info("vocabulary: kept %d of %d tokens; corpus [UNK] share %.4f -> %.4f",
             report.kept, report.total, report.unk_share_before, report.unk_share)
    return new_tokenizer, report
