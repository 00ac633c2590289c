"""`edgegolf search`: the most accurate model that fits a budget, or exactly why none does.

Each trial is a real compress run (`edgegolf.pipeline.compress`) with the trial's prune and
quantize settings; its measured numbers become the trial's objectives (accuracy, latency on
the budget's device, size) and constraints (the budget). Work that trials share is done
once per process: the runner's `StageCache` keeps the loaded, measured teacher and each
student's prune, distill, export and optimize, reused by every later trial that asks for the
same stage on the same input (every quantization scheme tried on a student, for one). One
trial, the study's objective, is edgegolf/search/trial.py.

Files, beside OUT:  OUT.search.db  (the default SQLite storage: rerun to continue)
                    OUT.search/    trials/<n> (trial bundles), front.md, front.svg, front.html, vocab corpus
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgegolf.errors import EdgegolfError, RecipeError
from edgegolf.publish import atomic_output
from edgegolf.search.trial import TrialObjective, cpu_seconds

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    output: Path
    study_name: str
    storage: str
    fits: bool
    chosen: Any  # TrialRecord shipped in OUT (best fitting, or the closest candidate)
    front: list  # TrialRecord, the Pareto front
    records: list  # every completed TrialRecord of the study
    message: str  # what was found, or which limit could not be met and by how much
    front_markdown: str
    search_dir: Path
    reuse: dict[str, Any] = field(default_factory=dict)  # work shared between this process's trials
    # the chosen trial re-measured on the full split, beside its sample numbers and the runner-up's
    full_split: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # this process, its children included
    wall_seconds: float = 0.0


def parse_duration(text: str | float | int | None) -> float | None:
    """'90s', '30m', '2h', '1h30m' or plain seconds -> seconds."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text.lower())
    if not parts or not any(parts.groups()):
        raise RecipeError(f"search time {text!r} is not a duration; write e.g. 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def search(
    source: str | Path | None = None,
    *,
    output: str | Path = "out",
    budget: Any,
    trials: int = 20,
    time_limit: str | float | None = None,
    storage: str | None = None,
    study: str | None = None,
    task: str | None = None,
    recipe: Any = None,
    overrides: dict[str, Any] | None = None,
    space: Any = None,  # a SearchSpace, or a spec such as "max_layers=2,heads=0.5;0.25"
    distill: str | dict[str, Any] | None = None,
    always_distill: bool = False,
    sampler: str = "tpe",
    seed: int | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
) -> SearchResult:
    """Search prune, quantization (and, given `distill` settings such as "steps=300",
    distillation) for the most accurate model that fits `budget`.

    Runs until the study holds `trials` completed trials (counting every worker's and every
    earlier run's), or `time_limit` passes. Writes the best fitting bundle to `output`, or,
    when none fits, the closest candidate (check `result.fits`).
    """
    from edgegolf.extras import require_extra

    optuna = require_extra("search", "optuna", needed_by="edgegolf search")
    from optuna.trial import TrialState

    from edgegolf.data import load_labelled_texts, stratified_split
    from edgegolf.pipeline import StageCache, build_recipe
    from edgegolf.recipe import Recipe
    from edgegolf.search import study as studies
    from edgegolf.search.front import (
        best_fitting,
        closest,
        closest_ranking,
        fitting_ranking,
        markdown_front,
        pareto_front,
        why_nothing_fits,
    )
    from edgegolf.search.full_split import describe as describe_full_split
    from edgegolf.search.space import BoundSpace, SearchSpace, model_shape, parse_space_spec
    from edgegolf.search.teacher_cache import TeacherOutputs
    from edgegolf.search.teacher_cache import folder_beside as teacher_folder_beside
    from edgegolf.source import resolve_source

    started, cpu_started = time.perf_counter(), cpu_seconds()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # edgegolf logs each trial itself
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise RecipeError(f"search trials = {trials!r} is not accepted; give an integer >= 1")
    seconds_allowed = parse_duration(time_limit)
    if isinstance(space, str):
        space = parse_space_spec(space)
    if task is not None:
        overrides = {**(overrides or {}), "task": task}
    base_recipe, budget_ = build_recipe(recipe, overrides=overrides, budget=budget)
    if budget_.is_empty():
        raise RecipeError("search needs a budget to fit: give e.g. --budget 'size<=10MB,p50<=5ms,drop<=1'")
    if base_recipe.prune or base_recipe.distill or base_recipe.quantize != Recipe().quantize:
        raise RecipeError("search chooses [prune], [distill] and [quantize] itself: drop them from the recipe and "
                          "flags (offer distillation with distill=, --distill)")
    output = Path(output)
    if output.exists() and not force:
        from edgegolf.errors import OutputExistsError

        raise OutputExistsError(f"output {str(output)!r} already exists; pass --force to replace it, or choose another -o")
    search_dir = output.parent / f"{output.name}.search"
    storage_url = storage or f"sqlite:///{(output.parent / f'{output.name}.search.db').resolve()}"
    study_name = study or f"edgegolf-{output.name}"
    sampler_ = studies.make_sampler(sampler, n_trials=trials, seed=seed)  # bad names fail before any work
    if storage is None:
        output.parent.mkdir(parents=True, exist_ok=True)
    storage_ = studies.open_storage(storage_url)
    search_dir.mkdir(parents=True, exist_ok=True)

    src = resolve_source(source)
    shape = model_shape(src.path, trust_remote_code=trust_remote_code)
    # the vocabulary comes from the train split of the full data: it never holds a test text,
    # whatever evaluate.limit is (a limited split's test texts are a prefix of the full one's)
    evaluate = base_recipe.evaluate
    full = stratified_split(load_labelled_texts(evaluate.data), test_fraction=evaluate.test_fraction, seed=evaluate.seed)
    corpus = search_dir / "vocab-train-split.txt"
    text = "\n".join(full.train.texts) + "\n"
    if not corpus.exists() or corpus.read_text(encoding="utf-8") != text:
        with atomic_output(corpus) as partial:
            partial.write_text(text, encoding="utf-8")
    space = space or SearchSpace()
    if distill is not None:  # validated now; offered to pruned students as a choice
        from dataclasses import replace

        from edgegolf.compression.distill import distill_config_from_dict, parse_distill_spec

        config = parse_distill_spec(distill) if isinstance(distill, str) else distill_config_from_dict(distill)
        space = replace(space, distill=config.to_dict(), always_distill=always_distill or space.always_distill)
    elif always_distill:
        raise RecipeError("search always_distill needs distill settings to use: give distill=, e.g. --distill steps=300")
    bound = BoundSpace(space, shape, corpus)

    limits = budget_.to_dict()
    size_field = "zstd_mb" if "zstd_mb" in limits and "size_mb" not in limits else "size_mb"
    p95_only = not {"p50_ms", "p50_ratio"} & set(limits) and bool({"p95_ms", "p95_ratio"} & set(limits))
    latency_field = "p95_ms" if p95_only else "p50_ms"

    # the source by name, not path: workers on other machines keep it elsewhere
    identity = {"source": {"name": src.name, "kind": src.kind}, "budget": limits, "recipe": base_recipe.to_dict(), "space": bound.describe()}
    study_ = studies.open_study(storage_, study_name, sampler_, identity, bound.baseline())
    log.info("search study %r in %s: %d of %d trials done", study_name, storage_url,
             studies.count(study_, TrialState.COMPLETE), trials)

    memo = StageCache(search_dir / f"memo-{studies.HOST}-{os.getpid()}", max_students=24)
    # the teacher's outputs: computed by the first worker, read by the others and by reruns
    teacher_outputs = TeacherOutputs(teacher_folder_beside(storage_url, search_dir))
    _remove_dead_memos(search_dir)
    objective = TrialObjective(study_, trials, bound, memo, search_dir, source, base_recipe, budget_, teacher_outputs,
                               latency_field, size_field, trust_remote_code)
    asked, mine = objective.asked, objective.mine  # every trial this process was given; the ones it ran
    failures = 0
    try:
        while True:
            studies.fail_dead_local_trials(study_)
            done = studies.count(study_, TrialState.COMPLETE)
            running = studies.count(study_, TrialState.RUNNING)
            if done + running >= trials:
                break
            if seconds_allowed is not None and time.perf_counter() - started >= seconds_allowed:
                log.warning("search time %s is spent: stopping with %d of %d trials done", time_limit, done, trials)
                break
            before = studies.count(study_, TrialState.FAIL)
            try:
                study_.optimize(objective, n_trials=1, catch=(EdgegolfError,))
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as exc:
                # SQLite has no row locks: two workers can pop the same queued trial (the
                # baseline, a retry; optuna/optuna#4621). The other worker recorded it first;
                # this run of it is not counted, and its bundle is not this worker's to delete.
                if not isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) and "Cannot tell a" not in str(exc):
                    raise
                lost = asked[-1] if asked else None
                if lost in mine:
                    mine.remove(lost)
                log.warning("trial %s was also run by another worker, which recorded it first", lost)
            if objective.surplus:  # this worker's last ask came after the study filled up
                break
            failures = failures + 1 if studies.count(study_, TrialState.FAIL) > before else 0
            if failures >= 5:
                log.error("5 trials in a row failed: stopping (see the failed trials' errors above)")
                break
    finally:
        shutil.rmtree(memo.folder, ignore_errors=True)

    from edgegolf.search.front import record_from_trial

    records = [r for r in (record_from_trial(t) for t in study_.get_trials(states=(TrialState.COMPLETE,))) if r]
    front = pareto_front(records)
    chosen = best_fitting(records)
    fits = chosen is not None
    if chosen is None:
        chosen = closest(records)
    if chosen is None:
        raise EdgegolfError(f"no trial of study {study_name!r} completed; nothing to write (see the errors above)")
    message = (f"trial {chosen.number} [{chosen.label()}] fits: {chosen.verdict.summary()}" if fits
               else why_nothing_fits(records))
    table = markdown_front(front, chosen)
    result = SearchResult(output, study_name, storage_url, fits, chosen, front, records, message, table, search_dir)
    result.reuse = _reuse_summary([r for r in records if r.number in mine], memo)
    bundle = _chosen_bundle(result, source, base_recipe, budget_, bound, trust_remote_code)
    # before it ships: the chosen graph scored on the whole split, and the runner-up on the same sample
    ranking = fitting_ranking(records) if fits else closest_ranking(records)
    result.full_split = _full_split_check(chosen, ranking, bundle, src, base_recipe, limits, teacher_outputs,
                                          trust_remote_code)
    result.message += "\n" + describe_full_split(result.full_split)
    _write_reports(result, limits)
    _publish(result, bundle, force)
    _drop_unneeded_bundles(result, mine)
    result.cpu_seconds = cpu_seconds() - cpu_started
    result.wall_seconds = time.perf_counter() - started
    return result


def _reuse_summary(records: list, memo) -> dict[str, Any]:
    """Trial times by what the stage cache gave them: how much sharing work between trials saved."""
    groups: dict[str, list[float]] = {"nothing reused": [], "teacher reused": [], "teacher and student reused": []}
    for r in records:
        if r.duplicate_of is not None:
            continue
        key = ("teacher and student reused" if r.reused.get("student") else
               "teacher reused" if r.reused.get("teacher") else "nothing reused")
        groups[key].append(r.seconds)
    return {"median_seconds": {k: statistics.median(v) for k, v in groups.items() if v},
            "trials": {k: len(v) for k, v in groups.items()},
            "reused_work_seconds": round(memo.saved_seconds, 1),
            "hits": dict(memo.hits), "misses": dict(memo.misses)}


def _write_reports(result: SearchResult, limits: dict[str, float]) -> None:
    from edgegolf.search.front import html_report, svg_plot

    teacher = result.records[0].measured["teacher_accuracy"] if result.records else None
    svg = svg_plot(result.records, result.front, result.chosen, limits, teacher_accuracy=teacher)
    from edgegolf.search.full_split import describe

    full = describe(result.full_split) if result.full_split else ""
    message = result.message.removesuffix("\n" + full)  # the full split's lines get a section of their own
    text = (f"# Search {result.study_name}\n\nstorage: `{result.storage}`; {len(result.records)} completed trials\n\n"
            f"{'FITS' if result.fits else 'NOTHING FITS'}: {message}\n\n## Pareto front (measured)\n\n"
            f"(* = the trial in the bundle)\n\n{result.front_markdown}\n")
    if full:
        lines = full.splitlines()
        text += "\n## The chosen trial on the full split, and the noise\n\n" + "\n".join(f"- {x}" for x in lines) + "\n"
    page = html_report(text, result.records, result.front, result.chosen, limits, teacher_accuracy=teacher)
    for name, content in (("front.md", text + "\n![front](front.svg)\n"), ("front.svg", svg), ("front.html", page)):
        with atomic_output(result.search_dir / name) as partial:
            partial.write_text(content, encoding="utf-8")


def _chosen_bundle(result: SearchResult, source, base_recipe, budget, bound, trust_remote_code: bool) -> Path:
    """The chosen trial's bundle on this machine; a trial run on another machine is rerun here
    from its parameters."""
    from edgegolf.search.study import HOST

    chosen = result.chosen
    bundle = Path(chosen.bundle) if chosen.bundle else None
    if (bundle is not None and chosen.host == HOST and (bundle / "manifest.json").exists()
            and result.search_dir.resolve() not in bundle.resolve().parents):
        # another worker's folder on this machine: that worker drops the bundles it sees no use
        # for when it finishes, possibly while this one scores and publishes it, so take a copy
        copy = result.search_dir / "trials" / f"{chosen.number}-copy"
        shutil.rmtree(copy, ignore_errors=True)
        try:
            shutil.copytree(bundle, copy)
            bundle = copy
        except (FileNotFoundError, shutil.Error):
            shutil.rmtree(copy, ignore_errors=True)
            bundle = None  # dropped while copying: rerun below
    if bundle is None or chosen.host != HOST or not (bundle / "manifest.json").exists():
        from edgegolf.pipeline import compress

        log.info("trial %d's bundle is not on this machine: rerunning it", chosen.number)
        bundle = result.search_dir / "trials" / f"{chosen.number}-rerun"
        compress(source, output=bundle, recipe=base_recipe, budget=budget,
                 overrides=bound.overrides(chosen.params), force=True, trust_remote_code=trust_remote_code)
    return bundle


def _full_split_check(chosen, ranking: list, bundle: Path, src, base_recipe, limits: dict[str, float],
                      teacher_outputs, trust_remote_code: bool) -> dict[str, Any]:
    """Sample and full-split numbers of the chosen trial, and whether the sample separated it from
    the runner-up (the next trial in the same ranking) beyond the noise."""
    import json

    from edgegolf.search.full_split import overlap, sample_numbers, score_on_full_split

    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    full = None
    if base_recipe.evaluate.limit != 0:  # 0: the trials were scored on the full split already
        full = score_on_full_split(bundle, src, base_recipe, teacher_outputs=teacher_outputs,
                                   trust_remote_code=trust_remote_code)
    runner = next((r for r in ranking if r.number != chosen.number), None)
    sample = sample_numbers(chosen)
    check: dict[str, Any] = {"trial": chosen.number, "sample": sample, "full": full,
                             "sample_texts": manifest.get("evaluation", {}).get("test_texts"),
                             "drop_limit": limits.get("max_accuracy_drop"), "runner_up": None, "within_noise": None}
    if runner is not None:
        check["runner_up"] = {"trial": runner.number, "label": runner.label(), "sample": sample_numbers(runner)}
        check["within_noise"] = overlap(sample, check["runner_up"]["sample"])
    if full is not None:
        log.info("trial %d on the full split (%d test texts): accuracy %.2f, drop %.2f (sample: %.2f, drop %.2f)",
                 chosen.number, full["test_texts"], full["accuracy"], full["drop"], sample["accuracy"], sample["drop"])
    return check


def _publish(result: SearchResult, bundle: Path, force: bool) -> None:
    """Write the chosen trial's bundle to OUT atomically, with the search's report beside it."""
    import json

    from edgegolf.bundle import BundleWriter
    from edgegolf.search.front import search_points

    chosen = result.chosen
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    for key in ("files", "format", "format_version"):
        manifest.pop(key, None)
    manifest["search"] = {"study": result.study_name, "storage": result.storage, "trial": chosen.number,
                          "params": chosen.params, "fits": result.fits, "message": result.message,
                          "completed_trials": len(result.records), "front": [r.number for r in result.front],
                          "points": search_points(result.records, result.front), "full_split": result.full_split}
    with BundleWriter(result.output, force=force) as writer:
        for path in bundle.iterdir():
            if path.is_file() and path.name != "manifest.json":
                shutil.copyfile(path, writer.staging / path.name)
        (writer.staging / "search-front.svg").write_bytes((result.search_dir / "front.svg").read_bytes())
        report = (result.search_dir / "front.md").read_text(encoding="utf-8")
        (writer.staging / "search-front.md").write_text(report.replace("(front.svg)", "(search-front.svg)"),
                                                        encoding="utf-8")
        writer.commit(manifest)


def _drop_unneeded_bundles(result: SearchResult, mine: list[int]) -> None:
    """Trial bundles this process wrote that no worker could ship: removed. A worker finishing
    later ships its best fitting trial (always on the front, which a trial never re-enters) or,
    when nothing fits, the closest one (often off the front): both are kept as this worker sees
    them, since trials completed after it can only take those roles with bundles of their own."""
    from edgegolf.search.front import best_fitting, closest

    could_ship = (best_fitting(result.records), closest(result.records))
    keep = {r.number for r in result.front} | {result.chosen.number} | {r.number for r in could_ship if r}
    for number in mine:
        if number not in keep:
            shutil.rmtree(result.search_dir / "trials" / str(number), ignore_errors=True)


def _remove_dead_memos(search_dir: Path) -> None:
    from edgegolf.bundle import pid_alive
    from edgegolf.search.study import HOST

    for folder in search_dir.glob(f"memo-{HOST}-*"):
        pid = folder.name.rsplit("-", 1)[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
