"""Real bad input files shared by the bad-inputs table and other tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


REMOTE_CODE_MARKER = "remote-code-ran.txt"


# transformers imports remote code from a copy in its modules cache, so the marker path is absolute
REMOTE_CODE = """
from pathlib import Path
Path({marker!r}).write_text("the model's code ran")
from transformers import BertModel
class CustomModel(BertModel):
    pass
"""


def asks_for_remote_code(folder: Path) -> None:
    """config.json maps AutoModel to custom_model.py beside it; importing that file writes a
    marker file beside the model folder."""
    marker = str(folder.resolve().parent / REMOTE_CODE_MARKER)
    (folder / "custom_model.py").write_text(REMOTE_CODE.format(marker=marker))
    edit_json(folder / "config.json", lambda c: c.update(auto_map={"AutoModel": "custom_model.CustomModel"}))

