"""The CLI as a user meets it: one-line errors with exit code 2 and no output left behind,
exit code 3 for a budget that is missed, and no half bundle after an interrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgegolf.errors import EXIT_DOES_NOT_FIT, EXIT_ERROR, EXIT_FITS
from tests.builders.cli import run_cli

QUICK_FLAGS = ["--eval-limit", "40"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "make_args, words",
    [
        (lambda t, m: [m, "--task", "translation"], "task = 'translation' is not accepted"),
        (lambda t, m: [m, "--quantize", "int3"], "int3"),
        (lambda t, m: [m, "--budget", "size<=small"], "budget term 'size<=small' is malformed"),
        (lambda t, m: [m, "--budget", "speed<=3ms"], "unknown 'speed'"),
        (lambda t, m: [str(t / "no-such-model")], "does not exist"),
        (lambda t, m: [m, "--recipe", str(t / "missing.toml")], "recipe file"),
        (lambda t, m: [m, "--recipe", str(_write(t / "r.toml", "[bench]\nbatch = -1\n"))], "bench.batch = -1"),
        (lambda t, m: [m, "--recipe", str(_write(t / "r2.toml", "[bench\n"))], "not valid TOML"),
        (lambda t, m: [m, "--data", str(t / "no-data")], "does not exist"),
        (lambda t, m: [m, "--data", str(_write(t / "d.csv", "body,label\na,x\nb,y\n"))],
         "has no column 'text' (set it with --text-column"),
        (lambda t, m: [m, "--device", "tpu-9"], "tpu-9"),
        (lambda t, m: [m, "--optimize", "sometimes"], "choose one of: auto, on, off"),
        (lambda t, m: ["bert-base-uncased"], "cannot fetch 'bert-base-uncased' from the Hugging Face hub"),
    ],
)
def test_bad_input_gets_one_line_and_no_output(make_args, words, tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["compress", *make_args(tmp_path, str(tiny_bert)), "-o", out], capsys)
    assert code == EXIT_ERROR, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_budget_exit_codes(tiny_bert, tmp_path, capsys):
    out = tmp_path / "fits"
    code, stdout, _ = run_cli(["compress", tiny_bert, "-o", out, *QUICK_FLAGS, "--quantize", "none",
                               "--optimize", "off", "--budget", "size<=100MB,drop<=100"], capsys)
    assert code == EXIT_FITS
    assert "FITS the budget" in stdout and "onnx-fp32" in stdout
    code, stdout, _ = run_cli(["compress", tiny_bert, "-o", out, *QUICK_FLAGS, "--quantize", "none",
                               "--optimize", "off", "--budget", "size<=0.01MB", "--force"], capsys)
    assert code == EXIT_DOES_NOT_FIT
    assert "DOES NOT FIT: size" in stdout and "exceeds 0.01 MB" in stdout
    assert (out / "manifest.json").exists()  # a bundle that misses the budget is still written, and says so


def test_existing_output_needs_force(tiny_bert, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, stderr = run_cli(["compress", tiny_bert, "-o", out], capsys)
    assert code == EXIT_ERROR and "already exists; pass --force" in stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_killed_run_leaves_no_half_bundle_and_next_run_cleans_up(tiny_bert, tmp_path):
    out = tmp_path / "bundle"
    command = [sys.executable, "-m", "edgegolf", "-q", "compress", str(tiny_bert), "-o", str(out), *QUICK_FLAGS]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # Kill it mid-run: once its staging folder holds an exported graph.
    while time.monotonic() < deadline and not list(tmp_path.glob(".bundle.partial-*/.work/*.onnx")):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert list(tmp_path.glob(".bundle.partial-*"))  # the killed run's staging folder
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == EXIT_FITS, rerun.stderr
    assert (out / "manifest.json").exists()
    assert not list(tmp_path.glob(".bundle.partial-*"))  # the stale one was removed
    assert "left by an interrupted run" in rerun.stderr


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "edgegolf", "compress", "--help"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, timeout=120)
    assert result.returncode == 0
    assert "--budget" in result.stdout and "Exit codes" in result.stdout


BLOCK_TORCH = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r}", name=name)
BLOCKED = sys.argv[2].split(",")
sys.meta_path.insert(0, Blocker())
sys.argv = ["edgegolf", "compress", "-o", sys.argv[1]]
from edgegolf.console import main
main()
"""


@pytest.mark.parametrize("missing", ["torch,transformers", "typer,torch,transformers,rich"])
def test_pipeline_command_without_the_extra_names_it(tmp_path, missing):
    """A plain `pip install edgegolf` has the runtime only: the command says which extra to install."""
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(tmp_path / "out"), missing], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                          timeout=120)
    assert done.returncode == EXIT_ERROR
    assert "the 'compress' extra" in done.stderr and "pip install 'edgegolf[compress]'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_prune_command_writes_a_loadable_folder(tiny_bert, tmp_path, capsys):
    from edgegolf.compression.prune import load_pruned

    out = tmp_path / "pruned"
    code, stdout, stderr = run_cli(["prune", tiny_bert, "--spec", "layers=1,ffn=0.5", "-o", out], capsys)
    assert code == EXIT_FITS, stderr
    assert "parameters" in stdout
    model = load_pruned(out)
    assert model.config.num_hidden_layers == 1 and model.config.intermediate_size == 32
    code, _, stderr = run_cli(["prune", tiny_bert, "--spec", "layers=1", "-o", out], capsys)
    assert code == EXIT_ERROR and "already exists" in stderr
    code, _, stderr = run_cli(["prune", tiny_bert, "--spec", "layerz=1", "-o", tmp_path / "x"], capsys)
    assert code == EXIT_ERROR and "layerz" in stderr and not (tmp_path / "x").exists()
