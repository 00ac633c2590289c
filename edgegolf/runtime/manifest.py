"""manifest.json: what a bundle holds, and the proof that its files are the ones built.

The pipeline calls `write_manifest` last, so the manifest lists the sha256 of every file in
the bundle. The runtime calls `read_manifest` first and refuses a bundle whose files were
changed, removed, or listed at paths that reach outside the bundle folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edgegolf.errors import BundleError
from edgegolf.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT = "edgegolf-bundle"
FORMAT_VERSION = 1

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, manifest: dict) -> dict:
    """Add format, format_version and the hash of every file under `folder`; write manifest.json.

    Returns the full dict as written. A symlink in the folder is refused: a bundle is
    copied and shipped as plain files, and a link would not travel with it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"bundle folder {str(folder)!r} does not exist or is not a folder")
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise BundleError(f"bundle file {relative!r} is a symlink; a bundle holds plain files only")
        if not path.is_file() or relative == MANIFEST_NAME:
            continue
        files[relative] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    full = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files}
    if "model" in full:
        ModelSpec.from_dict(full["model"])  # never write a bundle the runtime would refuse
    text = json.dumps(full, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    # write then rename: a reader never sees half a manifest
    partial = folder / f".{MANIFEST_NAME}.partial"
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, folder / MANIFEST_NAME)
    log.debug("wrote %s listing %d files", folder / MANIFEST_NAME, len(files))
    return full


def read_manifest(folder: Path, *, verify: bool = True) -> dict:
    """Read and check a bundle's manifest.json.

    Always checks the format, the model section and that every listed path stays inside
    the folder. With `verify`, also that every listed file exists and matches its hash.
    """
    folder = Path(folder)
    if not folder.exists():
        raise BundleError(f"bundle folder {str(folder)!r} does not exist; pass the folder that holds {MANIFEST_NAME}")
    if not folder.is_dir():
        raise BundleError(f"bundle path {str(folder)!r} is a file; pass the bundle folder that holds {MANIFEST_NAME}")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{str(folder)!r} has no {MANIFEST_NAME}; it is not an edgegolf bundle (or is incomplete)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{MANIFEST_NAME} in {str(folder)!r} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST_NAME} in {str(folder)!r} holds a {type(manifest).__name__}; "
                          "expected a JSON object")
    _check_format(manifest)
    ModelSpec.from_dict(manifest.get("model"))
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{MANIFEST_NAME} has no 'files' table; expected the sha256 and size of every bundle file")
    root = folder.resolve()
    for name, entry in files.items():
        target = _inside(root, name)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise BundleError(f"{MANIFEST_NAME} entry for {name!r} has no sha256 string")
        if verify:
            _verify_file(target, name, entry["sha256"])
    spec = manifest["model"]
    for key in ("onnx_file", "tokenizer_file"):
        name = spec.get(key, ModelSpec.__dataclass_fields__[key].default)
        if name not in files:
            raise BundleError(f"the model's {key} {name!r} is not listed in {MANIFEST_NAME}; "
                              "an unlisted file cannot be verified")
    if verify:
        _warn_unlisted(root, files)
    return manifest


def _check_format(manifest: dict) -> None:
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST_NAME} format is {manifest.get('format')!r}; this runtime reads {FORMAT!r}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{MANIFEST_NAME} format_version is {version!r}; this runtime reads version {FORMAT_VERSION} "
            "(rebuild the bundle, or use the edgegolf release that built it)"
        )


def _inside(root: Path, name: Any) -> Path:
    """The file a listed name points to, refused unless it stays inside the bundle."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise BundleError(f"{MANIFEST_NAME} lists a file named {name!r}; expected a relative path inside the bundle")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise BundleError(f"{MANIFEST_NAME} lists an absolute path {name!r}; expected a path relative to the bundle")
    if ".." in posix.parts or ".." in windows.parts:
        raise BundleError(f"{MANIFEST_NAME} lists {name!r}, which contains '..'; expected a path inside the bundle")
    target = (root / posix).resolve()
    if not target.is_relative_to(root):
        raise BundleError(f"{MANIFEST_NAME} lists {name!r}, which resolves (through a symlink) outside the bundle "
                          f"to {str(target)!r}")
    return target


def _verify_file(target: Path, name: str, expected: str) -> None:
    if not target.is_file():
        raise BundleError(f"{name} is listed in {MANIFEST_NAME} but missing from the bundle; "
                          "copy the whole bundle folder")
    if sha256_file(target) != expected:
        raise BundleError(f"{name} differs from its manifest hash — the bundle was modified after it was built")


def _warn_unlisted(root: Path, files: dict) -> None:
    # The runtime loads only listed files, but an extra file is worth a word: it was not built here.
    listed = set(files) | {MANIFEST_NAME}
    extra = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                   and p.relative_to(root).as_posix() not in listed)
    if extra:
        log.warning("bundle %s holds files its manifest does not list (not verified, not used): %s", root, extra)
