"""The `edgegolf` command line. It parses and prints; the work happens in the library,
so `edgegolf compress` and `edgegolf.compress()` do the same thing."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgegolf.cli_measure import ProfilesOption, bench_command, compare_command, report_command
from edgegolf.compression.quantize import Int4WeightOnly, Int8Static, scheme_names
from edgegolf.errors import EXIT_DOES_NOT_FIT, EXIT_ERROR, EXIT_FITS, EdgegolfError, MissingExtraError
from edgegolf.plugins import load_plugins
from edgegolf.runtime.registry import task_names

# Choices shown in --help come from the registries, after plugins have registered theirs
# (edgegolf.console loads them before importing this module).
_TASKS = " | ".join(task_names())
_SCHEMES = " | ".join(scheme_names(with_default=True))


def _choices(cls: type, name: str) -> str:
    """A settings field's choices as --help shows them (edgegolf/settings.py declares them once)."""
    from edgegolf.settings import choices_of

    return " | ".join(map(str, choices_of(cls, name)))


def _recipe_choices(section: str, name: str) -> str:
    from edgegolf import recipe

    cls = {"export": recipe.ExportSettings, "optimize": recipe.OptimizeSettings}[section]
    return _choices(cls, name)

app = typer.Typer(
    help="Fit a pretrained Hugging Face model onto an edge budget, and measure the deployed artifact.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log = logging.getLogger("edgegolf")


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Show only warnings and errors.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _pipeline():
    """Import the pipeline, or say which extra is missing."""
    try:
        from edgegolf import pipeline
    except ImportError as exc:
        raise MissingExtraError(
            f"this command needs the 'compress' extra ({exc.name or exc}): pip install 'edgegolf[compress]'"
        ) from None
    return pipeline


@app.command()
def compress(
    source: Annotated[Optional[str], typer.Argument(
        help="A Hugging Face model folder or hub id; omit for the bundled all-MiniLM-L6-v2.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle folder to write.")] = Path("out"),
    task: Annotated[Optional[str], typer.Option(
        help=f"{_TASKS} (default: from the model's config).")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="Recipe TOML; flags below override its fields.")] = None,
    budget: Annotated[Optional[str], typer.Option(
        help="Limits, e.g. 'size<=24MB,zstd<=20MB,p50<=8ms,p95<=10ms,memory<=300MB,drop<=0.5'.")] = None,
    prune: Annotated[Optional[str], typer.Option(
        help="Structured pruning, e.g. 'layers=3,heads=0.5,ffn=0.5,vocab=corpus.txt' (fractions are kept).")] = None,
    distill: Annotated[Optional[str], typer.Option(
        help="Distill the pruned student from the model, e.g. 'steps=1700' (the defaults are the best measured; "
             "edgegolf distill --help lists them), 'steps=600,data=train-split' "
             "(data: train-split, bbc-news, or a .txt/.jsonl/.csv/.parquet file or datasets folder).")] = None,
    quantize: Annotated[Optional[str], typer.Option(
        help=f"{_SCHEMES} (default: edgegolf's tuned int8; with a size limit in --budget, the first of "
             "ours that fits it: README 'Causal language models').")] = None,
    calibration: Annotated[Optional[str], typer.Option(
        help=f"int8-static calibration: {_choices(Int8Static, 'method')}.")] = None,
    block_size: Annotated[Optional[int], typer.Option(
        help=f"int4 block size: {_choices(Int4WeightOnly, 'block_size')}.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(
        help="Keep nodes in float: a node name or pattern such as '*/layer.0/*' (repeatable).")] = None,
    optimize: Annotated[Optional[str], typer.Option(
        help=f"Graph fusions: {_recipe_choices('optimize', 'mode')} (auto: kept unless timed slower, side by side with the export).")] = None,
    exporter: Annotated[Optional[str], typer.Option(
        help=f"{_recipe_choices('export', 'exporter')} (optimum needs the optimum extra).")] = None,
    layout: Annotated[Optional[list[str]], typer.Option(
        help=f"Also lay the bundle out for: {_recipe_choices('export', 'layout')} (repeatable; README 'Layouts').")] = None,
    device: Annotated[Optional[str], typer.Option(help="Device profile for latency, e.g. cpu-1, cpu-2.")] = None,
    data: Annotated[Optional[str], typer.Option(
        help="Evaluation data: bbc-news, a folder with one sub-folder of .txt files per class, "
             "or a .csv/.jsonl/.parquet file; for causal-lm also a .txt file (its last part is held out).")] = None,
    text_column: Annotated[Optional[str], typer.Option(
        help="The text column of a .csv/.jsonl/.parquet --data file (default: text).")] = None,
    label_column: Annotated[Optional[str], typer.Option(
        help="The label column of a .csv/.jsonl/.parquet --data file (default: label).")] = None,
    eval_limit: Annotated[Optional[int], typer.Option(
        help="Score a stratified subset of N texts (default 600; the accuracy is shown with its 95% interval; "
             "for a causal LM, N scored tokens, default 32,768); 0 scores everything.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(
        help="Run code shipped with the model (recorded in the manifest).")] = False,
    allow_pickle: Annotated[bool, typer.Option(help="Load pickled .bin weights (they can run code).")] = False,
) -> None:
    """Compress a model: export, optimize, quantize, measure every stage, check the budget, write a bundle.

    Exit codes: 0 fits the budget (or no budget), 3 does not fit, 2 bad input or other error.
    """
    pipeline = _pipeline()
    from edgegolf.compression.distill import parse_distill_spec
    from edgegolf.compression.prune import parse_prune_spec

    overrides = {
        "prune": parse_prune_spec(prune).to_dict() if prune is not None else None,
        "distill": parse_distill_spec(distill).to_dict() if distill is not None else None,
        "quantize.scheme": quantize,
        "quantize.method": calibration,
        "quantize.block_size": block_size,
        "quantize.exclude": list(exclude) if exclude else None,
        "optimize.mode": optimize,
        "export.exporter": exporter,
        "export.layout": list(layout) if layout else None,
        "bench.device": device,
        "evaluate.data": data,
        "evaluate.text_column": text_column,
        "evaluate.label_column": label_column,
        "evaluate.limit": eval_limit,
    }
    result = pipeline.compress(
        source, output=output, task=task, recipe=recipe, budget=budget, overrides=overrides, force=force,
        trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
    )
    _print_result(result)
    raise typer.Exit(EXIT_FITS if not result.verdict.has_budget or result.verdict.fits else EXIT_DOES_NOT_FIT)


@app.command("prune")
def prune_command(
    source: Annotated[Optional[str], typer.Argument(
        help="A Hugging Face model folder or hub id; omit for the bundled all-MiniLM-L6-v2.")] = None,
    spec: Annotated[str, typer.Option(
        help="What to cut, e.g. 'layers=3,heads=0.5,ffn=0.5,vocab=corpus.txt' (fractions are kept).")] = ...,
    output: Annotated[Path, typer.Option("-o", "--output", help="Hugging Face model folder to write.")] = ...,
    data: Annotated[str, typer.Option(help="Calibration texts: bbc-news or a folder of class sub-folders.")] = "bbc-news",
    calibration_size: Annotated[int, typer.Option(help="Train-split texts that measure importance.")] = 64,
    force: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Prune a model structurally (layers, heads, FFN neurons, vocabulary) and write a Hugging Face folder."""
    report = _pipeline().prune(source, spec=spec, output=output, data=data, calibration_size=calibration_size,
                               force=force)
    print(f"pruned {report.params_before:,} -> {report.params_after:,} parameters "
          f"({report.params_after / report.params_before:.0%}); written to {output}/ (prune_report.json has the rankings)")


def _distill_defaults() -> str:
    from edgegolf.compression.distill.config import DistillConfig

    d = DistillConfig(steps=1)
    return (f"Defaults (the best measured, benchmarks/distill_minilm.py): lr={d.lr:g}, schedule={d.schedule}, "
            f"warmup={d.warmup:g}, batch_size={d.batch_size}, hidden_weight={d.hidden_weight:g}, refit={str(d.refit).lower()}, "
            f"refit_texts={d.refit_texts}, precision={d.precision} (bf16 on GPUs and on CPUs with AVX512-BF16 or AMX, else fp32 on CPU), "
            f"freeze_embeddings={str(d.freeze_embeddings).lower()}, windows={d.windows}, "
            f"dropout={str(d.dropout).lower()}, max_length={d.max_length}, "
            f"threads={d.threads} (CPU training on half the cores: a spinning second thread costs CPU time).")


_DISTILL_DEFAULTS = _distill_defaults()


@app.command("distill")
def distill_command(
    teacher: Annotated[str, typer.Argument(help="The teacher: a Hugging Face model folder.")],
    student: Annotated[str, typer.Argument(help="The student: a model folder, e.g. written by edgegolf prune.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Hugging Face model folder to write.")] = ...,
    data: Annotated[Optional[str], typer.Option(
        help="Transfer texts: train-split (BBC News train), bbc-news, or a .txt/.jsonl/.csv/.parquet file "
             "or a datasets folder.")] = None,
    column: Annotated[Optional[str], typer.Option(help="The text column of a .jsonl/.csv/.parquet/datasets file.")] = None,
    spec: Annotated[str, typer.Option(help=f"Training settings; 'steps=N' is enough. {_DISTILL_DEFAULTS}")] = "steps=600",
    task: Annotated[Optional[str], typer.Option(
        help=f"{_TASKS} (default: from the student's config).")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option(
        help="Where checkpoints go (default: OUTPUT.checkpoints beside the output).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint after an interruption.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Distill a student from a teacher on transfer texts and write a Hugging Face folder (safetensors)."""
    from edgegolf.compression.distill import distill_config_from_dict, parse_distill_spec

    given = {key: value for key, value in (("data", data), ("column", column)) if value is not None}
    config = distill_config_from_dict({**parse_distill_spec(spec).to_dict(), **given})  # a path may hold commas
    _pipeline()  # the same dependencies as compress
    from edgegolf.compression.distill.parallel import is_main_process
    from edgegolf.compression.distill.stage import distill_folder

    report = distill_folder(teacher, student, output, config, task=task, checkpoint_dir=checkpoint_dir,
                            resume=resume, force=force)
    if is_main_process():
        print(f"{report.summary()}; written to {output}/ (distill_report.json has the loss history)")


@app.command("verify")
def verify_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by edgegolf compress.")],
    text: Annotated[Optional[list[str]], typer.Option(
        help="A text to run through the bundle (repeatable); longer than max_length tokens is truncated.")] = None,
) -> None:
    """Check a bundle before deploying it: every file against its manifest sha256, then the graph loads and runs."""
    from edgegolf.runtime import load

    model = load(bundle, threads=1)  # refuses changed, missing or outside-pointing files
    texts = list(text) if text else ["edgegolf verify"]
    feeds = model.encode(texts)
    model.run(feeds)
    print(f"bundle {bundle}/ is intact: {len(model.manifest['files'])} files match manifest.json; "
          f"its {model.spec.task} graph loads and runs")
    for i, (chars, tokens) in enumerate(zip(map(len, texts), feeds["attention_mask"].sum(axis=1)), 1):
        cut = " (the bundle's max_length: longer texts are truncated to it)" if tokens == model.spec.max_length else ""
        print(f"text {i}: {chars:,} characters fed as {int(tokens)} tokens{cut}")


@app.command("search")
def search_command(
    source: Annotated[Optional[str], typer.Argument(
        help="A Hugging Face model folder or hub id; omit for the bundled all-MiniLM-L6-v2.")] = None,
    budget: Annotated[str, typer.Option(
        help="Limits to fit, e.g. 'size<=10MB,p50<=5ms,drop<=1' (the search's constraints); p50<=0.1x: at most "
             "0.1 times the fp32 export's p50, timed in the same run.")] = ...,
    trials: Annotated[int, typer.Option(help="Completed trials the study should hold (all workers, all runs).")] = 20,
    time: Annotated[Optional[str], typer.Option("--time", help="Stop starting trials after this long: 90s, 30m, 2h.")] = None,
    storage: Annotated[Optional[str], typer.Option(
        help="Optuna storage URL shared by workers: sqlite:///search.db (one machine), "
             "postgresql+psycopg2://user:pw@host/db (several). Default: sqlite file OUT.search.db beside OUT.")] = None,
    study: Annotated[Optional[str], typer.Option(help="Study name in the storage (default: edgegolf-<OUT name>).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle folder for the chosen model.")] = Path("out"),
    task: Annotated[Optional[str], typer.Option(help=f"{_TASKS} (default: from the model's config).")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="Base recipe TOML (evaluate, bench, export settings).")] = None,
    device: Annotated[Optional[str], typer.Option(help="Device profile for latency, e.g. cpu-1.")] = None,
    eval_limit: Annotated[Optional[int], typer.Option(
        help="Score a stratified subset of N texts (default 600; the accuracy is shown with its 95% interval; "
             "for a causal LM, N scored tokens, default 32,768); 0 scores everything.")] = None,
    distill: Annotated[Optional[str], typer.Option(
        help="Offer distillation of pruned students with these settings, e.g. 'steps=300' (a choice per trial).")] = None,
    always_distill: Annotated[bool, typer.Option(
        help="With --distill: distill every pruned student that could fit, not as a choice per trial.")] = False,
    space: Annotated[Optional[str], typer.Option(
        help="Narrow what the search varies, e.g. 'max_layers=2,heads=0.5;0.25,embeddings=int4-block' (lists "
             "separated by ';'); keys: min_layers, max_layers, heads, ffn, vocab (minimum token counts, 0: "
             "uncut), schemes, int4_block_sizes, embeddings. Default: everything the pipeline declares.")] = None,
    sampler: Annotated[str, typer.Option(help="Optuna sampler: tpe | nsga2 (both multi-objective, constrained).")] = "tpe",
    seed: Annotated[Optional[int], typer.Option(help="Sampler seed (give workers different seeds).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Run code shipped with the model.")] = False,
) -> None:
    """Search prune, quantization (and with --distill, distillation) settings for the most accurate model that fits the budget.

    Rerun the same command to continue an interrupted search; start it several times on one
    storage to share the trials. Exit codes: 0 a fitting model is in OUT, 3 nothing fits
    (OUT holds the closest candidate), 2 bad input or other error.
    """
    _pipeline()
    from edgegolf.extras import require_extra

    require_extra("search", "optuna", needed_by="edgegolf search")  # before any work
    from edgegolf.search import search

    result = search(source, output=output, budget=budget, trials=trials, time_limit=time, storage=storage,
                    study=study, task=task, recipe=recipe,
                    overrides={"bench.device": device, "evaluate.limit": eval_limit}, distill=distill,
                    always_distill=always_distill, space=space,
                    sampler=sampler, seed=seed, force=force, trust_remote_code=trust_remote_code)
    print(f"## Pareto front ({len(result.records)} completed trials; * = the bundle in {output}/)\n")
    print(result.front_markdown + "\n")
    print(("FITS: " if result.fits else "NOTHING FITS: ") + result.message)
    reuse = result.reuse
    if reuse.get("median_seconds"):
        times = "; ".join(f"{kind}: median {seconds:.1f} s over {reuse['trials'][kind]} trials"
                          for kind, seconds in reuse["median_seconds"].items())
        print(f"trial time by shared work ({times}); reused work had taken {reuse['reused_work_seconds']:.0f} s")
    print(f"this process: {result.wall_seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU")
    print(f"bundle: {output}/ (trial {result.chosen.number}); front: {result.search_dir}/front.md, front.svg, front.html; "
          f"study {result.study_name!r} in {result.storage} (rerun to continue)")
    raise typer.Exit(EXIT_FITS if result.fits else EXIT_DOES_NOT_FIT)


# --- measuring and reports (edgegolf.devices, edgegolf.reports): the commands live in cli_measure.py ---
app.command("bench")(bench_command)
app.command("report")(report_command)
app.command("compare")(compare_command)


@app.command("devices")
def devices_command(profiles: ProfilesOption = None) -> None:
    """List the device profiles, what each needs, and whether this machine has it."""
    from edgegolf.devices.listing import describe_profiles, devices_markdown
    from edgegolf.devices.profiles import load_profiles_toml

    print(devices_markdown(describe_profiles(load_profiles_toml(profiles) if profiles else None)))


def _print_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgegolf.report import measured_conditions, stage_rows, table_columns

    console = Console(width=max(120, Console().width))
    table = Table(title=f"{result.source.name} ({result.task})")
    for column in table_columns(result):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in stage_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(f"measured: {measured_conditions(result)}")
    for stage in result.stages:
        if stage.latency.spread_warning:
            console.print(f"[yellow]warning[/yellow] {stage.name}: {stage.latency.spread_warning}")
    if result.scheme_choice:  # no scheme asked for: the budget's size limit chose one
        console.print(f"quantization: {result.scheme_choice['summary']}", markup=False, soft_wrap=True)
    style = "green" if result.verdict.fits else "red"
    console.print(f"[bold {style}]{result.verdict.summary()}[/bold {style}]")
    console.print(f"bundle written to {result.output}/ (manifest.json, report.md)")


def main() -> None:
    try:  # typer vendors its own click since 0.2x; older releases use click itself
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors

    try:
        load_plugins()  # already done by edgegolf.console; here for callers of main() itself
        # not standalone: a mistyped option or value becomes one `error:` line like every
        # other bad input, instead of click's usage box
        code = app(standalone_mode=False, prog_name="edgegolf")
    except click_errors.NoArgsIsHelpError as exc:  # plain `edgegolf`: the help
        exc.show()
        sys.exit(EXIT_ERROR)
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "edgegolf"
        message = " ".join(exc.format_message().split())
        print(f"error: {message} (see '{where} --help')", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except EdgegolfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, getattr(click_errors, "Abort", KeyboardInterrupt)):
        print("interrupted: no bundle was written", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except BrokenPipeError:  # `edgegolf report ... | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else EXIT_FITS)


if __name__ == "__main__":
    main()
