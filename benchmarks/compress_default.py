"""The default recipe on the bundled all-MiniLM-L6-v2, against what people do by hand.

One run measures: the PyTorch fp32 teacher; the plain fp32 ONNX export; onnxruntime's
`quantize_dynamic` with default arguments; and edgegolf's default recipe (fused graph where
faster, then tuned int8). For each: size raw and zstd, latency p50/p90/p99 at batch 1 x 128
with 1 and with 2 threads, peak RSS of a fresh process, fidelity and linear-probe accuracy
on BBC News. Then it checks the targets of the default recipe against the fp32 export
measured in the same run.

    python benchmarks/compress_default.py [--eval-limit N] [--keep out-dir]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from edgegolf.pipeline import compress

MB = 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-limit", type=int, default=0, help="stratified subset of BBC News (0 = all 2,225)")
    parser.add_argument("--keep", type=Path, help="write the bundle here instead of a temporary folder")
    args = parser.parse_args()
    # edgegolf's progress only: onnxruntime's quantizer logs every tensor at INFO
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("edgegolf").setLevel(logging.INFO)
    recipe = {
        "bench": {"device": "cpu-1", "also": ["cpu-2"], "runs": 300, "warmup": 20, "max_seconds": 20.0},
        "evaluate": {"limit": args.eval_limit, "compare": ["ort-quantize-dynamic"]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "bundle"
        result = compress(None, output=out, recipe=recipe, force=args.keep is not None)
    by_name = {s.name: s for s in result.stages}
    rows = [("PyTorch fp32 (teacher)", by_name["teacher"]), ("fp32 ONNX export", by_name["onnx-fp32"]),
            ("ort quantize_dynamic defaults", by_name["ort-quantize-dynamic"])]
    if "onnx-optimized" in by_name:
        rows.append(("fused graph (fp32)", by_name["onnx-optimized"]))
    rows.append(("edgegolf default recipe", result.final))

    evaluation = result.manifest["evaluation"]
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}; BBC News texts: {evaluation['train_texts']} train "
          f"+ {evaluation['test_texts']} test; latency at batch 1 x 128 tokens")
    header = ("artifact", "MB", "zstd MB", "1t p50/p90/p99 ms", "2t p50/p90/p99 ms", "RSS MB", "cos mean/min",
              "probe acc %")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for label, s in rows:
        two = s.latency_also["cpu-2"]
        print(f"| {label} | {s.size.raw_bytes / MB:.1f} | {s.size.zstd_bytes / MB:.1f} | "
              f"{s.latency.p50_ms:.2f} / {s.latency.p90_ms:.2f} / {s.latency.p99_ms:.2f} | "
              f"{two.p50_ms:.2f} / {two.p90_ms:.2f} / {two.p99_ms:.2f} | {s.peak_rss_bytes / MB:.0f} | "
              f"{s.metrics['fidelity_mean_cosine']:.4f} / {s.metrics['fidelity_min_cosine']:.4f} | "
              f"{s.metrics['accuracy']:.2f} |")

    fp32, final, teacher = by_name["onnx-fp32"], result.final, by_name["teacher"]
    naive = by_name["ort-quantize-dynamic"]
    ratio = final.latency.p50_ms / fp32.latency.p50_ms
    drop = teacher.metrics["accuracy"] - final.metrics["accuracy"]
    checks = [
        ("size <= 24 MB", final.size.raw_bytes / MB <= 24, f"{final.size.raw_bytes / MB:.1f} MB"),
        ("1-thread p50 <= 0.6x fp32 export", ratio <= 0.6, f"{ratio:.2f}x (naive int8: "
                                                           f"{naive.latency.p50_ms / fp32.latency.p50_ms:.2f}x)"),
        ("linear-probe drop <= 0.5 point", drop <= 0.5, f"{drop:+.2f} points"),
        ("mean cosine fidelity >= 0.99", final.metrics["fidelity_mean_cosine"] >= 0.99,
         f"{final.metrics['fidelity_mean_cosine']:.4f} (naive int8: {naive.metrics['fidelity_mean_cosine']:.4f})"),
    ]
    print()
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    for s in result.stages:
        if s.latency.spread_warning:
            print(f"warning {s.name}: {s.latency.spread_warning}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
