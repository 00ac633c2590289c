"""Data-parallel distillation: several processes (GPUs, or machines) share one run through accelerate.

Every process runs the same command, started by `accelerate launch` (or torchrun), which sets
WORLD_SIZE, RANK and the rendezvous address. Each process trains on its own slice of every
step's batch; DistributedDataParallel averages the gradients, so the student stays identical
everywhere and a step sees batch_size x grad_accum x processes texts. Without a launcher (one
process) nothing here imports accelerate or torch.distributed.

    accelerate launch --multi_gpu --num_processes 4 -m edgegolf distill TEACHER STUDENT --data ... -o OUT
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch



def launched_processes() -> int:
    """How many processes the launcher started (1 when there is none)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def require_launcher() -> Any:
    """accelerate, when this process is one of several a launcher started (None for one process),
    or the one-line error naming the `distributed` extra."""
    count = launched_processes()
    if count == 1:
        return None
    from edgegolf.extras import require_extra

    return require_extra("distributed", "accelerate",
                         needed_by=f"distillation launched as {count} processes (WORLD_SIZE={count})")


class Processes:
    """This process's place among the training processes, and the few collective steps the
    loop needs. With no launcher it is one process, where every collective is the identity."""

    def __init__(self, count: int = 1, rank: int = 0, state: Any = None):
        self.count, self.rank, self.state = count, rank, state

    @classmethod
    def current(cls, device_type: str) -> Processes:
        count = launched_processes()
        if count == 1:
            return cls()
        PartialState = require_launcher().PartialState
        # accelerate joins the launcher's process group: NCCL between GPUs, gloo on CPUs
        state = PartialState(cpu=device_type == "cpu")
        return cls(state.num_processes, state.process_index, state)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The device this process trains on (its own GPU), or None to choose as one process does."""
        if self.state is None:
            return None
        device = self.state.device
        return torch.device("cpu") if device.type == "cpu" else device  # accelerate says cpu:0, which safetensors refuses

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train through: DistributedDataParallel across processes, else `model`."""
        if self.state is None:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = self.device
        # find_unused_parameters: parts the loss does not read (a BERT pooler) get no gradient
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                       find_unused_parameters=True)

    def no_sync(self, trained: torch.nn.Module, last_micro_step: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step."""
        if self.state is None or last_micro_step:
            return contextlib.nullcontext()
        return trained.no_sync()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all processes."""
        if self.state is None:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, value: Any) -> list[Any]:
        """`value` of every process, in rank order (picklable Python objects)."""
        if self.state is None:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.count
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def is_main_process() -> bool:
    """True in the process that writes results: the only one, or rank 0 of a launched group."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True
