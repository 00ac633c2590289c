"""The report document: {"schema": "edgegolf.report", "schema_version": 1, "kind": ...}.

kind "bench" holds a `bench` section (edgegolf.devices.bench), "compare" a `compare`
section, "report" a `bundle` section (the manifest's stage table) and optionally `bench`.
The schema is schema/report-v1.schema.json; a change to the shape bumps SCHEMA_VERSION.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import edgegolf
from edgegolf.errors import MissingExtraError, RecipeError
from edgegolf.publish import atomic_output

SCHEMA_ID = "edgegolf.report"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("schema") / f"report-v{SCHEMA_VERSION}.schema.json"


def new_document(kind: str, **sections: Any) -> dict[str, Any]:
    from edgegolf.devices.bench import local_runtime

    return {
        "schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION, "kind": kind,
        "created_by": f"edgegolf {edgegolf.__version__}",
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": local_runtime(),
        **{name: value for name, value in sections.items() if value is not None},
    }


def bundle_section(path: str | Path) -> dict[str, Any]:
    """A bundle's stage table (size, latency, accuracy per pipeline stage, in pipeline order),
    budget and verdict from its manifest, with the bundle's files measured now."""
    from edgegolf.devices.artifact import open_artifact
    from edgegolf.devices.size import measure_size
    from edgegolf.reports.stages import bundle_view

    artifact = open_artifact(path)
    size = measure_size(artifact.files())
    return {"artifact": artifact.to_dict(), **bundle_view(artifact.manifest or {}),
            "size_bytes": size.raw_bytes, "zstd_bytes": size.zstd_bytes}


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null (an unknown load average, say)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(_finite(document), indent=1, allow_nan=False) + "\n"


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate(document: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if the document (as written to JSON) breaks the schema."""
    try:
        import jsonschema
    except ImportError:
        raise MissingExtraError("validating a report needs jsonschema: pip install 'jsonschema>=4'") from None
    jsonschema.validate(json.loads(to_json(document)), load_schema(),
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def write_outputs(document: dict[str, Any], *, json_path: str | Path | None = None,
                  html_path: str | Path | None = None) -> list[Path]:
    """Write the JSON and/or HTML files whole or not at all (a temp file renamed into place)."""
    from edgegolf.reports.html import render_html

    texts = {}
    if json_path is not None:
        texts[Path(json_path)] = to_json(document)
    if html_path is not None:
        texts[Path(html_path)] = render_html(document)
    for path in texts:
        if not path.parent.is_dir():
            raise RecipeError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    written = []
    for path, text in texts.items():
        with atomic_output(path) as partial:
            partial.write_text(text, encoding="utf-8")
        written.append(path)
    return written
