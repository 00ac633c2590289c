"""A compress result in words: report.md and the terminal's stage table, both rendered from the
manifest by edgegolf.reports (the one renderer), and recipe.toml."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgegolf.recipe import Budget, Recipe
from edgegolf.reports.stages import COLUMNS, METRIC_COLUMNS, bundle_view, markdown_from_manifest

if TYPE_CHECKING:
    from edgegolf.pipeline import CompressResult

__all__ = ["COLUMNS", "METRIC_COLUMNS", "manifest_of", "markdown_report", "measured_conditions", "recipe_toml",
           "stage_rows", "table_columns"]


def manifest_of(result: CompressResult) -> dict[str, Any]:
    """The result's manifest; before the bundle is committed (result.manifest still empty),
    the fields the report reads, built from the result the same way the manifest is."""
    if result.manifest.get("stages"):
        return result.manifest
    return {
        "task": result.task, "source": result.source.to_dict(), "recipe": result.recipe.to_dict(),
        "budget": result.budget.to_dict(), "device_profile": result.profile.name,
        "device": {"threads": result.profile.threads},
        "stages": {s.name: s.summary() for s in result.stages}, "verdict": result.verdict.to_dict(),
    }


def markdown_report(result: CompressResult) -> str:
    """report.md: a thin wrapper; edgegolf.reports.markdown_from_manifest is the renderer."""
    return markdown_from_manifest(manifest_of(result))


def table_columns(result: CompressResult) -> list[str]:
    from edgegolf.reports.stages import table_columns as columns

    return columns(bundle_view(manifest_of(result))["stages"])


def stage_rows(result: CompressResult) -> list[list[str]]:
    from edgegolf.reports.stages import stage_rows as rows

    return rows(bundle_view(manifest_of(result))["stages"])


def measured_conditions(result: CompressResult) -> str:
    return bundle_view(manifest_of(result))["conditions"]


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
