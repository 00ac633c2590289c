"""Tiny causal LMs for the tests: LLaMA, Qwen2 and GPT-2 configs, a byte-level BPE trained on BBC text."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

VOCAB_SIZE = 384
ARCHS = ("llama", "qwen2", "gpt2")
# A ChatML-like template of our own over the BPE's special tokens (the Qwen2 model's tokenizer carries it)
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


@lru_cache(maxsize=1)
def bbc_texts() -> tuple[str, ...]:
    """BBC News texts, read once per test process."""
    from edgegolf.data import load_labelled_texts

    return load_labelled_texts().texts


def bbc_text_file(path: Path, start: int, stop: int) -> Path:
    """BBC News texts start to stop as one .txt file, a paragraph each: causal-lm's `--data` kind."""
    path.write_text("\n\n".join(bbc_texts()[start:stop]), encoding="utf-8")
    return path


def bbc_bpe(*, bos: bool, vocab_size: int = VOCAB_SIZE, texts: list[str] | None = None):
    """A PreTrainedTokenizerFast: byte-level BPE trained on BBC News; LLaMA-style (a BOS token
    before every text) when `bos`, else GPT-2-style (no special tokens added)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        texts = list(bbc_texts()[::8])
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_config(arch: str, vocab_size: int, **overrides):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    if arch == "qwen2":  # biases on q/k/v, grouped-query attention
        return Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **overrides)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **overrides)
    return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=256, n_inner=64,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, **overrides)


def save_tiny_lm(folder: Path, arch: str, *, seed: int = 0) -> Path:
    """A random-weight tiny LM of `arch` (one of ARCHS) and its tokenizer, saved to `folder`; the
    Qwen2 one's tokenizer has a chat template (CHAT_TEMPLATE) and no BOS, like Qwen2's."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = bbc_bpe(bos=arch == "llama")
    if arch == "qwen2":
        tokenizer.chat_template = CHAT_TEMPLATE
    # large random weights: peaked next-token distributions, so greedy choices are clear-cut and
    # varied (at the default 0.02 a random GPT-2 repeats one token), and quantization shows
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer), initializer_range=0.3)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_tiny_lm(folder: Path):
    """(causal-lm adapter, torch model, transformers tokenizer) of a saved tiny LM."""
    from transformers import AutoTokenizer

    from edgegolf.tasks import get_task

    adapter = get_task("causal-lm")
    return adapter, adapter.load_model(folder), AutoTokenizer.from_pretrained(str(folder))


def export_tiny_lm(folder: Path, out: Path, *, max_length: int = 64):
    """(torch model, runtime CausalLM) of a verified ONNX export of the tiny LM in `folder`."""
    import numpy as np

    from edgegolf.export.causal import export_causal_lm
    from edgegolf.runtime import open_model

    adapter, model, tokenizer = load_tiny_lm(folder)
    spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), max_length)
    tokenizer.save_pretrained(str(out / "tok"))

    def encode(texts):
        batch = tokenizer(texts, padding=True, return_tensors="np")
        return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    texts = list(bbc_texts()[:3])
    report = export_causal_lm(model, out / "lm.onnx", sample_feeds=encode([t[:80] for t in texts[:2]]),
                              verify_feeds=[encode([texts[0][:100]]), encode([texts[1][:150], texts[2][:30]])])
    assert report.max_abs_diff < 1e-4, report.max_abs_diff
    return model, open_model(out / "lm.onnx", out / "tok" / "tokenizer.json", spec, threads=1)


def tied_config(arch: str, vocab_size: int):
    """A tiny LLaMA, Qwen2 or GPT-2 config with tied input and output embeddings, 64 wide
    (two blocks of 32 per table row), large random weights as in save_tiny_lm."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
                  initializer_range=0.3)
    if arch == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, n_inner=128, **common)
    config_class = LlamaConfig if arch == "llama" else Qwen2Config
    return config_class(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=256, **common)


def save_tiny_tied_lm(folder: Path, arch: str, *, seed: int = 0) -> Path:
    """A random-weight tiny LM of `arch` ("llama", "qwen2" or "gpt2") with a tied embedding
    table and its tokenizer, saved to `folder`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = bbc_bpe(bos=arch != "gpt2")
    model = AutoModelForCausalLM.from_config(tied_config(arch, len(tokenizer))).eval()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
