"""Vocabulary pruning on a tiny BERT whose WordPiece vocabulary comes from real BBC News text."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from transformers import AutoTokenizer, BertModel

from edgegolf.compression.prune import PruneConfig, load_pruned, parse_prune_spec, prune_folder, prune_model, unk_share
from edgegolf.data import load_labelled_texts
from edgegolf.errors import DataError


@pytest.fixture(scope="module")
def bbc():
    texts = load_labelled_texts().texts
    return list(texts[:40]), list(texts[1000:1040])  # corpus (business), other texts (entertainment)


@pytest.fixture(scope="module")
def teacher(tiny_bert):
    return BertModel.from_pretrained(tiny_bert, attn_implementation="eager").eval(), AutoTokenizer.from_pretrained(tiny_bert)


def encode(tokenizer, texts):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def hidden(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def test_in_vocabulary_text_gives_identical_outputs_and_the_table_shrinks(teacher, bbc):
    model, tokenizer = teacher
    corpus, _ = bbc
    pruned, new_tok, report = prune_model(model, tokenizer, parse_prune_spec("vocab_alphabet=false,layers=2"),
                                          vocab_texts=corpus)
    old_vocab = tokenizer.get_vocab()
    kept_tokens = new_tok.get_vocab()
    assert report.vocab.kept == len(kept_tokens) == len(new_tok) < report.vocab.total == len(old_vocab)
    assert pruned.get_input_embeddings().weight.shape == (report.vocab.kept, 32) and pruned.config.vocab_size == report.vocab.kept
    assert report.params_after < report.params_before
    # specials survive, keep their order, and [PAD] stays 0
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert [kept_tokens[t] for t in specials] == sorted(kept_tokens[t] for t in specials) and kept_tokens["[PAD]"] == 0
    assert pruned.config.pad_token_id == 0 and new_tok.unk_token_id == kept_tokens["[UNK]"]

    texts = corpus[:6]  # in-vocabulary by construction
    old, new = encode(tokenizer, texts), encode(new_tok, texts)
    old_to_new = {old_vocab[t]: i for t, i in kept_tokens.items()}
    assert new["input_ids"].tolist() == [[old_to_new[i] for i in row] for row in old["input_ids"].tolist()]
    # same rows of the same table, so the same numbers: compare to the teacher cut to the same layers
    same_layers, _, _ = prune_model(model, tokenizer, parse_prune_spec("layers=2"))
    torch.testing.assert_close(hidden(pruned, new), hidden(same_layers, old), rtol=0, atol=1e-6)
    assert report.vocab.unk_share == report.vocab.unk_share_before  # every corpus token was kept


def test_unseen_words_are_spelled_out_with_the_alphabet_and_unknown_without(teacher, bbc):
    model, tokenizer = teacher
    corpus, others = bbc
    _, with_alphabet, report = prune_model(model, tokenizer, PruneConfig(vocab_alphabet=True), vocab_texts=corpus)
    _, without, report_bare = prune_model(model, tokenizer, PruneConfig(vocab_alphabet=False), vocab_texts=corpus)
    assert report.vocab.kept > report_bare.vocab.kept
    before = unk_share(tokenizer, others)
    assert unk_share(without, others) > before  # words the corpus never used fall to [UNK]
    assert unk_share(with_alphabet, others) <= unk_share(without, others)


def test_min_count_drops_rare_tokens_and_reports_the_unknown_share(teacher, bbc):
    model, tokenizer = teacher
    corpus, _ = bbc
    _, _, all_used = prune_model(model, tokenizer, PruneConfig(vocab_alphabet=False), vocab_texts=corpus)
    _, _, frequent = prune_model(model, tokenizer, PruneConfig(vocab_alphabet=False, vocab_min_count=3),
                                 vocab_texts=corpus)
    assert frequent.vocab.kept < all_used.vocab.kept
    assert frequent.vocab.unk_share > frequent.vocab.unk_share_before


def test_saved_tokenizer_and_model_come_back_the_same(tiny_bert, bbc, tmp_path):
    corpus, _ = bbc
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(t.replace("\n", " ") for t in corpus), encoding="utf-8")
    out = tmp_path / "pruned"
    report = prune_folder(tiny_bert, out, parse_prune_spec(f"vocab={corpus_file},heads=0.5"), corpus[:8])
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == report.vocab.kept
    saved = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert sorted(saved["model"]["vocab"].values()) == list(range(report.vocab.kept))
    assert saved["post_processor"]["special_tokens"]["[CLS]"]["ids"] == [tokenizer.cls_token_id]
    assert json.loads((out / "config.json").read_text())["vocab_size"] == report.vocab.kept
    model = load_pruned(out)
    batch = encode(tokenizer, corpus[:3])
    assert int(batch["input_ids"].max()) < report.vocab.kept
    assert torch.isfinite(hidden(model, batch)).all()


def test_masked_lm_head_is_cut_with_the_embeddings(teacher, bbc):
    _, tokenizer = teacher
    corpus, _ = bbc
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    mlm = transformers.BertForMaskedLM(config).eval()
    pruned, new_tok, report = prune_model(mlm, tokenizer, PruneConfig(vocab_alphabet=False), vocab_texts=corpus)
    kept = [tokenizer.get_vocab()[t] for t in sorted(new_tok.get_vocab(), key=new_tok.get_vocab().get)]
    old, new = encode(tokenizer, corpus[:2]), encode(new_tok, corpus[:2])
    with torch.no_grad():
        expected = mlm(**old).logits[..., kept]
        got = pruned(**new).logits
    assert got.shape[-1] == report.vocab.kept
    assert pruned.get_output_embeddings().weight.data_ptr() == pruned.get_input_embeddings().weight.data_ptr()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_empty_corpus_is_an_error(teacher, tmp_path):
    model, tokenizer = teacher
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="has no text"):
        prune_model(model, tokenizer, parse_prune_spec(f"vocab={empty}"))
