"""The real all-MiniLM-L6-v2 and its real tokenizer, pruned on real BBC News text (slow)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from edgegolf.compression.prune import load_pruned, parse_prune_spec, prune_folder, prune_model
from edgegolf.data import load_labelled_texts
from edgegolf.source import default_model_path

pytestmark = pytest.mark.slow


def encode(tokenizer, texts):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def test_minilm_vocab_and_structure_pruned_through_a_folder(tmp_path):
    source = default_model_path()
    texts = list(load_labelled_texts().texts[::20])  # 112 articles from every class
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(t.split()) for t in texts), encoding="utf-8")
    teacher = AutoModel.from_pretrained(source, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(source)

    # vocabulary alone: the corpus texts are in-vocabulary, so the outputs are the teacher's
    student, new_tok, report = prune_model(teacher, tokenizer, parse_prune_spec(f"vocab={corpus}"))
    assert report.vocab.total == 30522 and report.vocab.kept < 15000
    assert student.embeddings.word_embeddings.weight.shape == (report.vocab.kept, 384)
    with torch.no_grad():
        before = teacher(**encode(tokenizer, texts[:4])).last_hidden_state
        after = student(**encode(new_tok, texts[:4])).last_hidden_state
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)

    # the whole cut, through the folder API, comes back from disk unchanged
    out = tmp_path / "student"
    full = prune_folder(source, out, parse_prune_spec(f"layers=3,heads=0.5,ffn=0.5,vocab={corpus}"), texts[:32])
    assert full.shape_after == {"layers": 3, "heads": 6, "kv_heads": 6, "head_dim": 32, "ffn": 768,
                                "vocab": full.vocab.kept, "hidden": 384}
    assert full.params_after < 0.4 * full.params_before
    loaded, loaded_tok = load_pruned(out), AutoTokenizer.from_pretrained(out)
    again, again_tok, _ = prune_model(teacher, tokenizer, full.config, calibration_texts=texts[:32])
    with torch.no_grad():
        got = loaded(**encode(loaded_tok, texts[40:43])).last_hidden_state
        expected = again(**encode(again_tok, texts[40:43])).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # pruning is deterministic
    # the sentence-transformers head comes along (its modules.json names a 2_Normalize folder it lacks)
    from edgegolf.tasks.st_folder import read_sentence_head

    assert read_sentence_head(out).describe() == read_sentence_head(source).describe() == "mean pooling, Normalize"
