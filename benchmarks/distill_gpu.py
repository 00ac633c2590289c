"""Distillation on a GPU through edgegolf's own `distill`: a MiniLM-shaped teacher (random
weights: the cost depends on the shape, and the real model does not fit the GPU machine's
transfer limit), cut as the README cuts it (layers=3, heads=0.5, ffn=0.5), trained on BBC News
at batch 64 x 128 tokens, bf16 autocast and fp32 on CUDA in one run; the run's own report
gives steps, wall time and tokens/s (refit included in the wall time, not in tokens/s).

    PYTHONPATH=. python benchmarks/distill_gpu.py [--steps 200] [--batch 64]

Measured 2026-11-30 on an NVIDIA H200 (torch 2.11+cu130): see the note of issue 16.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from benchmarks.gpu_targets import default_model, run_with_one_line_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    from transformers import AutoModel, AutoTokenizer

    from edgegolf.compression.distill import DistillConfig, distill
    from edgegolf.compression.prune import PruneConfig, prune_model
    from edgegolf.devices.cuda import check_torch_cuda
    from edgegolf.measure.evaluate import default_split

    check_torch_cuda()
    texts = list(default_split().train.texts)
    with tempfile.TemporaryDirectory() as tmp:
        folder, label = default_model(Path(tmp))
        teacher = AutoModel.from_pretrained(str(folder)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        print(f"\n{label}, {len(texts)} BBC train texts, {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
        print("| precision | steps | batch x len | wall s | tokens/s (training) | loss first -> last |")
        print("|---|---|---|---|---|---|")
        for precision in ("bf16", "fp32"):
            student, _, _ = prune_model(teacher, tokenizer, PruneConfig(layers=3, heads=0.5, ffn=0.5),
                                        calibration_texts=texts[:64])
            config = DistillConfig(steps=args.steps, batch_size=args.batch, max_length=128, device="cuda",
                                   precision=precision, eval_every=args.steps)
            report = distill(teacher, student, tokenizer, "feature-extraction", config, texts=texts)
            print(f"| {report.precision} | {report.steps_run} | {args.batch} x 128 | {report.seconds:.1f} | "
                  f"{report.tokens_per_s:,.0f} | {report.loss_first:.4f} -> {report.loss_last:.4f} |", flush=True)


if __name__ == "__main__":
    run_with_one_line_errors(main)
