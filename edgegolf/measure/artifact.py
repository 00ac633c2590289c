"""One stage's artifact measured: task metrics (`evaluate`), latency on every device profile
the recipe names, peak memory of a fresh process, and size, as a `StageResult`.

ONNX artifacts are scored and timed through `edgegolf.runtime`, the code an app embeds;
the teacher through PyTorch, fed the very same tokenized text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgegolf.devices.inputs import bench_onnx, fixed_shape_feeds
from edgegolf.devices.latency import LatencyStats, measure_latency
from edgegolf.devices.memory import peak_rss_onnx, peak_rss_torch
from edgegolf.devices.profiles import DeviceProfile, get_profile, pinned
from edgegolf.devices.size import SizeReport, measure_size
from edgegolf.measure.evaluate import Evaluation, torch_threads, work_threads
from edgegolf.progress import steps
from edgegolf.recipe import BenchSettings


@dataclass
class StageResult:
    """What was measured on one stage's artifact."""

    name: str  # teacher | onnx-fp32 | onnx-optimized | quantized | a reference's name
    description: str
    files: list[Path]  # what the runtime (or PyTorch, for the teacher) needs
    size: SizeReport
    latency: LatencyStats
    peak_rss_bytes: int
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)
    latency_also: dict[str, LatencyStats] = field(default_factory=dict)  # bench.also profiles
    reference: bool = False  # measured for comparison; not a step of the chain
    eval_batch: int = 1  # texts per padded batch its evaluation ran at (1: its outputs depend on their neighbours)

    def summary(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "reference": self.reference,
            "size_bytes": self.size.raw_bytes,
            "zstd_bytes": self.size.zstd_bytes,
            "latency": self.latency.to_dict(),
            "latency_also": {name: stats.to_dict() for name, stats in self.latency_also.items()},
            "peak_rss_bytes": self.peak_rss_bytes,
            "metrics": self.metrics,
            "notes": self.notes,
            "eval_batch": self.eval_batch,
        }


def weight_files(folder: Path) -> list[Path]:
    """A Hugging Face folder's weights and config: what PyTorch loads."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return files + [p for p in (folder / "config.json",) if p.exists()]


class Measurer:
    """Scores, times and sizes artifacts for one compress run; never changes a model."""

    def __init__(self, evaluation: Evaluation, bench: BenchSettings, profile: DeviceProfile,
                 teacher_outputs: Any = None):
        self.evaluation = evaluation
        # a file cache shared by processes (edgegolf.search.teacher_cache.TeacherOutputs): a search's workers
        self.teacher_outputs = teacher_outputs
        self.bench = bench
        self.profile = profile
        # the budget's device first, then the ones timed for the report
        self.profiles = [profile] + [get_profile(name) for name in bench.also if name != profile.name]
        self.bench_texts = list(evaluation.split.train.texts[:16])

    def teacher(self, model, encoder, source_dir: Path, tokenizer_json: Path):
        """The PyTorch teacher -> (StageResult, its outputs: the reference of every later score)."""
        import torch

        bench, spec = self.bench, encoder.spec
        with torch_threads(work_threads()):
            if self.teacher_outputs is not None:
                key = self.teacher_outputs.key(source_dir, self.evaluation, spec.max_length)
                outputs, metrics = self.teacher_outputs.fetch(key, lambda: self.evaluation.teacher(model, encoder))
            else:
                outputs, metrics = self.evaluation.teacher(model, encoder)
        feeds = fixed_shape_feeds(encoder, self.bench_texts, batch=bench.batch, seq=bench.seq)
        module = self.evaluation.adapter.export_module(model)
        tensors = [torch.from_numpy(feeds[n]) for n in spec.input_names]
        latency = {}
        with self._timing("teacher") as advance:
            for profile in self.profiles:
                with torch_threads(profile.threads or os.cpu_count() or 1), pinned(profile), torch.inference_mode():
                    latency[profile.name] = measure_latency(lambda: module(*tensors), warmup=bench.warmup,
                                                            runs=bench.runs, max_seconds=bench.max_seconds)
                advance(1)
        with steps("peak memory of teacher (a fresh process)", 1) as advance:
            rss = peak_rss_torch(source_dir, spec.task, threads=self.profile.threads, batch=bench.batch,
                                 seq=bench.seq, texts=self.bench_texts, cores=self.profile.cores)
            advance(1)
        files = weight_files(source_dir) + [tokenizer_json]
        stage = self._result("teacher", f"PyTorch fp32 {type(model).__name__}", files, latency, rss, metrics)
        stage.eval_batch = self.evaluation.teacher_batch()
        return stage, outputs

    def interleaved_ratio(self, graph_a: Path, graph_b: Path, tokenizer_json: Path, spec
                          ) -> tuple[float, float, float] | None:
        """p50 of graph B over graph A with its 95% interval, timed interleaved on the budget's
        profile (edgegolf.devices.compare); None where that profile cannot time graphs side by side."""
        from edgegolf.devices.artifact import Artifact
        from edgegolf.devices.compare import interleaved_ratio

        a, b = (Artifact(path, path.name, path, tokenizer_json, spec, None) for path in (graph_a, graph_b))
        return interleaved_ratio(a, b, self.profile, self.bench_texts, batch=self.bench.batch, seq=self.bench.seq)

    def _timing(self, name: str):
        """Progress of the latency runs: one step per device profile, each at most max_seconds."""
        return steps(f"time {name} on {len(self.profiles)} profile(s), <= {self.bench.max_seconds:g} s each",
                     len(self.profiles))

    def eval_batch(self, batch_independent: bool) -> int:
        """The evaluation batch of a graph: padded batches only where the task and the graph
        both keep a text's result apart from its neighbours'."""
        return self.evaluation.batch if batch_independent and self.evaluation.adapter.batch_independent else 1

    def graph(self, name: str, description: str, onnx_path: Path, tokenizer_json: Path, spec, *,
              teacher_outputs, model_config, reference: bool = False, batch_independent: bool = False
              ) -> StageResult:
        """An ONNX graph, through the runtime an app embeds."""
        from edgegolf.runtime.models import open_model

        bench = self.bench
        batch = self.eval_batch(batch_independent)
        model = open_model(onnx_path, tokenizer_json, spec, threads=work_threads())
        metrics = self.evaluation.artifact(model, name, teacher_outputs, model_config, batch)
        latency = {}
        with self._timing(name) as advance:
            for profile in self.profiles:
                latency[profile.name] = bench_onnx(onnx_path, tokenizer_json, spec, profile, self.bench_texts,
                                                   batch=bench.batch, seq=bench.seq, warmup=bench.warmup,
                                                   runs=bench.runs, max_seconds=bench.max_seconds)
                advance(1)
        with steps(f"peak memory of {name} (a fresh process)", 1) as advance:
            rss = peak_rss_onnx(onnx_path, tokenizer_json, spec, threads=self.profile.threads,
                                batch=bench.batch, seq=bench.seq, texts=self.bench_texts, cores=self.profile.cores)
            advance(1)
        files = [onnx_path, tokenizer_json]  # measure_size adds external data files
        result = self._result(name, description, files, latency, rss, metrics, reference)
        result.eval_batch = batch
        return result

    def _result(self, name, description, files, latency: dict[str, LatencyStats], rss, metrics,
                reference: bool = False) -> StageResult:
        main = latency.pop(self.profile.name)
        return StageResult(name, description, files, measure_size(files), main, rss, metrics,
                           latency_also=latency, reference=reference)
