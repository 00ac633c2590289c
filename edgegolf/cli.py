"""The `edgegolf` command line. It parses and prints; the work happens in the library,
so `edgegolf compress` and `edgegolf.compress()` do the same thing."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgegolf.errors import EXIT_DOES_NOT_FIT, EXIT_ERROR, EXIT_FITS, EdgegolfError, MissingExtraError

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
        help="feature-extraction | text-classification (default: from the model's config).")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="Recipe TOML; flags below override its fields.")] = None,
    budget: Annotated[Optional[str], typer.Option(
        help="Limits, e.g. 'size<=24MB,zstd<=20MB,p50<=8ms,p95<=10ms,memory<=300MB,drop<=0.5'.")] = None,
    prune: Annotated[Optional[str], typer.Option(
        help="Structured pruning, e.g. 'layers=3,heads=0.5,ffn=0.5,vocab=corpus.txt' (fractions are kept).")] = None,
    quantize: Annotated[Optional[str], typer.Option(
        help="default | int8-dynamic | int8-static | int4 | fp16 | none.")] = None,
    calibration: Annotated[Optional[str], typer.Option(
        help="int8-static calibration: minmax | percentile | entropy.")] = None,
    block_size: Annotated[Optional[int], typer.Option(help="int4 block size (16, 32, 64, 128...).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(
        help="Keep nodes in float: a node name or pattern such as '*/layer.0/*' (repeatable).")] = None,
    optimize: Annotated[Optional[str], typer.Option(
        help="Graph fusions: auto (kept only if measured faster) | on | off.")] = None,
    exporter: Annotated[Optional[str], typer.Option(help="torch | optimum (needs the optimum extra).")] = None,
    device: Annotated[Optional[str], typer.Option(help="Device profile for latency, e.g. cpu-1, cpu-2.")] = None,
    data: Annotated[Optional[str], typer.Option(
        help="Evaluation data: bbc-news, or a folder with one sub-folder of .txt files per class.")] = None,
    eval_limit: Annotated[Optional[int], typer.Option(help="Evaluate on a stratified subset of N texts.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(
        help="Run code shipped with the model (recorded in the manifest).")] = False,
    allow_pickle: Annotated[bool, typer.Option(help="Load pickled .bin weights (they can run code).")] = False,
) -> None:
    """Compress a model: export, optimize, quantize, measure every stage, check the budget, write a bundle.

    Exit codes: 0 fits the budget (or no budget), 3 does not fit, 2 bad input or other error.
    """
    pipeline = _pipeline()
    from edgegolf.compression.prune import parse_prune_spec

    overrides = {
        "prune": parse_prune_spec(prune).to_dict() if prune is not None else None,
        "quantize.scheme": quantize,
        "quantize.method": calibration,
        "quantize.block_size": block_size,
        "quantize.exclude": list(exclude) if exclude else None,
        "optimize.mode": optimize,
        "export.exporter": exporter,
        "bench.device": device,
        "evaluate.data": data,
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


def _print_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgegolf.report import COLUMNS, measured_conditions, stage_rows

    console = Console(width=max(120, Console().width))
    table = Table(title=f"{result.source.name} ({result.task})")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in stage_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(f"measured: {measured_conditions(result)}")
    for stage in result.stages:
        if stage.latency.spread_warning:
            console.print(f"[yellow]warning[/yellow] {stage.name}: {stage.latency.spread_warning}")
    style = "green" if result.verdict.fits else "red"
    console.print(f"[bold {style}]{result.verdict.summary()}[/bold {style}]")
    console.print(f"bundle written to {result.output}/ (manifest.json, report.md)")


def main() -> None:
    try:
        app()
    except EdgegolfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted: no bundle was written", file=sys.stderr)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
