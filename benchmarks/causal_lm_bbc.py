"""A small causal LM trained on BBC News on the CPU, then measured in PyTorch, fp32, int8 and int4 ONNX.

    python benchmarks/causal_lm_bbc.py --minutes 4 --threads 1

1. A byte-level BPE (LLaMA-style: <s> before each text) is trained on the BBC train split.
2. A LLaMA-config model (~1 M parameters) is trained on the train split for --minutes.
3. The model is exported with its key/value cache (edgegolf/export/causal.py) and quantized
   (int8 dynamic, int4 weight-only MatMulNBits) by edgegolf.compression.quantize.
4. Each artifact is measured in the same run: bits per byte and perplexity on held-out BBC
   articles (sliding windows, edgegolf.runtime.causal_lm.score_text: the PyTorch model and the
   ONNX graphs go through the same scoring code), bytes on disk, latency of one decoding step
   with the cache (context --context tokens), and whether greedy generation through the
   runtime gives PyTorch's greedy tokens (model.generate).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.builders.causal_lm

from edgegolf.compression.quantize import Int4WeightOnly, Int8Dynamic, quantize
from edgegolf.data import load_labelled_texts, stratified_split
from edgegolf.measure.evaluate import DEFAULTS  # the [evaluate] split defaults
from edgegolf.devices.latency import measure_latency
from edgegolf.devices.size import measure_size
from edgegolf.export.causal import CausalWithCache, cache_names, export_causal_lm
from edgegolf.runtime import open_model
from edgegolf.runtime.causal_lm import LMScore, score_text, untruncated
from edgegolf.tasks import get_task
from tests.builders.causal_lm import bbc_bpe

log = logging.getLogger("causal_lm_bbc")


def train(model, ids: np.ndarray, *, minutes: float, seq: int, batch: int, lr: float, seed: int) -> dict:
    """Next-token training on random windows of the token stream, for `minutes` of this process's CPU time.

    CPU time, not wall time: on a shared machine the model gets the same training however busy
    the other processes keep the cores.
    """
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    model.train()
    started, cpu_started, step, losses = time.perf_counter(), time.process_time(), 0, []
    budget = minutes * 60
    while (elapsed := time.process_time() - cpu_started) < budget:
        # linear warm-up over 30 steps, then cosine decay over the time budget
        factor = min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget)))
        for group in optimizer.param_groups:
            group["lr"] = lr * max(factor, 0.05)
        starts = rng.integers(0, len(ids) - seq - 1, size=batch)
        x = torch.from_numpy(np.stack([ids[s:s + seq] for s in starts]))
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            log.info("step %d, %.0f CPU s: loss %.3f", step, elapsed, np.mean(losses[-50:]))
    model.eval()
    return {"steps": step, "tokens": step * batch * seq, "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started,
            "final_loss": float(np.mean(losses[-50:]))}


def torch_score(model, tokenizer, texts, window: int) -> LMScore:
    def logits_of(ids):
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(ids[None])).logits[0].float().numpy()

    total = LMScore()
    for text in texts:
        total = total + score_text(text, tokenizer, logits_of, window)
    return total


def torch_greedy(model, ids: list[int], n: int) -> list[int]:
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n, pad_token_id=0)
    return out[0, len(ids):].tolist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget, minutes of CPU time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--window", type=int, default=128, help="context length (training, scoring window)")
    parser.add_argument("--eval-texts", type=int, default=100, help="held-out BBC articles scored")
    parser.add_argument("--context", type=int, default=64, help="cache length when timing one decoding step")
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="folder for the model and graphs (default: temporary)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("edgegolf", "onnxruntime", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="causal-lm-bbc-"))
    load_before = os.getloadavg()

    from transformers import AutoModelForCausalLM, LlamaConfig

    split = stratified_split(load_labelled_texts(), test_fraction=DEFAULTS.test_fraction, seed=args.seed)
    train_texts, test_texts = list(split.train.texts), list(split.test.texts[: args.eval_texts])
    tokenizer = bbc_bpe(bos=True, vocab_size=args.vocab, texts=train_texts)
    stream = np.concatenate([tokenizer(t).input_ids + [tokenizer.eos_token_id] for t in train_texts]).astype(np.int64)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32, num_key_value_heads=2,
                         max_position_embeddings=args.window, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    log.info("training %.2f M parameters on %d train tokens for %.1f min", params / 1e6, len(stream), args.minutes)
    trained = train(model, stream, minutes=args.minutes, seq=args.window, batch=16, lr=3e-3, seed=args.seed)
    folder = work / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps(trained, indent=1), encoding="utf-8")

    # reload as the pipeline does (eager attention), then export and quantize
    adapter = get_task("causal-lm")
    model = adapter.load_model(folder)
    spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), args.window)
    tokenizer_json = folder / "tokenizer.json"

    def encode(texts):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=args.window, return_tensors="np")
        return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    graphs = {"onnx fp32": work / "model-fp32.onnx"}
    report = export_causal_lm(model, graphs["onnx fp32"], sample_feeds=encode([t[:200] for t in train_texts[:2]]),
                              verify_feeds=[encode([train_texts[2]]), encode([train_texts[3][:300], train_texts[4][:80]])])
    for label, config_ in (("onnx int8", Int8Dynamic()), ("onnx int4", Int4WeightOnly())):
        graphs[label] = work / f"model-{label.split()[1]}.onnx"
        quantize(graphs["onnx fp32"], graphs[label], config_)

    plain = untruncated(make_fast(tokenizer_json))
    prompts = [" ".join(t.split()[:12]) for t in test_texts[:8]]
    prompt_ids = [plain.encode(p).ids for p in prompts]
    want = [torch_greedy(model, ids, args.gen_tokens) for ids in prompt_ids]

    rows = []
    t = time.perf_counter()
    score = torch_score(model, plain, test_texts, args.window)
    context_ids = plain.encode(" ".join(test_texts)).ids[: args.context]
    module = CausalWithCache(model)
    with torch.inference_mode():
        outputs = module(torch.tensor([context_ids]), torch.ones(1, len(context_ids), dtype=torch.long))
    past = outputs[1:]
    step_ids, step_mask = torch.tensor([[context_ids[-1]]]), torch.ones(1, len(context_ids) + 1, dtype=torch.long)
    with torch.inference_mode():
        step = measure_latency(lambda: module(step_ids, step_mask, *past), warmup=20, runs=300, max_seconds=20)
    weights = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    rows.append(("pytorch fp32", measure_size(weights).raw_bytes, score, step, None, time.perf_counter() - t))
    for label, path in graphs.items():
        t = time.perf_counter()
        lm = open_model(path, tokenizer_json, spec, threads=args.threads)
        score = lm.score(test_texts)
        _, state = lm.prefill(context_ids[:-1])
        step = measure_latency(lambda lm=lm, state=state: lm.step(context_ids[-1], state), warmup=20, runs=300,
                               max_seconds=20)
        got = [lm.generate(p, max_new_tokens=args.gen_tokens, stop_at_eos=False).token_ids for p in prompts]
        # (prompts whose greedy tokens all equal PyTorch's, mean tokens equal before the first difference)
        agree = (sum(g == w for g, w in zip(got, want)), float(np.mean([common_prefix(g, w) for g, w in zip(got, want)])))
        rows.append((label, measure_size([path]).raw_bytes, score, step, agree, time.perf_counter() - t))

    load_after = os.getloadavg()
    base = rows[0]
    print()
    print(f"causal LM on BBC News: LLaMA config, {params / 1e6:.2f} M parameters, vocab {len(tokenizer)}, "
          f"{args.layers} layers x {args.hidden}; trained {trained['steps']} steps ({trained['tokens'] / 1e6:.2f} M tokens, "
          f"{trained['cpu_seconds'] / 60:.1f} CPU min in {trained['seconds'] / 60:.1f} min, final train loss {trained['final_loss']:.3f}) on {args.threads} thread(s)")
    print(f"held out: {len(test_texts)} BBC articles, {base[2].tokens} tokens, {base[2].bytes} bytes; "
          f"window {args.window}, stride {args.window // 2}; export max abs diff to PyTorch {report.max_abs_diff:.2e}")
    print(f"step latency: one token after {args.context} cached tokens, batch 1, {args.threads} thread(s), median of "
          f"timed runs; greedy: of {len(prompts)} prompts x {args.gen_tokens} tokens, how many prompts' runtime greedy "
          "tokens all equal PyTorch's model.generate, and the mean number of tokens equal before the first difference")
    print()
    print("| model | bytes | ratio | bits/byte | perplexity | top-1 | step p50 ms | step p90 ms | x PyTorch | "
          "greedy == PyTorch | tokens before first difference |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, size, score, step, agree, _ in rows:
        print(f"| {label} | {size:,} | {size / base[1]:.2f} | {score.bits_per_byte:.4f} | {score.perplexity:.2f} | "
              f"{100 * score.accuracy:.1f}% | {step.p50_ms:.3f} | {step.p90_ms:.3f} | {step.p50_ms / base[3].p50_ms:.2f} | "
              f"{'-' if agree is None else f'{agree[0]}/{len(prompts)}'} | {'-' if agree is None else f'{agree[1]:.1f}'} |")
    print()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores); "
          f"cache inputs per step: {len(cache_names(config.num_hidden_layers)[0])}; work folder {work}")
    return 0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def make_fast(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


if __name__ == "__main__":
    raise SystemExit(main())
