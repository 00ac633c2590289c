"""Optional extras: import a package an extra provides, or say in one line which extra to install.

    optuna = require_extra("search", "optuna", needed_by="edgegolf search")

Every place that needs an optional package goes through `require_extra`, so a missing
package always ends the same way: MissingExtraError (exit code 2) naming the extra, the
package and the pip command, never an ImportError traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgegolf.errors import MissingExtraError

# extra -> (the package that provides it, how to install it); the extras are pyproject.toml's
EXTRAS: dict[str, tuple[str, str]] = {
    "compress": ("torch, transformers and friends", "pip install 'edgegolf[compress]'"),
    "search": ("optuna", "pip install 'edgegolf[search]'"),
    "remote": ("asyncssh", "pip install 'edgegolf[remote]'"),
    "parquet": ("pyarrow", "pip install 'edgegolf[parquet]'"),
    "chat": ("jinja2", "pip install 'edgegolf[chat]'"),  # causal-lm chat templates in the runtime
    "distributed": ("accelerate", "pip install 'edgegolf[distributed]'"),
    # optimum-onnx requires transformers<4.58, so it lives in its own environment (see the README)
    "optimum": ("optimum-onnx", "pip install -c constraints.txt 'edgegolf[optimum]' in its own environment "
                                "(optimum-onnx requires transformers<4.58; see the README)"),
}


def missing_extra(extra: str, needed_by: str, exc: ImportError | None = None, module: str | None = None,
                  otherwise: str = "") -> MissingExtraError:
    """The one-line error for `needed_by` lacking `extra` (`exc`: the failed import of `module`;
    `otherwise`: what else the user could do, appended after the pip command)."""
    package, install = EXTRAS[extra]
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        asked = (module or "").split(".")[0]
        missing = exc.name.split(".")[0]
        what = f"{package if missing == asked else missing} is not installed"
    elif exc is not None:  # installed, but broken (e.g. a version that does not fit)
        what = f"{module or package} cannot be imported: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    else:
        what = f"{package} is not installed"
    return MissingExtraError(f"{needed_by} needs the '{extra}' extra ({what}): {install}{otherwise}")


def require_extra(extra: str, module: str, *, needed_by: str, otherwise: str = "") -> ModuleType:
    """Import `module` (which `extra` provides) and return it, or raise the one-line error."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(extra, needed_by, exc, module, otherwise) from None


def has_extra(module: str) -> bool:
    """Whether `module` imports (for listings that report what is available without failing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
