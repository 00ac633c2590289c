"""Reports people read, from one renderer: a bundle's manifest (or a report document built
from manifests and measurements) -> Markdown, a self-contained HTML page, and SVG plots.

- stages.py: the manifest read once (stages in pipeline order, the stage table, the verdict)
- tradeoff.py: the trade-off plot (quality against latency and size, budget, chosen bundle)
- document.py: the JSON report document (versioned schema) of `edgegolf bench/report/compare`
- markdown.py, html.py, svg.py: the renderers
"""

from __future__ import annotations

from typing import Any

from edgegolf.reports.document import (
    SCHEMA_VERSION,
    bundle_section,
    load_schema,
    new_document,
    to_json,
    validate,
    write_outputs,
)
from edgegolf.reports.html import html_from_manifest, render_html
from edgegolf.reports.markdown import render_markdown
from edgegolf.reports.stages import bundle_view, markdown_from_manifest, tradeoff_plot

PLOT_FILE = "report.svg"


def bundle_reports(manifest: dict[str, Any]) -> dict[str, str]:
    """The report files of a compress bundle, by file name: report.md (linking the plot),
    report.html (the plot inline) and report.svg (the trade-off plot on its own)."""
    plot = tradeoff_plot(bundle_view(manifest), standalone=True)
    files = {"report.md": markdown_from_manifest(manifest, plot_file=PLOT_FILE if plot else None),
             "report.html": html_from_manifest(manifest)}
    if plot:
        files[PLOT_FILE] = plot
    return files


__all__ = ["SCHEMA_VERSION", "bundle_reports", "bundle_section", "bundle_view", "html_from_manifest", "load_schema",
           "markdown_from_manifest", "new_document", "render_html", "render_markdown", "to_json", "tradeoff_plot",
           "validate", "write_outputs"]
