"""The runner: walks the declared stages (stages.STAGES) in order over one artifact.

For each stage it records provenance (settings, what the stage measured, seconds, sha256 of
the files it read and wrote), measures the stage's artifact (the teacher after load, every
new ONNX graph after export, optimize and quantize) and, given a `StageCache`, reuses the
result of an earlier run of the same stage on the same input with the same config.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from edgegolf.measure.artifact import Measurer, StageResult
from edgegolf.pipeline.stages import REFERENCES, Artifact, Context, Made, Stage
from edgegolf.recipe import Recipe
from edgegolf.runtime.manifest import sha256_file
from edgegolf.runtime.tokenize import make_tokenizer

log = logging.getLogger(__name__)


@dataclass
class Done:
    """One stage's outcome, as the cache keeps it."""

    artifact: Artifact
    record: dict[str, Any]  # the provenance record
    results: list[StageResult]  # what the runner measured on the artifact (none, or one)
    seconds: float  # the stage and its measurement, when they ran
    input_key: str


class StageCache:
    """Stage results shared by the compress runs of one process (a search's trials), keyed by
    (the stage's input key, the stage's config). Files live in `folder`, outside every bundle's
    staging folder, so that later runs can reuse them. Students are PyTorch models held in
    memory: at most `max_students` of them are kept (least recently used go first)."""

    GROUPS = ("teacher", "student")

    def __init__(self, folder: str | Path, *, max_students: int = 8):
        self.folder = Path(folder)
        self.max_students = max_students
        self._entries: dict[str, tuple[str, Done]] = {}  # key -> (group, outcome), least recently used first
        # per run: was the whole group reused (hits) or was some of it run (misses)
        self.hits: dict[str, int] = {g: 0 for g in self.GROUPS}
        self.misses: dict[str, int] = {g: 0 for g in self.GROUPS}
        self.stage_hits: Counter[str] = Counter()
        self.stage_misses: Counter[str] = Counter()
        self.saved_seconds = 0.0  # what the reused work took when it was done

    @staticmethod
    def key(input_key: str, stage: str, config: Any) -> str:
        blob = json.dumps([input_key, stage, config], sort_keys=True, default=_plain)
        return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def folder_for(self, key: str) -> Path:
        return self.folder / key

    def get(self, key: str, stage: str) -> Done | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            self.stage_misses[stage] += 1
            return None
        self._entries[key] = entry  # most recently used last
        self.stage_hits[stage] += 1
        self.saved_seconds += entry[1].seconds
        return entry[1]

    def put(self, key: str, group: str, done: Done) -> None:
        self._entries[key] = (group, done)
        current = self._root(key)
        while len(self._students()) > self.max_students:
            # a student's stages go together, least recently used first; never the one being made
            roots = [k for k in self._entries if k != current and self._root(k) == k]
            if not roots:
                break
            self._evict(roots[0])

    def tally(self, reused: dict[str, bool]) -> None:
        for group, hit in reused.items():
            (self.hits if hit else self.misses)[group] += 1

    def _root(self, key: str) -> str:
        """The first student stage of `key`'s chain (the one made from the teacher)."""
        while (parent := self._entries.get(self._entries[key][1].input_key)) and parent[0] == "student":
            key = self._entries[key][1].input_key
        return key if self._entries[key][0] == "student" else ""

    def _students(self) -> set[int]:
        return {id(done.artifact.model) for group, done in self._entries.values() if group == "student"}

    def _evict(self, key: str) -> None:
        """Drop `key` and every entry made from it (their files may point into its folder)."""
        self._entries.pop(key, None)
        shutil.rmtree(self.folder_for(key), ignore_errors=True)
        for child in [k for k, (_, done) in self._entries.items() if done.input_key == key]:
            self._evict(child)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value) if isinstance(value, Path) else repr(value)


@dataclass
class Outcome:
    artifact: Artifact  # the chain's last: what the bundle ships
    teacher: Artifact
    results: list[StageResult]  # the teacher's and every graph's measurements, in order
    provenance: list[dict[str, Any]] = field(default_factory=list)


def run_stages(stages: Iterable[Stage], recipe: Recipe, ctx: Context, measurer: Measurer,
               cache: StageCache | None = None) -> Outcome:
    """Every stage whose config the recipe gives, in the declared order."""
    results: list[StageResult] = []
    provenance: list[dict[str, Any]] = []
    artifact: Artifact | None = None
    # every measurement depends on these: the root of every key
    key = StageCache.key("", "measure", [recipe.evaluate, recipe.bench])
    reused: dict[str, bool] = {}
    for stage in stages:
        config = stage.config(recipe, ctx)
        if config is None:
            continue
        input_key, key = key, StageCache.key(key, stage.name, config)
        cached = cache is not None and stage.group is not None
        done = cache.get(key, stage.name) if cached else None
        if done is not None:
            record = {**copy.deepcopy(done.record), "reused": True}  # with the seconds it took when it ran
            log.info("%s: reused from an earlier run", stage.name)
        else:
            work = cache.folder_for(key) if cached else ctx.work  # cached files outlive the bundle
            done = _run(stage, artifact, config, replace(ctx, work=work), measurer, results, input_key)
            if cached:
                cache.put(key, stage.group, Done(done.artifact, copy.deepcopy(done.record),
                                                 copy.deepcopy(done.results), done.seconds, input_key))
            record = done.record
        if stage.group is not None:
            reused[stage.group] = reused.get(stage.group, True) and "reused" in record
        results.extend(copy.deepcopy(done.results))
        provenance.append(record)
        artifact = done.artifact
        if stage.measure == "teacher":
            ctx = replace(ctx, teacher=artifact)
    if cache is not None:
        cache.tally(reused)
    return Outcome(artifact, ctx.teacher, results, provenance)


def _run(stage: Stage, before: Artifact | None, config: Any, ctx: Context, measurer: Measurer,
         earlier: list[StageResult], input_key: str) -> Done:
    started = time.perf_counter()
    artifact, measured = stage.run(before, config, ctx)
    seconds = time.perf_counter() - started
    new_graph = artifact.graph is not None and (before is None or artifact.graph != before.graph)
    reads = stage.reads(ctx) if stage.reads else ([before.graph] if before and before.graph else [])
    wrote = stage.wrote(artifact) if stage.wrote else ([artifact.graph] if new_graph else [])
    record = {"stage": stage.name, "settings": stage.settings(config, artifact), "measured": measured,
              "seconds": round(seconds, 3),
              "input_sha256": {p.name: sha256_file(p) for p in reads},
              "output_sha256": {p.name: sha256_file(p) for p in wrote}}

    started = time.perf_counter()
    result = None
    if stage.measure == "teacher":
        encoder = make_tokenizer(artifact.tokenizer_json, artifact.spec)
        result, outputs = measurer.teacher(artifact.model, encoder, ctx.source.path, artifact.tokenizer_json)
        artifact = replace(artifact, outputs=outputs)
    elif stage.measure and new_graph:
        result = measurer.graph(stage.measure, stage.description, artifact.graph, artifact.tokenizer_json,
                                artifact.spec, teacher_outputs=ctx.teacher.outputs, model_config=artifact.model.config,
                                batch_independent=stage.batch_independent(config))
    if stage.review is not None:
        artifact, more = stage.review(Made(before, artifact, config, measured, result, earlier, ctx, measurer))
        measured.update(more)
    if result is not None:
        record["measure_seconds"] = round(time.perf_counter() - started, 3)
    return Done(artifact, record, [result] if result else [], time.perf_counter() - started + seconds, input_key)


def run_references(names: Iterable[str], artifact: Artifact, results: list[StageResult], ctx: Context,
                   measurer: Measurer) -> list[StageResult]:
    """Reference artifacts made from the plain export, measured like the chain's, for comparison only."""
    fp32 = next(r for r in results if r.name == "onnx-fp32")
    made = []
    for name in names:
        path, description = REFERENCES[name](artifact.fp32, ctx.work)  # the recipe lets only known names through
        result = measurer.graph(name, description, path, artifact.tokenizer_json, artifact.spec,
                                teacher_outputs=ctx.teacher.outputs, model_config=artifact.model.config,
                                reference=True)  # references are dynamic int8 today: evaluated one text at a time
        result.notes.append(f"reference only; p50 {result.latency.p50_ms / fp32.latency.p50_ms:.2f}x the fp32 export")
        made.append(result)
    return made
