"""Turning a compress result into words: the stage table (CLI and report.md) and recipe.toml."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgegolf.recipe import Budget, Recipe

if TYPE_CHECKING:
    from edgegolf.pipeline import CompressResult, StageResult

MB = 1e6
COLUMNS = ("stage", "size MB", "zstd MB", "p50 ms", "p90 ms", "p99 ms", "peak RSS MB", "fidelity cos mean/min",
           "accuracy %")
# Task metrics shown as more columns when a stage measured them (header, format).
METRIC_COLUMNS = {
    "macro_f1": ("macro-F1 %", "{:.2f}"),
    "agreement": ("agreement %", "{:.2f}"),
    "bits_per_byte": ("bits/byte", "{:.4f}"),
    "perplexity": ("perplexity", "{:.2f}"),
}


def metric_keys(result: "CompressResult") -> list[str]:
    return [key for key in METRIC_COLUMNS if any(key in stage.metrics for stage in result.stages)]


def table_columns(result: "CompressResult") -> list[str]:
    return [*COLUMNS, *(METRIC_COLUMNS[key][0] for key in metric_keys(result))]


def stage_row(stage: "StageResult", extra: list[str] = ()) -> list[str]:
    m = stage.metrics
    fidelity = "-"
    if "fidelity_mean_cosine" in m:
        fidelity = f"{m['fidelity_mean_cosine']:.4f}"
        if "fidelity_min_cosine" in m:
            fidelity += f" / {m['fidelity_min_cosine']:.4f}"
    lat = stage.latency
    return [
        f"{stage.name} (reference)" if stage.reference else stage.name,
        f"{stage.size.raw_bytes / MB:.1f}",
        f"{stage.size.zstd_bytes / MB:.1f}",
        f"{lat.p50_ms:.2f}",
        f"{lat.p90_ms:.2f}",
        f"{lat.p99_ms:.2f}",
        f"{stage.peak_rss_bytes / MB:.0f}",
        fidelity,
        f"{m['accuracy']:.2f}",
        *(METRIC_COLUMNS[key][1].format(m[key]) if key in m else "-" for key in extra),
    ]


def stage_rows(result: "CompressResult") -> list[list[str]]:
    extra = metric_keys(result)
    return [stage_row(stage, extra) for stage in result.stages]


def measured_conditions(result: "CompressResult") -> str:
    bench = result.recipe.bench
    threads = result.profile.threads or "all"
    load = result.final.latency.load_avg
    return (f"latency: batch {bench.batch} x {bench.seq} tokens, device profile {result.profile.name} "
            f"({threads} thread{'s' if threads != 1 else ''}), load average {load:.2f} at the start; "
            f"accuracy: {_accuracy_meaning(result.task)} on {result.recipe.evaluate.data}")


def _accuracy_meaning(task: str) -> str:
    if task == "causal-lm":
        return "next-token top-1 accuracy of the held-out text"
    return "linear-probe accuracy on frozen embeddings" if task == "feature-extraction" else "test-split accuracy"


def markdown_table(rows: list[list[str]], columns: list[str] | tuple[str, ...] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(result: "CompressResult") -> str:
    notes = [f"- **{s.name}** ({s.description}): " + "; ".join(s.notes) for s in result.stages if s.notes]
    warnings = [f"- {s.name}: {s.latency.spread_warning}" for s in result.stages if s.latency.spread_warning]
    parts = [
        f"# edgegolf report: {result.source.name} ({result.task})",
        "",
        markdown_table(stage_rows(result), table_columns(result)),
        "",
        f"All numbers are measured in this run: {measured_conditions(result)}.",
        "",
        "## Verdict",
        "",
        result.verdict.summary(),
        "",
    ]
    also = list(result.final.latency_also)
    if also:
        parts += ["## Latency on more device profiles", "",
                  "| stage | " + " | ".join(f"{name} p50 / p90 / p99 ms" for name in [result.profile.name, *also]) + " |",
                  "|---|" + "---|" * (1 + len(also))]
        for stage in result.stages:
            cells = [stage.latency, *(stage.latency_also[name] for name in also)]
            parts.append(f"| {stage.name} | " + " | ".join(
                f"{c.p50_ms:.2f} / {c.p90_ms:.2f} / {c.p99_ms:.2f}" for c in cells) + " |")
        parts.append("")
    if result.verdict.checks:
        parts += [f"- {'fits' if c.fits else 'MISSES'}: {c.describe()}" for c in result.verdict.checks] + [""]
    if notes:
        parts += ["## Stages", "", *notes, ""]
    if warnings:
        parts += ["## Latency spread warnings", "", *warnings, ""]
    return "\n".join(parts)


def recipe_toml(recipe: Recipe, budget: Budget) -> str:
    """The full recipe as TOML: `edgegolf compress SOURCE --recipe recipe.toml` reruns it.

    Written by tomli_w, so any string (newlines, quotes) and any nested table reads back as it
    was. TOML has no null: unset (None) values are left out, which reads back as the default.
    Its file paths are written absolute: read from the bundle, a relative path would be taken
    relative to the bundle folder, not to where the run started."""
    from pathlib import Path

    import tomli_w

    from edgegolf.recipe import resolve_paths

    def without_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): without_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [without_none(v) for v in value]
        return value

    data = recipe.to_dict()
    resolve_paths(data, Path.cwd())
    tables = without_none({**data, "budget": budget.to_dict()})
    return "# written by edgegolf: the recipe this bundle was built with\n\n" + tomli_w.dumps(tables)
