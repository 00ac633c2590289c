"""Errors a user can cause, and the exit codes the CLI maps them to.

Every error a user's input can provoke is an `EdgegolfError`: its message is one line that
names what was wrong and what would be accepted. The CLI prints that line and exits with
`exit_code`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_FITS = 0
EXIT_INTERNAL = 1  # an unexpected exception: a bug in edgegolf
EXIT_ERROR = 2  # bad input, missing file, unreachable source...
EXIT_DOES_NOT_FIT = 3  # the run worked but the artifact misses the budget


class EdgegolfError(Exception):
    """A problem the user can fix; the message says what and how."""

    exit_code = EXIT_ERROR


class RecipeError(EdgegolfError):
    """A recipe or budget field has a value that is not accepted."""


class SourceError(EdgegolfError):
    """The model source (folder, hub id) cannot be used."""


class DataError(EdgegolfError):
    """Evaluation or calibration data is missing, empty or malformed."""


class ExportError(EdgegolfError):
    """Export to ONNX failed, or the exported graph disagrees with PyTorch."""


class DoesNotFitError(EdgegolfError):
    """Nothing could be made for the budget, so no bundle was written (a size limit left to choose
    the quantization scheme, and no candidate scheme could quantize the graph: quantize/choose.py)."""

    exit_code = EXIT_DOES_NOT_FIT


class OutputExistsError(EdgegolfError):
    """The output folder exists and --force was not given."""


class MissingExtraError(EdgegolfError):
    """A pipeline command was called without the optional dependencies it needs."""


class BundleError(EdgegolfError):
    """A bundle is missing a file, has a file that differs from its manifest, or is unreadable."""


class InputError(EdgegolfError, ValueError):
    """An application passed the runtime input it cannot run (empty list, non-string...)."""


class PruneError(EdgegolfError):
    """The model cannot be pruned as asked: unsupported architecture or tokenizer, or sizes out of range."""


class DeviceError(EdgegolfError):
    """A device cannot be measured: unreachable, refused, or missing the runtime it needs."""
