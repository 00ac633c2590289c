"""Distillation across processes, launched as users launch it:
`accelerate launch --multi_gpu --num_processes 2 -m edgegolf distill ...`. On this CPU-only
machine the two processes talk over gloo (NCCL between GPUs); the models are conftest's tiny
real BERT and its pruned student, the data real BBC News text."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.builders.cli import run_cli, run_cli_interrupted_after_checkpoint

pytest.importorskip("accelerate")

# dropout off, no hidden-state term and fp32: then one process with batch 8 and two with batch 4
# each take the same gradient (the hidden-state MSE averages over each process's tokens, not the
# batch's; bf16, the CPU default, rounds the two sums differently)
SPEC = "steps=6,lr=1e-3,max_length=32,eval_every=2,hidden_weight=0,dropout=false,precision=fp32,seed=3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes: int, args: list, cwd: Path) -> subprocess.CompletedProcess:
    """`accelerate launch` of the real CLI in `processes` processes, one torch thread each."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "edgegolf", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_train_the_student_one_process_trains_on_their_combined_batch(tiny_bert, pruned_folder,
                                                                                      tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    code, _, stderr = run_cli(["distill", tiny_bert, pruned_folder, "-o", one, "--spec", SPEC + ",batch_size=8"],
                              capsys)
    assert code == 0, stderr
    result = launch(2, ["distill", tiny_bert, pruned_folder, "-o", two, "--spec", SPEC + ",batch_size=4"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("distilled 6 steps across 2 processes") == 1  # one process reports and writes
    report = json.loads((two / "distill_report.json").read_text())
    assert report["processes"] == 2
    single = json.loads((one / "distill_report.json").read_text())
    assert single["processes"] == 1
    # the held-out loss is scored half by each process and combined: the same as one process scores it
    for mine, theirs in zip(report["eval_history"], single["eval_history"], strict=True):
        assert mine["step"] == theirs["step"] and mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    assert [loss for _, loss in report["loss_history"]] == pytest.approx([loss for _, loss in single["loss_history"]],
                                                                          rel=1e-3)
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    before = load_file(str(pruned_folder / "model.safetensors"))
    assert any(not torch.allclose(a[k], before[k]) for k in a)  # it trained
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no partial folder, checkpoints removed


def test_a_checkpoint_resumes_only_with_the_number_of_processes_that_wrote_it(tiny_bert, pruned_folder, tmp_path,
                                                                              capsys):
    spec = SPEC + ",batch_size=4,checkpoint_every=3"
    out = tmp_path / "out"
    code, _, _ = run_cli_interrupted_after_checkpoint(["distill", tiny_bert, pruned_folder, "-o", out, "--spec", spec],
                                                      3, capsys)
    assert code != 0 and (tmp_path / "out.checkpoints" / "latest.json").exists()
    result = launch(2, ["distill", tiny_bert, pruned_folder, "-o", out, "--spec", spec, "--resume"], tmp_path)
    assert result.returncode != 0, result.stderr[-3000:]  # the launcher says 1 when a process fails
    assert "was written by 1 training process(es), and this run has 2" in result.stderr
    assert "]: Traceback" not in result.stderr  # the processes' own (the launcher's report has one of its own)
    assert not out.exists() and (tmp_path / "out.checkpoints" / "latest.json").exists()  # nothing lost


def test_compress_refuses_to_run_as_several_processes(tiny_bert, tmp_path):
    result = launch(2, ["compress", tiny_bert, "-o", tmp_path / "b", "--prune", "layers=1"], tmp_path)
    assert result.returncode != 0
    assert "compress runs as one process, but it was launched as 2" in result.stderr
    assert "]: Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()
