"""Writing a bundle atomically: everything goes into a hidden staging folder beside the
output, which is renamed into place only once complete. An interrupted run leaves no
half bundle at the output path; its staging folder is removed by the next run."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from edgegolf.errors import OutputExistsError
from edgegolf.runtime.manifest import write_manifest

log = logging.getLogger(__name__)


def check_output(output: Path, force: bool) -> None:
    """Refuse early (before any work) to overwrite an existing output."""
    if output.exists() and not force:
        raise OutputExistsError(f"output {str(output)!r} already exists; pass --force to replace it, or choose another -o")
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"output {str(output)!r} is a file, not a bundle folder; remove it or choose another -o")


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with this id still exists (a killed run's does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(output: Path) -> list[Path]:
    """Remove staging folders left by runs that were killed (their process is gone), and the
    old bundle a `--force` run had moved aside when it was killed between its two renames."""
    removed = []
    left = [*output.parent.glob(f".{output.name}.partial-*"), *output.parent.glob(f".{output.name}.replaced-*")]
    for candidate in left:
        pid = candidate.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
            log.warning("removed %s, left by an interrupted run", candidate)
    return removed


class BundleWriter:
    """`with BundleWriter(out, force) as w: ...write into w.staging...; w.commit(manifest)`."""

    def __init__(self, output: Path, *, force: bool):
        self.output = Path(output)
        self.force = force
        check_output(self.output, force)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(self.output)
        self.staging = self.output.parent / f".{self.output.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.work = self.staging / ".work"  # intermediate artifacts; not part of the bundle

    def __enter__(self) -> "BundleWriter":
        self.work.mkdir(parents=True)
        return self

    def commit(self, manifest: dict) -> dict:
        shutil.rmtree(self.work)
        full = write_manifest(self.staging, manifest)
        check_output(self.output, self.force)  # it may have appeared while we worked
        previous = None
        if self.output.exists():
            previous = self.output.parent / f".{self.output.name}.replaced-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.output.rename(previous)
        self.staging.rename(self.output)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        return full

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
