"""Reports people read: one JSON document (versioned schema), rendered as Markdown or as a
self-contained HTML page with inline SVG plots. The document is built from measurements
(edgegolf.devices) and bundle manifests; the renderers only format it."""

from __future__ import annotations

from edgegolf.reports.document import (
                                       SCHEMA_VERSION,
                                       bundle_section,
                                       load_schema,
                                       new_document,
                                       to_json,
                                       validate,
                                       write_outputs,
)
from edgegolf.reports.html import render_html
from edgegolf.reports.markdown import render_markdown

__all__ = ["SCHEMA_VERSION", "bundle_section", "load_schema", "new_document", "render_html", "render_markdown",
           "to_json", "validate", "write_outputs"]
