"""causal-lm runtime generation on tiny LLaMA, Qwen2 and GPT-2 models: batches, streaming, stop strings,
end-of-text tokens and chat templates, each against PyTorch's greedy `model.generate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgegolf.errors import InputError
from edgegolf.runtime.causal_lm import untruncated
from edgegolf.runtime.textstream import TextStream
from tests.builders.causal_lm import ARCHS, bbc_bpe, export_tiny_lm, save_tiny_lm

# different lengths, so a batch is left-padded
PROMPTS = ["The government said on Tuesday that", "Shares in the", "Oil"]
NEW = 12


@pytest.fixture(scope="module")
def export_dirs(tmp_path_factory) -> dict[str, Path]:
    """arch -> the folder of its export: lm.onnx and tok/tokenizer.json."""
    return {arch: tmp_path_factory.mktemp(f"export-{arch}") for arch in ARCHS}


@pytest.fixture(scope="module")
def exports(export_dirs, tmp_path_factory) -> dict[str, tuple]:
    """arch -> (torch model, transformers tokenizer, runtime CausalLM over its verified export)."""
    from transformers import AutoTokenizer

    found = {}
    for arch in ARCHS:
        folder = save_tiny_lm(tmp_path_factory.mktemp(f"tiny-{arch}"), arch)
        model, lm = export_tiny_lm(folder, export_dirs[arch])
        found[arch] = (model, AutoTokenizer.from_pretrained(str(folder)), lm)
    return found


def torch_greedy(model, tokenizer, prompts: list[str], new: int, eos: int | None = 2, **encode) -> list[list[int]]:
    """PyTorch's greedy generate on a left-padded batch: each row's new ids, up to its first end-of-text id."""
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, padding=True, return_tensors="pt", **encode)
    with torch.inference_mode():
        out = model.generate(**batch, do_sample=False, max_new_tokens=new, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=eos)[:, batch["input_ids"].shape[1]:].tolist()
    return [row[:row.index(eos) + 1] if eos in row else row for row in out]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.support(task="causal-lm", arch="{arch}", stage=("runtime", "generate"))
def test_batched_and_streamed_generation_equal_pytorch_greedy(exports, arch):
    model, tokenizer, lm = exports[arch]
    batched = lm.generate(PROMPTS, max_new_tokens=NEW)
    assert [g.token_ids for g in batched] == torch_greedy(model, tokenizer, PROMPTS, NEW)
    for prompt, got in zip(PROMPTS, batched, strict=True):
        alone = lm.generate(prompt, max_new_tokens=NEW)
        assert alone.token_ids == torch_greedy(model, tokenizer, [prompt], NEW)[0] == got.token_ids
        streamed = list(lm.stream(prompt, max_new_tokens=NEW))
        assert "".join(streamed) == alone.text == tokenizer.decode(alone.token_ids, skip_special_tokens=True)
        assert len(streamed) > 1 and alone.finish_reason in ("length", "eos")
    assert len({tuple(g.token_ids) for g in batched}) == len(PROMPTS)  # the rows really differ


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_end_of_text_tokens_end_generation_as_pytorch_does(exports, arch):
    """Any of the bundle's end-of-text ids ends a row; the other rows of the batch go on."""
    model, tokenizer, lm = exports[arch]
    free = lm.generate(PROMPTS, max_new_tokens=NEW)
    eos = free[0].token_ids[4]  # a token greedy decoding reaches: make it the end of text
    lm.eos_token_ids = frozenset({eos})
    try:
        ended = lm.generate(PROMPTS, max_new_tokens=NEW)
    finally:
        lm.eos_token_ids = frozenset({2})
    assert [g.token_ids for g in ended] == torch_greedy(model, tokenizer, PROMPTS, NEW, eos=eos)
    assert ended[0].token_ids[-1] == eos and ended[0].finish_reason == "eos" and len(ended[0].token_ids) <= 5
    assert any(g.finish_reason == "length" for g in ended)  # a row without it ran to max_new_tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_stop_strings_cut_the_text_and_the_stream_alike(exports, arch):
    _, _, lm = exports[arch]
    full = lm.generate(PROMPTS[0], max_new_tokens=NEW)
    assert len(full.text) > 8
    stop = full.text[5:8]  # three characters inside the continuation, maybe across tokens
    cut = lm.generate(PROMPTS[0], max_new_tokens=NEW, stop=[stop, "never appears here"])
    assert cut.text == full.text[:full.text.index(stop)] and cut.finish_reason == "stop"
    assert cut.token_ids == full.token_ids[:len(cut.token_ids)] and len(cut.token_ids) < len(full.token_ids) + 1
    assert "".join(lm.stream(PROMPTS[0], max_new_tokens=NEW, stop=[stop])) == cut.text
    batch = lm.generate([PROMPTS[0], PROMPTS[1]], max_new_tokens=NEW, stop=[stop])
    assert batch[0].text == cut.text
    with pytest.raises(InputError, match="stop"):
        lm.generate(PROMPTS[0], stop="x")


def test_chat_template_prompt_equals_transformers_and_generates_like_pytorch(exports):
    model, tokenizer, lm = exports["qwen2"]
    conversation = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Oil prices?"}]
    want_ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    want_ids = want_ids["input_ids"] if isinstance(want_ids, dict) or hasattr(want_ids, "keys") else want_ids
    got = lm.generate(conversation, chat=True, max_new_tokens=NEW)
    assert got.prompt_ids == list(want_ids)
    assert lm.apply_chat_template(conversation) == tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=False)
    text = lm.apply_chat_template(conversation)
    assert got.token_ids == torch_greedy(model, tokenizer, [text], NEW, add_special_tokens=False)[0]
    # a str is one user message; a list of conversations is a batch
    both = lm.generate(["Oil prices?", conversation], chat=True, max_new_tokens=NEW)
    assert both[1].token_ids == got.token_ids
    assert both[0].prompt_ids == lm.generate([{"role": "user", "content": "Oil prices?"}], chat=True,
                                             max_new_tokens=2).prompt_ids
    assert "".join(lm.stream(conversation, chat=True, max_new_tokens=NEW)) == got.text
    _, _, plain = exports["gpt2"]
    with pytest.raises(InputError, match="no chat template"):
        plain.generate("hi", chat=True)
    with pytest.raises(InputError, match="chat prompt"):
        lm.generate([{"content": "no role"}], chat=True)


def test_without_jinja2_a_chat_prompt_names_the_extra_and_plain_prompts_still_work(exports, export_dirs):
    """The runtime needs jinja2 only for chat templates: blocked, the chat call ends in one line."""
    from tests.builders.isolation import APP, BLOCKED

    _, _, lm = exports["qwen2"]
    folder = export_dirs["qwen2"]
    (folder / "spec.json").write_text(json.dumps(lm.spec.to_dict()), encoding="utf-8")
    app = APP.split("import json")[0] + (
        "import json, pathlib\nfrom edgegolf.errors import MissingExtraError\n"
        "from edgegolf.runtime import ModelSpec, open_model\n"
        "folder = pathlib.Path(sys.argv[2])\n"
        "spec = ModelSpec.from_dict(json.loads((folder / 'spec.json').read_text()))\n"
        "lm = open_model(folder / 'lm.onnx', folder / 'tok' / 'tokenizer.json', spec, threads=1)\n"
        "try:\n    lm.generate('Oil prices?', chat=True, max_new_tokens=2)\n    error = None\n"
        "except MissingExtraError as exc:\n    error = str(exc)\n"
        "print(json.dumps({'error': error, 'ids': lm.generate('Oil', max_new_tokens=4).token_ids}))\n")
    done = subprocess.run([sys.executable, "-c", app, ",".join([*BLOCKED, "jinja2"]), str(folder)],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "'chat' extra" in result["error"] and "pip install 'edgegolf[chat]'" in result["error"]
    assert result["ids"] == lm.generate("Oil", max_new_tokens=4).token_ids


def test_stream_pieces_never_split_a_character_and_join_to_the_decoding():
    """Multi-byte characters spread over byte-level tokens are held back until complete."""
    tokenizer = untruncated(bbc_bpe(bos=False).backend_tokenizer)
    text = "Prices in Zürich — and 東京 — rose 5 % (naïve café ☕)."
    ids = tokenizer.encode(text).ids
    assert len(ids) > len(text.split())  # byte pieces: the rare characters take several tokens
    stream = TextStream(tokenizer)
    pieces = [stream.add(token) for token in ids] + [stream.finish()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in piece for piece in pieces)
    split_char = [i for i in range(1, len(ids)) if tokenizer.decode(ids[:i]).endswith("\ufffd")]
    assert split_char and all(pieces[i - 1] == "" or not pieces[i - 1].endswith("\ufffd") for i in split_char)


def test_stop_string_across_tokens_is_never_emitted():
    tokenizer = untruncated(bbc_bpe(bos=False).backend_tokenizer)
    ids = tokenizer.encode("The bank said. Next year profits fell.").ids
    stream = TextStream(tokenizer, stop=[". Next"])
    pieces = []
    for token in ids:
        pieces.append(stream.add(token))
        if stream.stopped:
            break
    pieces.append(stream.finish())
    assert stream.stopped and "".join(pieces) == stream.text == "The bank said"
    assert not any("." in piece for piece in pieces)  # the held-back "." belonged to the stop string


def test_bad_prompts_name_what_is_accepted(exports):
    _, _, lm = exports["llama"]
    for bad, match in ((42, "prompt is"), ([], "prompt is"), ([{"role": "user", "content": "x"}], "pass a str")):
        with pytest.raises(InputError, match=match):
            lm.generate(bad)
    with pytest.raises(InputError, match="stream takes one prompt"):
        list(lm.stream(["a", "b"]))
