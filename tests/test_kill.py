"""SIGKILL at several points of `edgegolf compress`, then a rerun: never a half bundle at the
output path, and the rerun removes what the killed runs left, says so, and ends with a
bundle whose every file matches its manifest. Also: a distillation checkpoint killed
mid-write leaves the previous checkpoint whole and named, and `edgegolf prune` / `edgegolf
distill` killed under --force leave the old output whole (edgegolf.publish)."""

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
from tests.builders.paths import ROOT

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
    """Start `command`; SIGKILL it once a staging folder holds `marker` ("." : the moment the
    folder appears). False if it finished first."""
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


# --- `edgegolf prune` / `edgegolf distill` --force, killed while publishing -------------------
# Run as `python -c STOP_BEFORE_SWAP edgegolf ARGS`: the real command, which stops itself
# (SIGSTOP) once its new output is completely written into the staging folder and before it
# is swapped into place, so that the test's SIGKILL lands at exactly that point.
STOP_BEFORE_SWAP = r"""
import os, runpy, signal, sys
import edgegolf.publish as publish
swap = publish.swap_into_place
def stop_then_swap(staging, output):
    os.kill(os.getpid(), signal.SIGSTOP)
    swap(staging, output)
publish.swap_into_place = stop_then_swap
sys.argv = sys.argv[1:]
runpy.run_module("edgegolf", run_name="__main__", alter_sys=True)
"""


def _hashes(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _kill_when_stopped(command: list[str], log: Path, timeout: float = 300) -> None:
    """Start `command`; once it has stopped itself, SIGKILL it."""
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            pid, status = os.waitpid(process.pid, os.WNOHANG | os.WUNTRACED)
            if pid and os.WIFSTOPPED(status):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
            if pid:
                raise AssertionError(f"it ended before publishing: {log.read_text()[-2000:]}")
            time.sleep(0.01)
        raise AssertionError(f"it never reached publishing: {log.read_text()[-2000:]}")
    finally:
        if process.returncode is None:
            process.kill()
            process.wait()


def _check_killed_force_run_keeps_the_old_output(args: list[str], out: Path, tmp_path: Path) -> str:
    """Kill `edgegolf ARGS --force` twice (while it writes, and when all is written but not yet
    swapped in): the old output at `out` must be whole each time, then a rerun replaces it."""
    old = _hashes(out)
    assert old, "the old output must hold files for this test to mean anything"
    staging = out.parent / f".{out.name}.partial-*"
    landed = _kill_when([sys.executable, "-m", "edgegolf", *args, "--force"], staging, ".", tmp_path / "a.log",
                        timeout=300)
    if landed and list(out.parent.glob(staging.name)):  # killed before publishing: the old output is untouched
        assert _hashes(out) == old
        said = "killed while writing: old output whole"
    else:  # the kill landed after the swap (or the run finished first): the new output is whole
        assert _hashes(out) != old and (out / "config.json").is_file() and (out / "model.safetensors").is_file()
        said = "the run published before the kill landed"
        shutil.rmtree(out)
        shutil.copytree(tmp_path / "old-copy", out)
    _kill_when_stopped([sys.executable, "-c", STOP_BEFORE_SWAP, "edgegolf", *args, "--force"], tmp_path / "b.log")
    written = [folder for folder in out.parent.glob(staging.name) if (folder / "model.safetensors").is_file()]
    assert written, "the killed run should have left its complete staging folder"
    assert _hashes(out) == old  # same files, same bytes
    rerun = subprocess.run([sys.executable, "-m", "edgegolf", *args, "--force"], env=ENV, check=False,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "left by an interrupted run" in rerun.stderr
    assert not list(out.parent.glob(staging.name)) and not list(out.parent.glob(f".{out.name}.replaced-*"))
    assert _hashes(out) != old and (out / "model.safetensors").is_file()
    return said


@pytest.mark.slow  # three prune runs of the tiny model: about 45 s on the shared 2-core box
def test_a_killed_prune_force_run_leaves_the_old_output_whole(tiny_bert, tmp_path):
    out = tmp_path / "pruned"
    first = subprocess.run([sys.executable, "-m", "edgegolf", "prune", str(tiny_bert), "--spec", "layers=1",
                            "--calibration-size", "8", "-o", str(out)], env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    shutil.copytree(out, tmp_path / "old-copy")
    args = ["prune", str(tiny_bert), "--spec", "layers=1,ffn=0.5", "--calibration-size", "8", "-o", str(out)]
    print(_check_killed_force_run_keeps_the_old_output(args, out, tmp_path))


@pytest.mark.slow  # two distill runs and a prune of the tiny model: about 60 s
def test_a_killed_distill_force_run_leaves_the_old_output_whole(tiny_bert, pruned_folder, tmp_path):
    out = tmp_path / "distilled"
    shutil.copytree(pruned_folder, out)  # an earlier output: a whole model folder
    shutil.copytree(out, tmp_path / "old-copy")
    args = ["distill", str(tiny_bert), str(pruned_folder), "-o", str(out), "--spec",
            "steps=2,batch_size=4,max_length=16,eval_every=0"]
    print(_check_killed_force_run_keeps_the_old_output(args, out, tmp_path))
