"""The compress pipeline: the stages in order, the measurements after each, the provenance.

    load -> export -> optimize -> quantize -> (evaluate + bench after each) -> verdict -> bundle

Every ONNX artifact is evaluated and timed through `edgegolf.runtime`, the code an app
embeds, and the teacher is fed the very same tokenized text. Each stage appends a record
(settings, measurements, seconds, input and output hashes) to the provenance that ends up
in the bundle's manifest.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgegolf import __version__
from edgegolf.bundle import BundleWriter, check_output
from edgegolf.data import Split, load_labelled_texts, stratified_split
from edgegolf.devices.cuda import ort_providers
from edgegolf.devices.inputs import bench_onnx, fixed_shape_feeds
from edgegolf.devices.latency import LatencyStats, measure_latency
from edgegolf.devices.memory import peak_rss_onnx, peak_rss_torch
from edgegolf.devices.profiles import DeviceProfile, get_profile, pinned
from edgegolf.devices.size import SizeReport, measure_size
from edgegolf.errors import ExportError, RecipeError, SourceError
from edgegolf.layouts import check_layouts, write_layouts
from edgegolf.progress import track
from edgegolf.recipe import Budget, Recipe, load_recipe_file, quant_config
from edgegolf.runtime.manifest import sha256_file
from edgegolf.runtime.models import open_model
from edgegolf.runtime.tokenize import TextEncoder, make_tokenizer
from edgegolf.source import Source, resolve_source
from edgegolf.tasks import get_task, infer_task
from edgegolf.tasks.base import Outputs, TaskAdapter
from edgegolf.verdict import Verdict, check_budget

log = logging.getLogger(__name__)

MB = 1e6


@dataclass
class StageResult:
    """What was measured on one stage's artifact."""

    name: str  # teacher | onnx-fp32 | onnx-optimized | quantized
    description: str
    files: list[Path]  # what the runtime (or PyTorch, for the teacher) needs
    size: SizeReport
    latency: LatencyStats
    peak_rss_bytes: int
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)
    latency_also: dict[str, LatencyStats] = field(default_factory=dict)  # bench.also profiles
    reference: bool = False  # measured for comparison; not a step of the chain

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
        }


@dataclass
class CompressResult:
    output: Path
    task: str
    source: Source
    recipe: Recipe
    budget: Budget
    profile: DeviceProfile
    stages: list[StageResult]
    verdict: Verdict
    manifest: dict[str, Any]

    @property
    def final(self) -> StageResult:
        """The last stage of the chain: the artifact in the bundle."""
        return [s for s in self.stages if not s.reference][-1]

    @property
    def teacher(self) -> StageResult:
        return self.stages[0]


def build_recipe(recipe: Recipe | dict | str | Path | None = None, *, overrides: dict[str, Any] | None = None,
                 budget: Budget | dict | str | None = None) -> tuple[Recipe, Budget]:
    """One path for TOML files, dicts and CLI flags: file, then overrides, then validation."""
    from edgegolf.recipe import set_dotted

    budget_table: dict[str, Any] = {}
    if isinstance(recipe, Recipe):
        table = recipe.to_dict()
    elif isinstance(recipe, dict):
        table = {k: (dict(v) if isinstance(v, dict) else v) for k, v in recipe.items()}
        budget_table = table.pop("budget", {})
    elif recipe is not None:
        table, budget_table = load_recipe_file(recipe)
    else:
        table = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(table, dotted, value)
    parsed_recipe = Recipe.from_dict(table)
    if isinstance(budget, Budget):
        parsed_budget = budget
    elif isinstance(budget, str):
        parsed_budget = Budget.parse(budget)
    elif isinstance(budget, dict):
        parsed_budget = Budget.from_dict(budget)
    else:
        parsed_budget = Budget.from_dict(budget_table)
    return parsed_recipe, parsed_budget


class _Run:
    """State shared by the stages of one compress run."""

    def __init__(self, recipe: Recipe, profile: DeviceProfile, split: Split, adapter: TaskAdapter,
                 teacher, teacher_json: Path, teacher_encoder: TextEncoder, source_dir: Path,
                 trust_remote_code: bool):
        self.recipe = recipe
        self.source_dir = source_dir
        self.trust_remote_code = trust_remote_code
        self.profile = profile
        self.split = split
        self.adapter = adapter
        self.teacher = teacher
        self.teacher_encoder = teacher_encoder
        self.teacher_json = teacher_json
        # The model that is exported, and what feeds it: the teacher itself unless pruned.
        self.student = teacher
        self.tokenizer_json: Path | None = None
        self.spec = teacher_encoder.spec
        self.eval_threads = work_threads()
        # the budget's device first, then the ones timed for the report
        self.profiles = [profile] + [get_profile(name) for name in recipe.bench.also if name != profile.name]
        self.bench_texts = list(split.train.texts[:16])
        self.teacher_outputs: Outputs | None = None
        self.provenance: list[dict[str, Any]] = []
        self.prune_report = None  # edgegolf.compression.prune.PruneReport when pruned
        self.distill = None  # edgegolf.compression.distill.DistillReport when distilled

    def again(self, recipe: Recipe) -> "_Run":
        """A new run over this run's loaded and measured teacher (StageMemo: a search's next trial)."""
        run = _Run(recipe, self.profile, self.split, self.adapter, self.teacher, self.teacher_json,
                   self.teacher_encoder, self.source_dir, self.trust_remote_code)
        run.teacher_outputs = self.teacher_outputs
        run.provenance = [{**record, "reused": True} for record in self.provenance[:1]]  # the load record
        return run

    # --- measuring -------------------------------------------------------------------------
    def outputs_of(self, item, label: str) -> Outputs:
        train = self.split.train.texts if self.adapter.scores_train else ()
        texts = train + self.split.test.texts
        rows = [item(text) for text in track(texts, f"evaluate {label}", len(texts))]
        n = len(train)
        return Outputs(np.stack(rows[:n]) if n else np.zeros((0, *rows[0].shape)), np.stack(rows[n:]))

    def measure_onnx(self, name: str, description: str, onnx_path: Path, *, reference: bool = False) -> StageResult:
        bench = self.recipe.bench
        model = open_model(onnx_path, self.tokenizer_json, self.spec, threads=self.eval_threads)
        outputs = self.outputs_of(lambda text: self.adapter.artifact_item(model, text), name)
        metrics = self.adapter.score(self.teacher_outputs, outputs, self.split, self.teacher.config)
        latency = {
            profile.name: bench_onnx(onnx_path, self.tokenizer_json, self.spec, profile, self.bench_texts,
                                     batch=bench.batch, seq=bench.seq, warmup=bench.warmup, runs=bench.runs,
                                     max_seconds=bench.max_seconds)
            for profile in self.profiles
        }
        rss = peak_rss_onnx(onnx_path, self.tokenizer_json, self.spec, threads=self.profile.threads,
                            batch=bench.batch, seq=bench.seq, texts=self.bench_texts, cores=self.profile.cores)
        files = [onnx_path, self.tokenizer_json]  # measure_size adds external data files
        return self._stage(name, description, files, latency, rss, metrics, reference)

    def measure_teacher(self, source: Source) -> StageResult:
        import torch

        bench = self.recipe.bench
        encoder = self.teacher_encoder
        self.teacher_outputs = self.outputs_of(
            lambda text: self.adapter.teacher_item(self.teacher, encoder, text), "teacher")
        metrics = self.adapter.score(self.teacher_outputs, self.teacher_outputs, self.split, self.teacher.config)
        feeds = fixed_shape_feeds(encoder, self.bench_texts, batch=bench.batch, seq=bench.seq)
        module = self.adapter.export_module(self.teacher)
        tensors = [torch.from_numpy(feeds[n]) for n in self.spec.input_names]
        latency = {}
        for profile in self.profiles:
            with _torch_threads(profile.threads or os.cpu_count() or 1), pinned(profile), torch.inference_mode():
                latency[profile.name] = measure_latency(lambda: module(*tensors), warmup=bench.warmup,
                                                        runs=bench.runs, max_seconds=bench.max_seconds)
        rss = peak_rss_torch(source.path, self.spec.task, threads=self.profile.threads, batch=bench.batch,
                             seq=bench.seq, texts=self.bench_texts, cores=self.profile.cores)
        files = _weight_files(source.path) + [self.teacher_json]
        return self._stage("teacher", f"PyTorch fp32 {type(self.teacher).__name__}", files, latency, rss, metrics,
                           False)

    def _stage(self, name, description, files, latency: dict[str, LatencyStats], rss, metrics, reference):
        main = latency.pop(self.profile.name)
        return StageResult(name, description, files, measure_size(files), main, rss, metrics,
                           latency_also=latency, reference=reference)

    def record(self, stage: str, settings: dict, measured: dict, started: float,
               inputs: list[Path], outputs: list[Path]) -> None:
        self.provenance.append({
            "stage": stage,
            "settings": settings,
            "measured": measured,
            "seconds": round(time.perf_counter() - started, 3),
            "input_sha256": {p.name: sha256_file(p) for p in inputs},
            "output_sha256": {p.name: sha256_file(p) for p in outputs},
        })


class StageMemo:
    """Work shared by several compress runs of one process (a search's trials): the loaded,
    measured teacher, and each student (prune, distill, export, optimize and their
    measurements), keyed by the recipe fields that decide them. Their files live in `folder`,
    outside every bundle's staging folder, so that later runs can reuse them."""

    def __init__(self, folder: str | Path, *, max_students: int = 8):
        self.folder = Path(folder)
        self.max_students = max_students  # pruned models stay in memory: bound them
        self._entries: dict[str, tuple[Any, float]] = {}
        self.hits: dict[str, int] = {"teacher": 0, "student": 0}
        self.misses: dict[str, int] = {"teacher": 0, "student": 0}
        self.saved_seconds = 0.0  # what the reused work took when it was done

    @staticmethod
    def key(kind: str, *parts: Any) -> str:
        import hashlib
        import json

        blob = json.dumps([kind, *[p if isinstance(p, (str, int, float, bool, dict, list, type(None))) else repr(p)
                                   for p in parts]], sort_keys=True, default=str)
        return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def folder_for(self, key: str) -> Path:
        return self.folder / key

    def get(self, key: str) -> Any:
        kind = key.split("-", 1)[0]
        entry = self._entries.get(key)
        if entry is None:
            self.misses[kind] += 1
            return None
        self._entries[key] = self._entries.pop(key)  # most recently used last
        self.hits[kind] += 1
        self.saved_seconds += entry[1]
        return entry[0]

    def put(self, key: str, value: Any, seconds: float) -> None:
        self._entries[key] = (value, seconds)
        students = [k for k in self._entries if k.startswith("student-")]
        for old in students[: max(0, len(students) - self.max_students)]:
            del self._entries[old]
            shutil.rmtree(self.folder_for(old), ignore_errors=True)


def work_threads() -> int:
    """Threads for the work that is not timed (evaluation, pruning, export checks).

    Half the cores: intra-op thread pools that spin (torch's, onnxruntime's) collapse when
    another process wants the same cores. Measured on this 2-core box beside one busy
    process: a MiniLM forward took 137 ms on 1 torch thread and 1770 ms on 2.
    """
    return max(1, (os.cpu_count() or 2) // 2)


@contextmanager
def _torch_threads(threads: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return files + [p for p in (folder / "config.json",) if p.exists()]


def compress(
    source: str | Path | None = None,
    *,
    output: str | Path = "out",
    task: str | None = None,
    recipe: Recipe | dict | str | Path | None = None,
    budget: Budget | dict | str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    memo: "StageMemo | None" = None,
) -> CompressResult:
    """Compress `source` (a model folder, a hub id, or None for the bundled MiniLM) into a
    bundle at `output`, measure every stage, and check `budget`.

    `recipe` is a Recipe, a dict shaped like the TOML file, or the path of a TOML file;
    `overrides` are dotted recipe fields, as the CLI flags set them ({"quantize.scheme": "int4"}).
    `memo` (a search passes one) reuses the teacher's measurements and each student's export
    from earlier runs of the same process instead of redoing them.
    """
    started = time.perf_counter()
    if task is not None:
        overrides = {**(overrides or {}), "task": task}
    recipe_, budget_ = build_recipe(recipe, overrides=overrides, budget=budget)
    output = Path(output)
    check_output(output, force)  # before any work, so a mistake costs nothing
    profile = get_profile(recipe_.bench.device)
    for candidate in [profile, *(get_profile(name) for name in recipe_.bench.also)]:
        # a typo, an ssh:// device (edgegolf bench times those) or a missing GPU runtime fails before any work
        ort_providers(candidate)
    quant = quant_config(recipe_.quantize)
    if recipe_.distill and not recipe_.prune:
        raise RecipeError("distill needs a smaller student: add a [prune] section (or --prune) to make one")
    from edgegolf.compression.distill.parallel import launched_processes

    if launched_processes() > 1:  # every process would export, measure and write the same bundle
        raise RecipeError(f"compress runs as one process, but it was launched as {launched_processes()}; distill on "
                          "several with `accelerate launch -m edgegolf distill TEACHER STUDENT ...`, then compress "
                          "the distilled folder in one process")
    if recipe_.export.exporter == "optimum":
        from edgegolf.export.optimum import require_optimum

        require_optimum()
    src = resolve_source(source, trust_remote_code=trust_remote_code)

    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(str(src.path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read the model config in {str(src.path)!r}: {str(exc).splitlines()[0]}") from None
    task_name = recipe_.task or infer_task(config)
    if task_name == "text-classification" and getattr(config, "architectures", None) and \
            infer_task(config) != task_name:  # the head would be random weights, measured as if trained
        raise SourceError(f"model {src.name!r} is a {config.architectures[0]} with no classification head; "
                          "text-classification needs a model fine-tuned for it, or use --task feature-extraction")
    adapter = get_task(task_name)
    check_layouts(recipe_.export.layout, task_name)
    if recipe_.prune:  # a cut the model cannot take fails now, not after the teacher is measured
        from edgegolf.compression.prune import check_prune_fits, prune_config_from_dict

        check_prune_fits(prune_config_from_dict(recipe_.prune), config)
    split = adapter.load_split(recipe_.evaluate)  # the task decides what its data looks like (causal-lm: .txt)
    log.info("compressing %s (%s) for %s on device profile %s", src.name, type(config).__name__, task_name, profile.name)

    with BundleWriter(output, force=force) as writer, _torch_threads(work_threads()):
        work = writer.work
        teacher_key = memo.key("teacher", src.to_dict(), task_name, recipe_.evaluate, recipe_.bench,
                               recipe_.export.max_length, trust_remote_code, allow_pickle) if memo else None
        if memo is not None and (hit := memo.get(teacher_key)):
            template, teacher_stage, tokenizer, input_names = hit
            run = template.again(recipe_)
        else:
            t = time.perf_counter()
            teacher_work = memo.folder_for(teacher_key) if memo else work  # kept for later runs
            teacher = adapter.load_model(src.path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(src.path), trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as exc:
                raise SourceError(f"cannot load the tokenizer in {str(src.path)!r}: {str(exc).splitlines()[0]}") from None
            if not getattr(tokenizer, "is_fast", False):
                raise SourceError(f"the tokenizer of {src.name!r} has no fast (tokenizer.json) version; the runtime needs one")
            input_names = adapter.input_names(teacher, tokenizer)
            teacher_json = _save_tokenizer(tokenizer, teacher_work / "teacher-tokenizer")
            teacher_spec = adapter.model_spec(teacher, tokenizer, input_names, recipe_.export.max_length)
            run = _Run(recipe_, profile, split, adapter, teacher, teacher_json, make_tokenizer(teacher_json, teacher_spec),
                       src.path, trust_remote_code)
            run.record("load", {"source": src.to_dict(), "task": task_name, "model_class": type(teacher).__name__},
                       {"parameters": int(sum(p.numel() for p in teacher.parameters()))}, t,
                       _weight_files(src.path), [teacher_json])
            teacher_stage = run.measure_teacher(src)
            if memo is not None:
                memo.put(teacher_key, (run, teacher_stage, tokenizer, input_names), time.perf_counter() - t)
        stages = [copy.deepcopy(teacher_stage)]

        student_key = memo.key("student", teacher_key, recipe_.prune, recipe_.distill, recipe_.export,
                               recipe_.optimize) if memo else None
        if memo is not None and (hit := memo.get(student_key)):
            fp32_path, export_report, graph = _restore_student(run, stages, hit)
        else:
            t, before = time.perf_counter(), (len(stages), len(run.provenance))
            student_work = memo.folder_for(student_key) if memo else work  # kept for later runs
            fp32_path, export_report, graph = _student(run, tokenizer, input_names, student_work, stages)
            if memo is not None:
                memo.put(student_key, _capture_student(run, stages, before, (fp32_path, export_report, graph)),
                         time.perf_counter() - t)
        quantized = _quantize(run, work, graph, quant, stages)
        for name in recipe_.evaluate.compare:
            stages.append(_reference(run, work, name, fp32_path, stages[1]))

        result = CompressResult(output, task_name, src, recipe_, budget_, profile, stages, None, {})
        final = result.final
        result.verdict = check_budget(budget_, {
            "size_mb": final.size.raw_bytes / MB,
            "zstd_mb": final.size.zstd_bytes / MB,
            "p50_ms": final.latency.p50_ms,
            "p95_ms": final.latency.p95_ms,
            "memory_mb": final.peak_rss_bytes / MB,
            "max_accuracy_drop": result.teacher.metrics["accuracy"] - final.metrics["accuracy"],
        })
        log.info("verdict: %s", result.verdict.summary())

        manifest = _manifest(result, run, export_report, split, trust_remote_code=trust_remote_code,
                             allow_pickle=allow_pickle, seconds=time.perf_counter() - started)
        _fill_bundle(writer.staging, result, run, quantized or graph)
        write_layouts(writer.staging, manifest, recipe_.export.layout)  # before the manifest: its hashes cover them
        result.manifest = writer.commit(manifest)
    return result


def _student(run: _Run, tokenizer, input_names, work: Path, stages: list[StageResult]):
    """Prune, distill, export and optimize the student, measuring each graph. -> (fp32, export report, graph)."""
    student_tokenizer = _prune(run, tokenizer)
    _distill(run, tokenizer, student_tokenizer)
    # what the bundle ships: the student's tokenizer
    run.tokenizer_json = _save_tokenizer(student_tokenizer, work / "tokenizer")
    run.spec = run.adapter.model_spec(run.student, student_tokenizer, input_names, run.recipe.export.max_length)

    fp32_path, export_report = _export(run, work)
    stages.append(run.measure_onnx("onnx-fp32", "plain fp32 ONNX export", fp32_path))
    stages[-1].notes.append(f"max abs diff to PyTorch {export_report.max_abs_diff:.2e}")
    if run.student is not run.teacher:
        stages[-1].description = "fp32 ONNX export of the pruned model" + (" after distillation" if run.distill else "")
    if run.distill:
        stages[-1].notes.append(run.distill.summary())

    graph = _optimize(run, work, fp32_path, stages)
    return fp32_path, export_report, graph


def _capture_student(run: _Run, stages: list[StageResult], before: tuple[int, int], made: tuple) -> dict[str, Any]:
    """What `_student` changed: the run's fields, the stages and provenance records it added."""
    return {"fields": {k: v for k, v in vars(run).items() if k not in ("recipe", "provenance")},
            "stages": copy.deepcopy(stages[before[0]:]), "records": copy.deepcopy(run.provenance[before[1]:]),
            "made": made}


def _restore_student(run: _Run, stages: list[StageResult], saved: dict[str, Any]):
    vars(run).update(saved["fields"])
    stages.extend(copy.deepcopy(saved["stages"]))
    # the records keep the seconds the work took when it was done, in an earlier run
    run.provenance.extend({**record, "reused": True} for record in copy.deepcopy(saved["records"]))
    return saved["made"]


def _fill_bundle(folder: Path, result: CompressResult, run: _Run, final_graph: Path) -> None:
    """The final graph, the tokenizer, the config, the recipe and the report (the manifest is last)."""
    from edgegolf.report import markdown_report, recipe_toml

    if Path(str(final_graph) + ".data").exists():
        raise ExportError("graphs with external weight data are not bundled yet (models over 2 GB)")
    shutil.copyfile(final_graph, folder / "model.onnx")
    for file in run.tokenizer_json.parent.iterdir():
        shutil.copyfile(file, folder / file.name)
    run.student.config.save_pretrained(str(folder))
    (folder / "recipe.toml").write_text(recipe_toml(result.recipe, result.budget), encoding="utf-8")
    (folder / "report.md").write_text(markdown_report(result), encoding="utf-8")


def _manifest(result: CompressResult, run: _Run, export_report, split: Split, *, trust_remote_code: bool,
              allow_pickle: bool, seconds: float) -> dict[str, Any]:
    """Everything needed to load the bundle and to rerun exactly the same pipeline."""
    recipe, src = result.recipe, result.source
    source_arg = "" if src.kind == "default" else f" {src.name}"
    return {
        "created_by": f"edgegolf {__version__}",
        "task": result.task,
        "model": run.spec.to_dict(),
        "source": src.to_dict(),
        "recipe": recipe.to_dict(),
        "budget": result.budget.to_dict(),
        "device_profile": result.profile.name,
        "trust_remote_code": trust_remote_code,
        "allow_pickle": allow_pickle,
        "export": {"exporter": recipe.export.exporter, "opset": recipe.export.opset,
                   "max_abs_diff": export_report.max_abs_diff, "atol": recipe.export.atol},
        "evaluation": {"data": recipe.evaluate.data, "train_texts": len(split.train), "test_texts": len(split.test),
                       "classes": sorted(set(split.train.labels) | set(split.test.labels)), "batch": 1},
        "stages": {s.name: s.summary() for s in result.stages},
        "metrics": result.final.metrics,
        "verdict": result.verdict.to_dict(),
        "provenance": run.provenance,
        "rerun": f"edgegolf compress{source_arg} --recipe recipe.toml -o OUT",
        "versions": _versions(),
        "seconds": round(seconds, 1),
    }


def _export(run: _Run, work: Path):
    settings = run.recipe.export
    t = time.perf_counter()
    texts = list(run.split.train.texts[:8])
    # Verification feeds: single texts and a padded batch of texts of different lengths.
    encoder = make_tokenizer(run.tokenizer_json, run.spec)
    sample = encoder.encode(texts[:2])
    verify = [encoder.encode([texts[0]]), encoder.encode([texts[1][:200], texts[2], texts[3][:50]])]
    if settings.exporter == "optimum":
        from edgegolf.export.optimum import export_with_optimum

        report = export_with_optimum(
            run.source_dir, work / "optimum", task=run.spec.task, opset=settings.opset,
            reference=lambda feeds: run.adapter.torch_outputs(run.student, feeds), verify_feeds=verify,
            atol=settings.atol, input_names=list(run.spec.input_names), output_names=list(run.spec.output_names),
            trust_remote_code=run.trust_remote_code)
    else:
        report = run.adapter.export(run.student, work / "model-fp32.onnx", input_names=run.spec.input_names,
                                    output_names=run.spec.output_names, sample_feeds=sample, verify_feeds=verify,
                                    opset=settings.opset, atol=settings.atol)
    run.record("export", {"exporter": settings.exporter, "opset": settings.opset, "atol": settings.atol,
                          "max_length": run.spec.max_length},
               {"max_abs_diff": report.max_abs_diff}, t, [], [report.path])
    return report.path, report


def _save_tokenizer(tokenizer, folder: Path) -> Path:
    tokenizer.save_pretrained(str(folder))
    return folder / "tokenizer.json"


def _prune(run: _Run, tokenizer):
    """Structured pruning of the student (a copy; the teacher stays whole). Returns its tokenizer."""
    from edgegolf.compression.prune import prune_config_from_dict, prune_model

    if not run.recipe.prune:
        return tokenizer
    config = prune_config_from_dict(run.recipe.prune)
    t = time.perf_counter()
    calibration = list(run.split.train.texts[: run.recipe.evaluate.calibration_size])
    run.student, tokenizer, report = prune_model(run.teacher, tokenizer, config, calibration_texts=calibration,
                                                 max_length=run.recipe.export.max_length)
    details = report.to_dict()
    run.prune_report = report
    log.info("pruned: %d -> %d parameters", report.params_before, report.params_after)
    run.record("prune", config.to_dict(), details, t, [], [])
    return tokenizer


def _distill(run: _Run, teacher_tokenizer, student_tokenizer) -> None:
    """Distill the pruned student from the teacher on transfer data (never the test split)."""
    from edgegolf.compression.distill import distill_config_from_dict
    from edgegolf.compression.distill.stage import distill_pruned

    if not run.recipe.distill:
        return
    assert run.student is not run.teacher, "compress() refuses distill without prune"  # never train the teacher
    config = distill_config_from_dict(run.recipe.distill)
    t = time.perf_counter()
    run.distill = distill_pruned(
        run.teacher, run.student, student_tokenizer, run.adapter, config, split=run.split,
        kept_layers=run.prune_report.kept_layers if run.prune_report else None,
        teacher_tokenizer=teacher_tokenizer if student_tokenizer is not teacher_tokenizer else None)
    run.record("distill", run.distill.config.to_dict(), run.distill.record(), t, [], [])


def _optimize(run: _Run, work: Path, fp32_path: Path, stages: list[StageResult]) -> Path:
    mode = run.recipe.optimize.mode
    if mode == "off" or not run.adapter.optimizable:
        skipped = {} if mode == "off" else {"skipped": f"no verified fusions for {run.adapter.name} graphs"}
        run.record("optimize", {"mode": mode}, {"kept": False, **skipped}, time.perf_counter(), [], [])
        return fp32_path
    from edgegolf.export.onnx import verify_onnx
    from edgegolf.export.optimize import optimize_graph

    t = time.perf_counter()
    from edgegolf.compression.prune import attention_dims

    config = run.student.config
    num_heads, hidden_size = attention_dims(config)  # head-pruned models: the true attention width
    report = optimize_graph(fp32_path, work / "model-optimized.onnx", model_type=_ort_model_type(config),
                            num_heads=num_heads, hidden_size=hidden_size)
    encoder = make_tokenizer(run.tokenizer_json, run.spec)
    texts = list(run.split.train.texts[:4])
    diff = verify_onnx(report.path, lambda feeds: run.adapter.torch_outputs(run.student, feeds),
                       [encoder.encode(texts[:1]), encoder.encode([texts[1], texts[2][:80]])],
                       atol=run.recipe.export.atol, output_names=list(run.spec.output_names))
    stage = run.measure_onnx("onnx-optimized", "onnxruntime transformer fusions", report.path)
    fp32 = stages[-1]
    faster = stage.latency.p50_ms < fp32.latency.p50_ms
    kept = mode == "on" or faster
    ratio = stage.latency.p50_ms / fp32.latency.p50_ms
    fused = ", ".join(f"{op} x{n}" for op, n in sorted(report.fused_ops.items())) or "nothing fused"
    stage.notes.append(f"{fused}; p50 {ratio:.2f}x the fp32 export; " +
                       ("kept" if kept else "dropped: not faster, later stages use the fp32 export"))
    stages.append(stage)
    run.record("optimize", {"mode": mode}, {"kept": kept, "p50_ratio": ratio, "fused_ops": report.fused_ops,
                                            "max_abs_diff": diff}, t, [fp32_path], [report.path])
    return report.path if kept else fp32_path


def _quantize(run: _Run, work: Path, graph: Path, quant, stages: list[StageResult]) -> Path | None:
    from edgegolf.compression.quantize import NoQuant, quantize

    if isinstance(quant, NoQuant):
        run.record("quantize", {"scheme": "none"}, {}, time.perf_counter(), [], [])
        return None
    t = time.perf_counter()
    encoder = make_tokenizer(run.tokenizer_json, run.spec)
    calibration = [run.adapter.graph_feeds(encoder.encode([text]), run.student.config)
                   for text in run.split.train.texts[: run.recipe.evaluate.calibration_size]]
    report = quantize(graph, work / "model-quantized.onnx", quant, calibration_feeds=calibration)
    stage = run.measure_onnx("quantized", f"{report.scheme} quantized", Path(report.path))
    ratio = stage.latency.p50_ms / stages[1].latency.p50_ms
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(report.quantized_ops.items()))
    stage.notes.append(f"{ops}; {len(report.float_nodes)} compute nodes stayed float; p50 {ratio:.2f}x the fp32 export")
    stages.append(stage)
    run.record("quantize", report.settings, {"quantized_ops": report.quantized_ops, "float_nodes": report.float_nodes,
                                             "excluded": report.excluded}, t, [graph], [Path(report.path)])
    return Path(report.path)


def _reference(run: _Run, work: Path, name: str, fp32_path: Path, fp32: StageResult) -> StageResult:
    """A reference artifact measured like the chain's, for comparison only."""
    if name == "ort-quantize-dynamic":
        from onnxruntime.quantization import quantize_dynamic

        path = work / "reference-ort-quantize-dynamic.onnx"
        quantize_dynamic(str(fp32_path), str(path))  # default arguments: what a user does by hand
        stage = run.measure_onnx(name, "onnxruntime quantize_dynamic, default arguments", path, reference=True)
    else:  # Recipe validation only lets known names through
        raise RecipeError(f"unknown comparison {name!r}")
    stage.notes.append(f"reference only; p50 {stage.latency.p50_ms / fp32.latency.p50_ms:.2f}x the fp32 export")
    return stage


def _ort_model_type(config) -> str:
    # onnxruntime's optimizer knows these families by these names
    known = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "xlm-roberta": "bert", "gpt2": "gpt2"}
    return known.get(getattr(config, "model_type", ""), "bert")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def prune(source: str | Path | None = None, *, spec: str | dict, output: str | Path, data: str = "bbc-news",
          calibration_size: int = 64, seed: int = 0, force: bool = False):
    """Prune a model on its own and write a Hugging Face folder (`edgegolf prune`).

    Importance is measured on `calibration_size` texts of the train split of `data` (the
    same seeded split `compress` evaluates on, so the held-out texts stay unseen).
    """
    from edgegolf.compression.prune import parse_prune_spec, prune_config_from_dict, prune_folder

    config = parse_prune_spec(spec) if isinstance(spec, str) else prune_config_from_dict(spec)
    check_output(Path(output), force)
    src = resolve_source(source)
    split = stratified_split(load_labelled_texts(data), test_fraction=0.3, seed=seed)
    return prune_folder(src.path, output, config, list(split.train.texts[:calibration_size]), force=force)
