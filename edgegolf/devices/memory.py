"""Peak resident memory of a fresh process that loads an artifact and runs it once.

The probe runs in a child (`edgegolf.devices.memprobe`) so that the number covers
exactly what an app pays: interpreter, libraries, weights, one inference.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import edgegolf
from edgegolf import errors
from edgegolf.errors import EdgegolfError
from edgegolf.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0


def peak_rss_onnx(onnx_path: str | Path, tokenizer_path: str | Path, spec: ModelSpec, **probe: Any) -> int:
    """Peak RSS in bytes of a process that opens the ONNX model through the runtime and runs it;
    `probe` are probe_onnx's keywords (threads and texts required), checked there."""
    return int(probe_onnx(onnx_path, tokenizer_path, spec, **probe)["peak_rss_bytes"])


def probe_onnx(
    onnx_path: str | Path,
    tokenizer_path: str | Path,
    spec: ModelSpec,
    *,
    threads: int | None,
    batch: int = 1,
    seq: int = 128,
    texts: Sequence[str],
    cores: Sequence[int] | None = None,
    providers: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """A fresh process's cold start: peak_rss_bytes, load_ms (session + tokenizer) and first_run_ms."""
    from edgegolf.runtime.registry import model_class

    return _probe_result({
        "kind": "onnx", "modules": _outside_modules(model_class(spec.task)), "onnx_path": str(Path(onnx_path).resolve()), "tokenizer_path": str(Path(tokenizer_path).resolve()),
        "spec": spec.to_dict(), "threads": threads, "batch": batch, "seq": seq, "texts": list(texts),
        "cores": list(cores) if cores else None, "providers": providers,
    }, timeout)


def peak_rss_torch(
    model_dir: str | Path,
    task: str,
    *,
    threads: int | None,
    batch: int = 1,
    seq: int = 128,
    texts: Sequence[str],
    cores: Sequence[int] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Peak RSS in bytes of a process that loads the PyTorch model through the task adapter and runs it."""
    from edgegolf.tasks import get_task

    return _probe({
        "kind": "torch", "modules": _outside_modules(type(get_task(task))), "model_dir": str(Path(model_dir).resolve()), "task": task, "threads": threads,
        "batch": batch, "seq": seq, "texts": list(texts), "cores": list(cores) if cores else None,
    }, timeout)


def _outside_modules(cls: type | None) -> list[str]:
    """The module the child must import to know a plugin's task (the built-ins register themselves).

    Only that module, not every plugin: a runtime model's module imports no torch, and the
    child's peak memory should be what an app that imports it would see.
    """
    module = getattr(cls, "__module__", "") or ""
    return [module] if module and module != "edgegolf" and not module.startswith("edgegolf.") else []


def _probe(request: dict[str, Any], timeout: float) -> int:
    return int(_probe_result(request, timeout)["peak_rss_bytes"])


def _probe_result(request: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    # the child must import this same edgegolf, installed or not
    root = str(Path(edgegolf.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    label = Path(request.get("onnx_path") or request["model_dir"]).name
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edgegolf.devices.memprobe"], input=json.dumps(request), capture_output=True,
            text=True, timeout=timeout, env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        raise EdgegolfError(f"memory probe of {label} ran past {timeout:g} s; accepted: a model that loads and "
                            "runs once within that time") from None
    if done.returncode != 0:
        raise _child_error(label, done.returncode, done.stderr)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
        peak = int(result["peak_rss_bytes"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise EdgegolfError(f"memory probe of {label} printed no result: {done.stdout[-200:]!r}") from None
    log.debug("memory probe of %s: peak %d bytes (%d before loading)", label, peak, result.get("baseline_rss_bytes", 0))
    return result


def _child_error(label: str, code: int, stderr: str) -> EdgegolfError:
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else f"exit code {code}, no message"
    match = re.fullmatch(r"(\w+Error): (.*)", last)
    if match:  # the child raised one of our own errors: re-raise it as the same class
        cls = getattr(errors, match.group(1), None)
        if isinstance(cls, type) and issubclass(cls, EdgegolfError):
            return cls(match.group(2))
    return EdgegolfError(f"memory probe of {label} failed (exit code {code}): {last}")
