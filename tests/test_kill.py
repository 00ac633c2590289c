"""SIGKILL at several points of `edgegolf compress`, then a rerun: never a half bundle at the
output path, and the rerun removes what the killed runs left, says so, and ends with a
bundle whose every file matches its manifest. Also: a distillation checkpoint killed
mid-write leaves the previous checkpoint whole and named."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgegolf.errors import EXIT_FITS
from tests.test_bad_inputs import ROOT

QUICK = """
[evaluate]
limit = 20
calibration_size = 4
[optimize]
mode = "off"
[quantize]
scheme = "int8-dynamic"
[bench]
runs = 5
warmup = 0
max_seconds = 0.5
"""
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# Where to kill, seen from outside as a real user would: what the staging folder holds.
STAGES = {
    "measuring the teacher": ".work/teacher-tokenizer/tokenizer.json",
    "quantizing": ".work/model-quantized.onnx",
    "finalizing the bundle": "model.onnx",  # copied into the staging root just before the manifest and rename
}


def _kill_when(command: list[str], staging_glob: Path, marker: str, log: Path, timeout: float = 240) -> bool:
    """Start `command`; SIGKILL it once a staging folder holds `marker`. False if it finished first."""
    with open(log, "w") as stderr:  # a file, not a pipe: a full pipe would stall the run
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if any((folder / marker).exists() for folder in staging_glob.parent.glob(staging_glob.name)):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.002)  # the finalizing window is tens of milliseconds
        raise AssertionError(f"{marker} never appeared: {log.read_text()[-2000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow  # four compress runs of the tiny model: about 100 s on the shared 2-core box
def test_killed_at_several_points_then_rerun_gives_a_correct_bundle(tiny_bert, tmp_path):
    from edgegolf.runtime import load

    (tmp_path / "quick.toml").write_text(QUICK)
    out = tmp_path / "bundle"
    command = [sys.executable, "-m", "edgegolf", "compress", str(tiny_bert), "--recipe", str(tmp_path / "quick.toml"),
               "-o", str(out)]
    staging = tmp_path / ".bundle.partial-*"
    killed: list[str] = []
    left: list[Path] = []  # the staging folder each killed run left
    for i, (stage, marker) in enumerate(STAGES.items()):
        log = tmp_path / f"run-{i}.log"
        if _kill_when(command, staging, marker, log):
            killed.append(stage)
            assert not out.exists(), f"killed while {stage}: a bundle appeared at the output path"
        else:  # it finished before the kill: then its bundle is whole; remove it for the next stage
            load(out)
            shutil.rmtree(out)
        if left:  # this run began by removing what the previous killed run left, and said so
            assert f"removed {left[-1]}, left by an interrupted run" in log.read_text()
            assert not left[-1].exists()
        left += [folder for folder in tmp_path.glob(staging.name) if folder not in left]
    assert killed[:2] == ["measuring the teacher", "quantizing"], killed
    assert len(left) == len(killed)

    rerun = subprocess.run(command, env=ENV, check=False, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == EXIT_FITS, rerun.stderr
    if killed[-1] == "finalizing the bundle":
        assert f"removed {left[-1]}, left by an interrupted run" in rerun.stderr
    assert not list(tmp_path.glob(".bundle.partial-*")) and not list(tmp_path.glob(".bundle.replaced-*"))
    model = load(out)  # verifies every file's sha256 against the manifest
    assert model.embed(["Oil prices rose sharply."]).shape[0] == 1
    print(f"killed while: {', '.join(killed)}")


def test_a_dead_force_runs_moved_aside_bundle_is_cleaned_up(tmp_path):
    """A --force run killed between moving the old bundle aside and renaming the new one in
    leaves `.NAME.replaced-PID-*`; the next run removes it like a staging folder."""
    from edgegolf.bundle import remove_stale_staging

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid whose process is gone
    left = [tmp_path / f".out.replaced-{dead.pid}-0a1b2c3d", tmp_path / f".out.partial-{dead.pid}-0a1b2c3d"]
    alive = tmp_path / f".out.partial-{os.getpid()}-0a1b2c3d"  # a run still working: never touched
    for folder in [*left, alive]:
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x")
    assert sorted(remove_stale_staging(tmp_path / "out")) == sorted(left)
    assert alive.exists() and not any(folder.exists() for folder in left)


CHECKPOINT_WRITER = r"""
import sys, torch
from pathlib import Path
from edgegolf.compression.distill.checkpoint import save_checkpoint
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256))
optimizer = torch.optim.AdamW(model.parameters())
folder = Path(sys.argv[1])
step = 0
while True:  # keep writing checkpoints until killed; step N's weights are all N
    step += 1
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(step))
    model(torch.ones(1, 256)).sum().backward()
    optimizer.step()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(step))
    save_checkpoint(folder, step, model, optimizer, {"step": step}, {"cpu": torch.get_rng_state()}, None)
    print(step, flush=True)
"""


@pytest.mark.parametrize("kill_after", [2])
def test_a_checkpoint_killed_mid_write_leaves_the_previous_one_whole(tmp_path, kill_after):
    import torch

    from edgegolf.compression.distill.checkpoint import (
        latest_checkpoint,
        load_checkpoint,
        save_checkpoint,
    )

    folder = tmp_path / "checkpoints"
    process = subprocess.Popen([sys.executable, "-c", CHECKPOINT_WRITER, str(folder)], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for expected in range(1, kill_after + 1):  # these checkpoints are complete
        assert process.stdout.readline().strip() == str(expected), process.stderr.read()
    deadline = time.monotonic() + 60
    while not list(folder.glob(".step-*")):  # the next one is being written: kill it now
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.0005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    unfinished = list(folder.glob(".step-*"))
    path = latest_checkpoint(folder)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256))
    optimizer = torch.optim.AdamW(model.parameters())
    meta, rng, _best = load_checkpoint(path, model, optimizer, torch.device("cpu"))
    step = meta["step"]
    # Killed mid-write of kill_after + 1 as a rule; on a busy machine the writer can finish it,
    # or even the next, between our seeing the write and the kill landing. Whichever step is
    # latest must be whole.
    assert step >= kill_after
    assert path.name == f"step-{step:07d}"
    assert all(torch.all(p == float(step)) for p in model.parameters())  # the whole of that step, nothing mixed
    # the next save (a resumed run) removes the unfinished write
    save_checkpoint(folder, step + 1, model, optimizer, {"step": step + 1}, rng, None)
    assert not list(folder.glob(".step-*")) and latest_checkpoint(folder).name == f"step-{step + 1:07d}"
    print(f"killed while writing step {kill_after + 1}: latest is step {step}; unfinished folders {len(unfinished)}")
