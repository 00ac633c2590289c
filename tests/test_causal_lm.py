"""causal-lm: tiny LLaMA and GPT-2 models (built here, BPE trained on BBC text) through every stage."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgegolf
from edgegolf.errors import DataError, InputError
from edgegolf.runtime import LMScore, load
from edgegolf.runtime.causal_lm import score_text, untruncated
from edgegolf.runtime.spec import ModelSpec
from edgegolf.tasks import get_task, infer_task
from edgegolf.tasks.causal_lm import text_chunks
from tests.builders.causal_lm import bbc_text_file, bbc_texts, export_tiny_lm, load_tiny_lm, save_tiny_lm
from tests.builders.recipes import QUICK

ARCHS = ("llama", "gpt2")
PROMPTS = ["The government said on Tuesday that", "Shares in the"]


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory) -> dict[str, Path]:
    return {arch: save_tiny_lm(tmp_path_factory.mktemp(f"tiny-{arch}"), arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def bbc_txt(tmp_path_factory) -> Path:
    return bbc_text_file(tmp_path_factory.mktemp("text") / "bbc.txt", 1000, 1010)


@pytest.fixture(scope="module")
def exports(tiny_lms, tmp_path_factory) -> dict[str, tuple]:
    """arch -> (torch model, runtime CausalLM over its verified export); shared: the tests only read them."""
    return {arch: export_tiny_lm(folder, tmp_path_factory.mktemp(f"export-{arch}"))
            for arch, folder in tiny_lms.items()}


def test_lm_architectures_mean_the_causal_lm_task(tiny_lms):
    from transformers import AutoConfig

    for folder in tiny_lms.values():
        assert infer_task(AutoConfig.from_pretrained(folder)) == "causal-lm"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.support(task="causal-lm", arch="{arch}", stage=("load", "export", "runtime", "generate"))
def test_greedy_generation_with_the_cache_equals_pytorch(exports, arch):
    """The runtime feeds the prompt once, then one token per step with the presents as past."""
    model, lm = exports[arch]
    for prompt in PROMPTS:
        got = lm.generate(prompt, max_new_tokens=12)
        ids = torch.tensor([got.prompt_ids])
        with torch.inference_mode():
            want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                                  pad_token_id=0)[0, ids.shape[1]:].tolist()
        assert got.token_ids == want, prompt
        assert len(set(want)) > 1  # the sharpened random model does not just repeat one token
    sampled = [lm.generate(PROMPTS[0], max_new_tokens=8, greedy=False, seed=s).token_ids for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and len(sampled[0]) >= 1


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_batch_gives_each_texts_own_logits(exports, arch):
    """Positions come from the attention mask inside the graph, so padding on the left is harmless."""
    _, lm = exports[arch]
    tok = untruncated(lm.tokenizer)
    a, b = (tok.encode(t).ids for t in ("Oil prices rose sharply on Monday", "Fans cheered"))
    ids = np.zeros((2, len(a)), dtype=np.int64)
    mask = np.zeros_like(ids)
    ids[0], mask[0] = a, 1
    ids[1, len(a) - len(b):], mask[1, len(a) - len(b):] = b, 1
    batched = lm.run({"input_ids": ids, "attention_mask": mask})[0]
    alone = lm.run({"input_ids": np.array([b]), "attention_mask": np.ones((1, len(b)), dtype=np.int64)})[0]
    np.testing.assert_allclose(batched[1, -1], alone[0, -1], atol=1e-4)


def test_score_is_the_cross_entropy_of_the_text_in_bits_per_byte(exports):
    """Within one window the score is the plain next-token cross-entropy; longer texts slide."""
    model, lm = exports["llama"]
    text = "The minister said the economy would grow by 2% next year."
    ids = torch.tensor([untruncated(lm.tokenizer).encode(text).ids])
    assert ids[0, 0] == 1  # the LLaMA-style tokenizer starts with <s>: every text byte is predicted
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0]
    nll = float(torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum"))
    got = lm.score([text])
    assert got.tokens == ids.shape[1] - 1 and got.bytes == len(text.encode("utf-8"))
    assert got.nll == pytest.approx(nll, rel=1e-5)
    assert got.bits_per_byte == pytest.approx(nll / math.log(2) / len(text.encode()), rel=1e-5)
    assert got.perplexity == pytest.approx(math.exp(nll / got.tokens), rel=1e-5)
    # a text three windows long: every token after the first is scored exactly once
    long_text = bbc_texts()[0][:1000]
    n = len(untruncated(lm.tokenizer).encode(long_text).ids)
    assert n > 3 * lm.spec.max_length
    windowed = lm.score([long_text])
    assert windowed.tokens == n - 1 and windowed.bytes == len(long_text.encode())

    def logits_of(window_ids):
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(window_ids[None])).logits[0].numpy()

    torch_score = score_text(long_text, untruncated(lm.tokenizer), logits_of, lm.spec.max_length)
    assert windowed.nll == pytest.approx(torch_score.nll, rel=1e-5)
    assert (LMScore() + windowed).to_row().tolist() == windowed.to_row().tolist()


def test_gpt2_style_tokenizer_scores_from_the_second_token(exports):
    _, lm = exports["gpt2"]
    text = "Markets fell."
    encoding = untruncated(lm.tokenizer).encode(text)
    got = lm.score([text])
    assert got.tokens == len(encoding.ids) - 1
    assert got.bytes == len(text[encoding.offsets[1][0]:].encode())  # the first token has no context to score
    with pytest.raises(InputError, match="max_new_tokens"):
        lm.generate("x", max_new_tokens=lm.spec.max_length)
    with pytest.raises(InputError, match="no tokens"):
        lm.generate("", max_new_tokens=3)


QUICK_LM = {**QUICK, "evaluate": {"calibration_size": 4}, "bench": {**QUICK["bench"], "seq": 32}}


@pytest.fixture(scope="module")
def gpt2_bundle(tiny_lms, bbc_txt, tmp_path_factory):
    """`edgegolf compress` of the tiny GPT-2 on a .txt file, int8 dynamic."""
    out = tmp_path_factory.mktemp("gpt2-bundle") / "out"
    return edgegolf.compress(str(tiny_lms["gpt2"]), output=out, task="causal-lm", recipe=QUICK_LM,
                             overrides={"evaluate.data": str(bbc_txt), "quantize.scheme": "int8-dynamic"})


def quantized_ops(result) -> dict[str, int]:
    return next(r for r in result.manifest["provenance"] if r["stage"] == "quantize")["measured"]["quantized_ops"]


@pytest.mark.support(task="causal-lm", arch="gpt2",
                     stage=("load", "export", "optimize", "quantize:int8-dynamic", "evaluate", "runtime", "generate"))
def test_compress_a_text_file_to_a_bundle_that_generates(gpt2_bundle):
    result = gpt2_bundle
    assert [s.name for s in result.stages] == ["teacher", "onnx-fp32", "onnx-optimized", "quantized"]
    teacher, fp32, optimized, quantized = (s.metrics for s in result.stages)
    assert fp32["bits_per_byte"] == pytest.approx(teacher["bits_per_byte"], rel=1e-5)
    assert optimized["bits_per_byte"] == pytest.approx(teacher["bits_per_byte"], rel=1e-5)
    assert fp32["scored_bytes"] == teacher["scored_bytes"] > 1000
    assert 0 < abs(quantized["bits_per_byte_increase"]) < 0.5  # quantized: changed, but close
    assert "MatMulInteger" in quantized_ops(result)
    assert result.stages[3].size.raw_bytes < result.stages[1].size.raw_bytes
    # GPT-2's traced graph through onnxruntime's optimizer, kept or not by a timed decode step
    optimize = next(r for r in result.manifest["provenance"] if r["stage"] == "optimize")["measured"]
    assert optimize["fused_ops"]["SkipLayerNormalization"] > 0 and optimize["decode_ratio"] > 0
    assert optimize["kept"] is (optimize["decode_ratio"] < 1)
    manifest = json.loads((result.output / "manifest.json").read_text())
    assert manifest["task"] == "causal-lm" and manifest["evaluation"]["test_texts"] >= 1
    lm = load(result.output, threads=1)
    generation = lm.generate(PROMPTS[0], max_new_tokens=6)
    assert 1 <= len(generation.token_ids) <= 6 and isinstance(generation.text, str)
    assert lm.score([PROMPTS[0]]).tokens > 0


@pytest.mark.support(task="causal-lm", arch="llama",
                     stage=("load", "prune", "distill", "export", "quantize:int4", "evaluate", "runtime", "generate"))
def test_pruned_llama_distills_then_quantizes_to_int4(tiny_lms, bbc_txt, tmp_path):
    recipe = {**QUICK_LM, "prune": {"layers": 1, "ffn": 0.5},
              "distill": {"steps": 4, "batch_size": 4, "eval_every": 2, "lr": 1e-3}, "quantize": {"scheme": "int4"}}
    result = edgegolf.compress(str(tiny_lms["llama"]), output=tmp_path / "out", task="causal-lm", recipe=recipe,
                               overrides={"evaluate.data": str(bbc_txt)})
    # a LLaMA gets the fused cached graph (edgegolf/export/llm_graph.py): one layer, one GroupQueryAttention
    assert [s.name for s in result.stages] == ["teacher", "onnx-fp32", "onnx-optimized", "quantized"]
    optimize = next(r for r in result.manifest["provenance"] if r["stage"] == "optimize")
    assert optimize["measured"]["fused_ops"]["GroupQueryAttention"] == 1
    assert optimize["measured"]["decode_ratio"] > 0  # a decode step timed against the traced graph's: the review's call
    distill = next(r for r in result.manifest["provenance"] if r["stage"] == "distill")
    assert all("kl" in point for point in distill["measured"]["eval_history"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["intermediate_size"] == 32
    assert "MatMulNBits" in quantized_ops(result)
    fp32, quantized = result.stages[1], result.stages[-1]
    assert quantized.size.raw_bytes < fp32.size.raw_bytes
    assert quantized.metrics["bits_per_byte"] != fp32.metrics["bits_per_byte"]
    lm = load(tmp_path / "out", threads=1)
    assert lm.spec.extra["past_inputs"] == ["past.0.key", "past.0.value"]  # one layer left: one cache pair
    assert lm.generate("Oil", max_new_tokens=3).token_ids


def test_distill_loss_is_kl_over_real_positions_only():
    adapter = get_task("causal-lm")

    class Config:
        temperature, hidden_weight = 2.0, 0.0

    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 11)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    same, _ = adapter.distill_loss({"token_logits": teacher.clone()}, {"token_logits": teacher}, mask, Config)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    padded_only = teacher.clone()
    padded_only[1, 3:] += 5 * torch.randn(2, 11)  # differs only where the mask is 0
    loss, _ = adapter.distill_loss({"token_logits": padded_only}, {"token_logits": teacher}, mask, Config)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    loss, parts = adapter.distill_loss({"token_logits": torch.randn(2, 5, 11)}, {"token_logits": teacher}, mask, Config)
    assert float(loss) > 0.1 and parts["kl"] == pytest.approx(float(loss))


def test_text_files_split_into_held_out_chunks(tmp_path):
    paragraphs = [f"Paragraph {i} " + "word " * 120 for i in range(20)]
    chunks = text_chunks("\n\n".join(paragraphs))
    assert all(len(c) >= 1000 for c in chunks) and "".join(chunks).count("Paragraph") == 20

    class Settings:
        data, limit, test_fraction = str(tmp_path / "t.txt"), 0, 0.25

    (tmp_path / "t.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    split = get_task("causal-lm").load_split(Settings)
    assert split.test.texts == tuple(chunks[-len(split.test):]) and len(split.train) + len(split.test) == len(chunks)
    (tmp_path / "t.txt").write_text("one short line", encoding="utf-8")
    with pytest.raises(DataError, match="at least 2"):
        get_task("causal-lm").load_split(Settings)
    Settings.data = str(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="does not exist"):
        get_task("causal-lm").load_split(Settings)


def test_lm_bundle_runs_without_torch(gpt2_bundle):
    """The app side: load, score and generate with torch and transformers blocked from import."""
    from tests.builders.isolation import APP, BLOCKED

    blocker = APP.split("import json")[0]
    app = blocker + (
        "import json\nfrom edgegolf.runtime import load\n"
        "lm = load(sys.argv[2], threads=1)\n"
        "print(json.dumps({'ids': lm.generate('Shares in the', max_new_tokens=5).token_ids,"
        " 'bpb': lm.score(['Shares in the bank fell.']).bits_per_byte,"
        " 'blocked': sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in BLOCKED))}))\n")
    done = subprocess.run([sys.executable, "-c", app, ",".join(BLOCKED), str(gpt2_bundle.output)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["blocked"] == [] and len(result["ids"]) >= 1 and result["bpb"] > 0
    assert result["ids"] == load(gpt2_bundle.output, threads=1).generate("Shares in the", max_new_tokens=5).token_ids


def test_spec_round_trips_the_cache_description(tiny_lms):
    adapter, model, tokenizer = load_tiny_lm(tiny_lms["gpt2"])
    spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), 64)
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.extra["past_inputs"][:2] == ["past.0.key", "past.0.value"]
    assert again.input_names == ("input_ids", "attention_mask")
