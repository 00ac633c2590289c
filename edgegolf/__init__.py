"""edgegolf: fit a pretrained Hugging Face model onto an edge budget.

`import edgegolf` stays light: the runtime (`edgegolf.runtime`) must import without torch,
so the pipeline entry point is loaded on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["compress", "__version__"]


def __getattr__(name: str):
    if name == "compress":
        from edgegolf.pipeline import compress

        return compress
    raise AttributeError(f"module 'edgegolf' has no attribute {name!r}")
