"""Does the latency harness measure the model, or itself?

Exports the real all-MiniLM-L6-v2 (torch.onnx, dynamo=False) into a temporary folder and,
in interleaved rounds on one thread, times the same inputs five ways:

  bare loop          a hand-written perf_counter_ns loop around InferenceSession.run
  harness/session    measure_latency around the same InferenceSession.run
  harness/runtime A  measure_latency around edgegolf.runtime's TaskModel.run (what bench_onnx times)
  harness/runtime B  the same again: how well two harness runs agree
  bench_onnx         the full entry the pipeline calls (new session, feeds, harness)

Targets: harness/session within 2% of the bare loop; runtime A and B within a few % of
each other (noise on a shared 2-core box: 1-thread p50 moved 2-10% between quiet runs).

    PYTHONPATH=. python benchmarks/harness_overhead.py [--rounds 5] [--runs 50] [--seq 128]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def export_minilm(folder: Path) -> tuple[Path, Path]:
    """The fp32 MiniLM graph and tokenizer, exported by edgegolf's own pipeline."""
    from tests.builders.minilm import fp32_minilm_bundle

    bundle = fp32_minilm_bundle(folder / "minilm")
    return bundle / "model.onnx", bundle / "tokenizer.json"


def bare_loop(session, feeds: dict, warmup: int, runs: int) -> float:
    """Median ms of a loop written by hand, the way one would without a harness."""
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, feeds)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from edgegolf.data import load_labelled_texts
    from edgegolf.devices import (
        bench_onnx,
        fixed_shape_feeds,
        get_profile,
        measure_latency,
    )
    from edgegolf.runtime.models import open_model
    from edgegolf.runtime.session import create_session
    from edgegolf.runtime.spec import ModelSpec

    profile = get_profile("cpu-1")
    texts = list(load_labelled_texts().texts[:16])
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        onnx_path, tokenizer_path = export_minilm(Path(tmp))
        print(f"exported MiniLM to ONNX in {time.perf_counter() - started:.1f} s")
        spec = ModelSpec(task="feature-extraction", input_names=("input_ids", "attention_mask", "token_type_ids"),
                         output_names=("last_hidden_state",), max_length=256, pad_token_id=0, pad_token="[PAD]")
        model = open_model(onnx_path, tokenizer_path, spec, threads=profile.resolved_threads)
        feeds = fixed_shape_feeds(model, texts, batch=args.batch, seq=args.seq)
        session = create_session(onnx_path, threads=profile.resolved_threads)

        def harness(fn) -> float:
            return measure_latency(fn, warmup=args.warmup, runs=args.runs, max_seconds=None,
                                   min_runs=args.runs).p50_ms

        methods = {
            "bare loop": lambda: bare_loop(session, feeds, args.warmup, args.runs),
            "harness/session": lambda: harness(lambda: session.run(None, feeds)),
            "harness/runtime A": lambda: harness(lambda: model.run(feeds)),
            "harness/runtime B": lambda: harness(lambda: model.run(feeds)),
            "bench_onnx": lambda: bench_onnx(onnx_path, tokenizer_path, spec, profile, texts, batch=args.batch,
                                             seq=args.seq, warmup=args.warmup, runs=args.runs, max_seconds=None,
                                             min_runs=args.runs).p50_ms,
        }
        names = list(methods)
        results: dict[str, list[float]] = {n: [] for n in names}
        load = os.getloadavg()[0]
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate: no method always goes first
            for name in order:
                results[name].append(methods[name]())
        load_end = os.getloadavg()[0]

    medians = {n: float(np.median(v)) for n, v in results.items()}
    best = {n: float(np.min(v)) for n, v in results.items()}  # least disturbed round: robust to neighbours' load
    bare = medians["bare loop"]
    empty = measure_latency(lambda: None, warmup=100, runs=10_000, max_seconds=None).p50_ms
    print(f"\nall-MiniLM-L6-v2 fp32, batch {args.batch} x {args.seq} tokens, {profile.resolved_threads} thread, "
          f"{args.rounds} interleaved rounds x {args.runs} runs; load average {load:.2f} -> {load_end:.2f} "
          f"on {os.cpu_count()} cores\n")
    print(f"| {'method':<18} | median p50 ms | vs bare | best-round p50 ms | vs bare | p50 per round (ms) |")
    print(f"|{'-' * 20}|{'-' * 15}|{'-' * 9}|{'-' * 19}|{'-' * 9}|{'-' * 20}|")
    for name in names:
        rounds = " ".join(f"{v:.2f}" for v in results[name])
        print(f"| {name:<18} | {medians[name]:13.3f} | {medians[name] / bare:7.3f} | {best[name]:17.3f} | "
              f"{best[name] / best['bare loop']:7.3f} | {rounds} |")
    a, b = medians["harness/runtime A"], medians["harness/runtime B"]
    overhead = medians["harness/session"] / bare - 1
    print(f"\nharness overhead vs bare loop: {100 * overhead:+.2f}% of medians, "
          f"{100 * (best['harness/session'] / best['bare loop'] - 1):+.2f}% of best rounds (target <= 2%)")
    print(f"harness on an empty callable: p50 {1000 * empty:.2f} us per call "
          f"({100 * empty / bare:.4f}% of one model call)")
    ba, bb = best["harness/runtime A"], best["harness/runtime B"]
    print(f"runtime A vs B p50 agreement: {100 * abs(a - b) / min(a, b):.2f}% apart (medians), "
          f"{100 * abs(ba - bb) / min(ba, bb):.2f}% (best rounds)")
    print(f"runtime TaskModel.run vs bare session.run: {100 * (a / medians['harness/session'] - 1):+.2f}% (medians), "
          f"{100 * (ba / best['harness/session'] - 1):+.2f}% (best rounds)")
    if load_end > (os.cpu_count() or 1) / 2:
        print("the machine was busy: trust the best-round columns over the medians, or rerun when it is quiet")


if __name__ == "__main__":
    main()
