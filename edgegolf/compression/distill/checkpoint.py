"""Checkpoints of a distillation run: tensors in safetensors, everything else in JSON.

No pickle anywhere, since a checkpoint may be handed to someone else. A checkpoint is a
folder `step-NNNNNNN/` written under a temporary name and renamed when complete; the file
`latest.json`, replaced atomically afterwards, names the newest one. An interruption at any
moment therefore leaves the previous checkpoint intact and named.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from edgegolf.errors import DataError

LATEST = "latest.json"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, step: int, student: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], rng: dict[str, torch.Tensor],
                    best: dict[str, torch.Tensor] | None, scaler_state: dict[str, Any] | None = None) -> Path:
    """Write `step-N/` atomically, point latest.json at it, then drop older checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    for unfinished in folder.glob(".step-*"):  # left by a run killed mid-write; never named by latest.json
        shutil.rmtree(unfinished, ignore_errors=True)
    name = f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
    save_model(student, str(tmp / "model.safetensors"))
    tensors, optimizer_meta = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
    if best is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
    meta = {"step": step, "state": state, "optimizer": optimizer_meta, "scaler": scaler_state,
            "has_best": best is not None}
    (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    target = folder / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    pointer = folder / f".{LATEST}.tmp"
    pointer.write_text(json.dumps({"checkpoint": name, "step": step}), encoding="utf-8")
    os.replace(pointer, folder / LATEST)
    for old in folder.glob("step-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"checkpoint pointer {str(pointer)!r} is not valid JSON naming a checkpoint; "
                        "delete the checkpoint folder to start over") from None
    path = folder / name
    if not (path / "state.json").exists():
        raise DataError(f"checkpoint {str(path)!r} named by {LATEST} is missing; delete the checkpoint folder to start over")
    return path


def load_checkpoint(path: Path, student: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Restore weights and optimizer in place; returns (json meta, rng tensors, best weights or None)."""
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    load_model(student, str(path / "model.safetensors"), strict=True, device=str(device))
    # on CPU: load_state_dict moves moments to each parameter's device and keeps "step" where AdamW wants it
    _restore_optimizer(optimizer, load_file(str(path / "optimizer.safetensors")), meta["optimizer"])
    rng = load_file(str(path / "rng.safetensors"))
    best = load_file(str(path / "best.safetensors")) if meta.get("has_best") else None
    return meta, rng, best
