"""Which stages' outputs depend on their batch neighbours: all-MiniLM-L6-v2 on BBC News texts,
each text embedded alone (batch 1) and inside padded batches of texts of other lengths.

For the PyTorch teacher, the fp32 ONNX export and every built-in quantization scheme of it,
prints the largest absolute difference of an embedding and the lowest cosine between the two.
Evaluation (edgegolf/measure/evaluate.py) batches a stage only where its quantization scheme
declares `batch_independent`; this is the measurement that declaration rests on.

    nice python benchmarks/batch_independence.py [--texts 64] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgegolf.compression.quantize import SCHEMES, quantize
from edgegolf.measure.evaluate import default_split
from edgegolf.runtime.models import open_model
from edgegolf.runtime.tokenize import make_tokenizer
from edgegolf.source import resolve_source
from edgegolf.tasks.registry import get_task


def compare(single: np.ndarray, batched: np.ndarray) -> tuple[float, float]:
    a = single / np.linalg.norm(single, axis=1, keepdims=True)
    b = batched / np.linalg.norm(batched, axis=1, keepdims=True)
    return float(np.abs(single - batched).max()), float((a * b).sum(1).min())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    adapter = get_task("feature-extraction")
    source = resolve_source(None)
    model = adapter.load_model(source.path)
    tokenizer = AutoTokenizer.from_pretrained(str(source.path))
    split = default_split()
    # texts of every length, cut so that a batch mixes short and long ones (padding matters)
    texts = [t[: 80 + 40 * (i % 12)] for i, t in enumerate(split.test.texts[: args.texts])]
    calibration = list(split.train.texts[:64])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(tmp)
        tokenizer_json = folder / "tokenizer.json"
        spec = adapter.model_spec(model, tokenizer, adapter.input_names(model, tokenizer), 128)
        encoder = make_tokenizer(tokenizer_json, spec)
        single = np.concatenate([adapter.teacher_rows(model, encoder, [t]) for t in texts])
        batched = np.concatenate([adapter.teacher_rows(model, encoder, texts[i:i + args.batch])
                                  for i in range(0, len(texts), args.batch)])
        rows.append(("PyTorch fp32 (teacher)", *compare(single, batched)))
        feeds = [encoder.encode(texts[:2]), encoder.encode([texts[3]])]
        fp32 = adapter.export(model, folder / "fp32.onnx", input_names=spec.input_names,
                              output_names=spec.output_names, sample_feeds=feeds[0], verify_feeds=feeds,
                              opset=17, atol=1e-3).path
        graphs = {"onnx fp32": (fp32, True)}
        calibration_feeds = [encoder.encode([t]) for t in calibration]
        for name, cls in SCHEMES.items():
            if name == "none":
                continue
            path = quantize(fp32, folder / f"{name}.onnx", cls(), calibration_feeds=calibration_feeds).path
            graphs[name] = (Path(path), cls.batch_independent)
        for name, (path, declared) in graphs.items():
            runtime = open_model(path, tokenizer_json, spec, threads=1)
            single = runtime.embed(texts, batch_size=1)
            batched = runtime.embed(texts, batch_size=args.batch)
            rows.append((f"{name} (declared {'independent' if declared else 'dependent'})", *compare(single, batched)))
    print(f"{len(texts)} BBC News texts of 80-520 characters, batch 1 against padded batches of {args.batch}")
    print("| stage | max abs diff | min cosine |\n|---|---|---|")
    for name, diff, cosine in rows:
        print(f"| {name} | {diff:.2e} | {cosine:.6f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
