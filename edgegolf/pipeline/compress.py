"""`edgegolf compress`: check the arguments, load the source's config and the evaluation split,
run the declared stages (stages.py) through the runner, then the references, the budget's
verdict and the bundle (model.onnx, tokenizer, config, recipe.toml, report.md, manifest.json).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgegolf.bundle import BundleWriter, check_output
from edgegolf.devices.cuda import ort_providers
from edgegolf.devices.profiles import DeviceProfile, get_profile
from edgegolf.errors import ExportError, RecipeError, SourceError
from edgegolf.layouts import check_layouts, write_layouts
from edgegolf.measure.artifact import Measurer, StageResult
from edgegolf.measure.evaluate import Evaluation, torch_threads, work_threads
from edgegolf.pipeline.manifest import build_manifest
from edgegolf.pipeline.runner import StageCache, run_references, run_stages
from edgegolf.pipeline.stages import STAGES, Artifact, Context
from edgegolf.recipe import Budget, Recipe, load_recipe_file
from edgegolf.source import Source, resolve_source
from edgegolf.tasks import get_task, infer_task
from edgegolf.verdict import Verdict, check_budget

log = logging.getLogger(__name__)

MB = 1e6


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

    @property
    def scheme_choice(self) -> dict[str, Any] | None:
        """What the size limit chose when no scheme was asked for (quantize/choose.py), else None."""
        return scheme_choice_of(self.manifest.get("provenance", ()))


def scheme_choice_of(provenance) -> dict[str, Any] | None:
    """The quantize stage's record of a size limit's choice in `provenance`, else None."""
    record = next((r for r in provenance if r["stage"] == "quantize"), None)
    return record["measured"].get("scheme_choice") if record else None


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


def scheme_asked(recipe: Recipe | dict | str | Path | None, overrides: dict[str, Any] | None) -> bool:
    """Whether the caller chose the quantization: any quantize override (--quantize, --block-size,
    --exclude, --calibration), a non-empty [quantize] table, or a Recipe whose quantize is not the
    default int8. Only an unchosen default gives way to a size limit (compression/quantize/choose.py)."""
    from edgegolf.compression.quantize import default_int8

    if any(v is not None and (k == "quantize" or k.startswith("quantize.")) for k, v in (overrides or {}).items()):
        return True
    if isinstance(recipe, Recipe):
        return recipe.quantize != default_int8()
    if isinstance(recipe, dict):
        return bool(recipe.get("quantize"))
    return recipe is not None and bool(load_recipe_file(recipe)[0].get("quantize"))


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
    cache: StageCache | None = None,
    memo: StageCache | None = None,
    teacher_outputs: Any = None,
) -> CompressResult:
    """Compress `source` (a model folder, a hub id, or None for the bundled MiniLM) into a
    bundle at `output`: load, prune, distill, export, optimize, quantize (each as the recipe
    asks), measure every artifact, check `budget`.

    `recipe` is a Recipe, a dict shaped like the TOML file, or the path of a TOML file;
    `overrides` are dotted recipe fields, as the CLI flags set them ({"quantize.scheme": "int4"}).
    `cache` (a search passes one; `memo` is its former name) reuses the stages earlier runs of
    the same process ran on the same input with the same settings: the loaded, measured
    teacher, and each student's prune, distill, export and optimize. `teacher_outputs` (a search's
    edgegolf.search.teacher_cache.TeacherOutputs) shares the teacher's outputs between processes.
    """
    started = time.perf_counter()
    cache = cache if cache is not None else memo
    if task is not None:
        overrides = {**(overrides or {}), "task": task}
    recipe_, budget_ = build_recipe(recipe, overrides=overrides, budget=budget)
    run_recipe = recipe_  # what the stages run: with a size limit and no scheme asked for, a choice
    if budget_.size_mb is not None and not scheme_asked(recipe, overrides):
        from edgegolf.compression.quantize.choose import SchemeChoice

        run_recipe = replace(recipe_, quantize=SchemeChoice(size_mb=budget_.size_mb))
    output = Path(output)
    check_output(output, force)  # before any work, so a mistake costs nothing
    profile = get_profile(recipe_.bench.device)
    for candidate in [profile, *(get_profile(name) for name in recipe_.bench.also)]:
        # a typo, an ssh:// device (edgegolf bench times those) or a missing GPU runtime fails before any work
        ort_providers(candidate)
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

    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(src.path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read the model config in {str(src.path)!r}: {str(exc).splitlines()[0]}") from None
    task_name = recipe_.task or infer_task(config)
    adapter = get_task(task_name)
    adapter.check_source(config, src.name)  # e.g. a classification head that would be random weights
    adapter.read_source(src.path)  # e.g. a sentence-transformers folder's pooling, Dense layers and prompts
    check_layouts(recipe_.export.layout, task_name)
    if recipe_.prune:  # a cut the model cannot take fails now, not after the teacher is measured
        from edgegolf.compression.prune import check_prune_fits

        check_prune_fits(recipe_.prune, config)
    # the task decides what its data looks like (causal-lm: .txt). The limit shrinks only what is
    # scored: a subset of the whole split's test half, so never a text the stages calibrated or
    # trained on (they work on the whole split's train half).
    scored = adapter.load_split(recipe_.evaluate)
    split = adapter.load_split(replace(recipe_.evaluate, limit=0)) if adapter.eval_limit(recipe_.evaluate) else scored
    log.info("compressing %s (%s) for %s on device profile %s", src.name, type(config).__name__, task_name,
             profile.name)

    with BundleWriter(output, force=force) as writer, torch_threads(work_threads()):
        ctx = Context(adapter=adapter, split=split, source=src, task=task_name,
                      max_length=recipe_.export.max_length, atol=recipe_.export.atol,
                      calibration_size=recipe_.evaluate.calibration_size, trust_remote_code=trust_remote_code,
                      allow_pickle=allow_pickle, work=writer.work)
        measurer = Measurer(Evaluation(adapter, scored, recipe_.evaluate.batch), recipe_.bench, profile,
                            teacher_outputs=teacher_outputs)
        if budget_.relative_fields() and recipe_.prune and cache is None:
            cache = StageCache(writer.work / "stage-cache")  # one teacher for the chain and its unpruned export
        outcome = run_stages(STAGES, run_recipe, ctx, measurer, cache)
        recipe_ = _with_chosen_scheme(recipe_, outcome)  # recipe.toml reruns the scheme the limit chose
        stages = outcome.results + run_references(recipe_.evaluate.compare, outcome.artifact, outcome.results,
                                                  replace(ctx, teacher=outcome.teacher), measurer)
        fp32 = _unpruned_fp32(recipe_, ctx, measurer, cache, outcome.results) if budget_.relative_fields() else None
        if fp32 is not None and fp32.reference:
            stages.append(fp32)

        result = CompressResult(output, task_name, src, recipe_, budget_, profile, stages, None, {})
        final = result.final
        result.verdict = check_budget(budget_, {
            "size_mb": final.size.raw_bytes / MB,
            "zstd_mb": final.size.zstd_bytes / MB,
            "p50_ms": final.latency.p50_ms,
            "p95_ms": final.latency.p95_ms,
            "memory_mb": final.peak_rss_bytes / MB,
            "max_accuracy_drop": result.teacher.metrics["accuracy"] - final.metrics["accuracy"],
        }, fp32={"p50_ms": fp32.latency.p50_ms, "p95_ms": fp32.latency.p95_ms} if fp32 else None)
        log.info("verdict: %s", result.verdict.summary())

        manifest = build_manifest(result, outcome, scored, trust_remote_code=trust_remote_code,
                                  allow_pickle=allow_pickle, seconds=time.perf_counter() - started)
        _fill_bundle(writer.staging, result, outcome.artifact, manifest)
        write_layouts(writer.staging, manifest, recipe_.export.layout)  # before the manifest: its hashes cover them
        result.manifest = writer.commit(manifest)
    return result


def _with_chosen_scheme(recipe: Recipe, outcome) -> Recipe:
    from edgegolf.recipe import quant_config

    choice = scheme_choice_of(outcome.provenance)
    return replace(recipe, quantize=quant_config(choice["settings"])) if choice else recipe


def _unpruned_fp32(recipe: Recipe, ctx: Context, measurer: Measurer, cache: StageCache | None,
                   results: list[StageResult]) -> StageResult:
    """The fp32 export of the unpruned model, timed in this run: what limits such as p50<=0.1x
    divide by. Unpruned, it is the chain's own export; pruned, the teacher is exported too (from
    the cache when this process already did it: a search's baseline trial)."""
    if not recipe.prune:
        return next(r for r in results if r.name == "onnx-fp32")
    from edgegolf.compression.quantize import NoQuant
    from edgegolf.recipe import OptimizeSettings

    assert cache is not None  # compress() gives a pruned run with relative limits one
    hits, misses = dict(cache.hits), dict(cache.misses)
    plain = replace(recipe, prune=None, distill=None, optimize=OptimizeSettings(mode="off"), quantize=NoQuant())
    unpruned = run_stages(STAGES, plain, ctx, measurer, cache)
    cache.hits, cache.misses = hits, misses  # not a run of its own: a search's reuse counts stay its trial's
    export = next(r for r in unpruned.results if r.name == "onnx-fp32")
    return replace(export, name="fp32-export", reference=True,
                   description="fp32 ONNX export of the unpruned model: what latency limits in x divide by")


def _fill_bundle(folder: Path, result: CompressResult, artifact: Artifact, manifest: dict[str, Any]) -> None:
    """The final graph, the tokenizer, the config, the recipe and the reports (the manifest is last)."""
    from edgegolf.report import recipe_toml
    from edgegolf.reports import bundle_reports

    if Path(str(artifact.graph) + ".data").exists():
        raise ExportError("graphs with external weight data are not bundled yet (models over 2 GB)")
    shutil.copyfile(artifact.graph, folder / "model.onnx")
    for file in artifact.tokenizer_json.parent.iterdir():
        shutil.copyfile(file, folder / file.name)
    artifact.model.config.save_pretrained(str(folder))
    (folder / "recipe.toml").write_text(recipe_toml(result.recipe, result.budget), encoding="utf-8")
    for name, text in bundle_reports(manifest).items():  # report.md, report.html, the trade-off plot
        (folder / name).write_text(text, encoding="utf-8")
