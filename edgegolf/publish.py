"""Publishing an output folder atomically, for every writer (bundles, pruned and distilled folders).

    with StagedFolder(out, force=force) as staged:
        ...write everything into staged.staging...
        staged.publish()

Everything is written into a hidden staging folder beside the output (`.NAME.partial-PID-*`,
on the same filesystem, so renames are atomic). `publish` puts it in place of an existing
output in one atomic exchange where the system offers it (Linux), else in two renames
(`.NAME.replaced-PID-*` holds the old output between them), then removes the old output. The
output path never holds a half-written output; on Linux it always holds the whole old output
or the whole new one. The next run removes what a dead run left (names whose process id no
longer exists). Leaving the `with` block without publishing removes the staging folder.

One file is published the same way, by `atomic_output` (an exported or quantized graph, a report,
a cache entry): written under a temporary name beside it, renamed into place only when whole.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from edgegolf.errors import OutputExistsError

log = logging.getLogger(__name__)

STAGING_MARK = "partial"  # .NAME.partial-PID-RANDOM: being written
REPLACED_MARK = "replaced"  # .NAME.replaced-PID-RANDOM: the old output, moved aside by --force


def check_output(output: Path, force: bool, *, option: str = "-o", folders_only: bool = True) -> None:
    """Refuse early (before any work) to overwrite an existing output without `force`, or a file at all."""
    hint = f"choose another {option}".rstrip()
    if output.exists() and not force:
        raise OutputExistsError(f"output {str(output)!r} already exists; pass --force to replace it, or {hint}")
    if folders_only and output.exists() and not output.is_dir():
        raise OutputExistsError(f"output {str(output)!r} is a file, not a bundle folder; remove it or {hint}")


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with this id still exists (a killed run's does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _beside(output: Path, mark: str) -> Path:
    return output.parent / f".{output.name}.{mark}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_staging(output: Path) -> list[Path]:
    """Remove staging folders left by runs that were killed (their process is gone), and the
    old output a `--force` run had moved aside when it was killed between its two renames."""
    removed = []
    left = [*output.parent.glob(f".{output.name}.{STAGING_MARK}-*"),
            *output.parent.glob(f".{output.name}.{REPLACED_MARK}-*")]
    for candidate in left:
        pid = candidate.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not pid_alive(int(pid)):
            _remove(candidate)
            removed.append(candidate)
            log.warning("removed %s, left by an interrupted run", candidate)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step: Linux renameat2(RENAME_EXCHANGE) (since 3.15, glibc
    2.28; https://man7.org/linux/man-pages/man2/rename.2.html). False where the system or the
    filesystem does not offer it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return done == 0  # ENOSYS / EINVAL: not offered here; anything else: the two renames will say why


def swap_into_place(staging: Path, output: Path) -> None:
    """Rename the finished `staging` folder to `output`, replacing what is there (a folder or a
    file) so that `output` always holds the whole old output or the whole new one.

    Where the system can exchange two paths atomically, the old output moves to `staging`'s
    name and is then removed (a run killed in between leaves it as a staging folder, removed
    by the next run). Elsewhere the old output is first renamed aside (`.NAME.replaced-PID-*`):
    between the two renames the output path is briefly absent, never half-written.
    """
    if output.exists() or output.is_symlink():
        if _exchange(staging, output):
            _remove(staging)
            return
        previous = _beside(output, REPLACED_MARK)
        output.rename(previous)
        staging.rename(output)
        _remove(previous)
    else:
        staging.rename(output)


class StagedFolder:
    """A staging folder for `output`, published atomically by `publish()` (see the module docstring).

    `option` is how the command line names the output (for the refusal message); `folders_only`
    refuses to replace a file at the output path even with `force`.
    """

    def __init__(self, output: str | Path, *, force: bool, option: str = "-o", folders_only: bool = True):
        self.output = Path(output)
        self.force = force
        self.option = option
        self.folders_only = folders_only
        check_output(self.output, force, option=option, folders_only=folders_only)
        self.staging = _beside(self.output, STAGING_MARK)

    def __enter__(self) -> StagedFolder:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(self.output)
        self.staging.mkdir()
        return self

    def publish(self) -> Path:
        # it may have appeared while we worked
        check_output(self.output, self.force, option=self.option, folders_only=self.folders_only)
        swap_into_place(self.staging, self.output)
        return self.output

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.staging.exists():  # not published: an error, or the caller chose not to
            shutil.rmtree(self.staging, ignore_errors=True)


@contextmanager
def atomic_output(out_path: str | Path) -> Iterator[Path]:
    """A temporary name beside `out_path` (same folder, so the rename is atomic), renamed to it
    only if the block succeeds; on failure the temporary file is removed and `out_path` is untouched."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
