"""Writing a bundle atomically (edgegolf.publish): everything goes into a hidden staging folder
beside the output, which is renamed into place only once complete. An interrupted run leaves
no half bundle at the output path; its staging folder is removed by the next run."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgegolf.publish import StagedFolder, check_output, pid_alive, remove_stale_staging
from edgegolf.runtime.manifest import write_manifest

__all__ = ["BundleWriter", "check_output", "pid_alive", "remove_stale_staging"]


class BundleWriter(StagedFolder):
    """`with BundleWriter(out, force) as w: ...write into w.staging...; w.commit(manifest)`."""

    def __init__(self, output: Path, *, force: bool):
        super().__init__(output, force=force)
        self.work = self.staging / ".work"  # intermediate artifacts; not part of the bundle

    def __enter__(self) -> BundleWriter:
        super().__enter__()
        self.work.mkdir()
        return self

    def commit(self, manifest: dict) -> dict:
        """Write manifest.json (the sha256 of every file) and publish the bundle."""
        shutil.rmtree(self.work)
        full = write_manifest(self.staging, manifest)
        self.publish()
        return full
