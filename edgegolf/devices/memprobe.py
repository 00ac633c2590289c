"""Entry point of the memory probe: `python -m edgegolf.devices.memprobe` in a fresh process.

Reads one JSON request on stdin, loads the artifact, runs it once on real text of the
requested shape, and prints {"peak_rss_bytes": ..., "baseline_rss_bytes": ...} on stdout.
A fresh process is the only way to see what loading costs: in the parent, memory already
held by earlier stages would hide it. Errors a user can fix end as one stderr line
"<ErrorClass>: <message>" and exit code 2.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
from typing import Any

from edgegolf.errors import EdgegolfError


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    On Linux, ru_maxrss is not usable here: the kernel carries the pre-exec address space's
    high-water mark across execve, so a child of a 300 MB parent reports >= 300 MB (measured
    here). VmHWM in /proc/self/status (proc(5)) belongs to the new address space only.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # getrusage(2): Linux reports KiB, macOS reports bytes
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def run_onnx(request: dict[str, Any]) -> dict[str, float]:
    from edgegolf.devices.inputs import fixed_shape_feeds
    from edgegolf.runtime.models import open_model
    from edgegolf.runtime.spec import ModelSpec

    spec = ModelSpec.from_dict(request["spec"])
    started = time.perf_counter()
    model = open_model(request["onnx_path"], request["tokenizer_path"], spec, threads=request["threads"],
                       providers=request.get("providers"))
    loaded = time.perf_counter()
    # tokenizing is an app's cost too, but not the model's cold start: keep it out of the clock
    feeds = fixed_shape_feeds(model, request["texts"], batch=request["batch"], seq=request["seq"])
    first = time.perf_counter()
    model.run(feeds)
    done = time.perf_counter()
    return {"load_ms": 1e3 * (loaded - started), "first_run_ms": 1e3 * (done - first)}


def run_torch(request: dict[str, Any]) -> dict[str, float]:
    import torch
    from transformers import AutoTokenizer

    from edgegolf.devices.inputs import fixed_shape_from_encoder
    from edgegolf.tasks import get_task

    if request["threads"]:
        torch.set_num_threads(request["threads"])
    adapter = get_task(request["task"])
    model = adapter.load_model(request["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(request["model_dir"])
    names = adapter.input_names(model, tokenizer)
    max_length = int(getattr(model.config, "max_position_embeddings", request["seq"]))

    def encode(rows: list[str], length: int | None) -> dict:
        return dict(tokenizer(rows, truncation=True, max_length=length or max_length, padding=True,
                              return_tensors="np"))

    feeds = fixed_shape_from_encoder(encode, names, max_length, request["texts"], batch=request["batch"],
                                     seq=request["seq"])
    adapter.torch_outputs(model, feeds)
    return {}


def main() -> int:
    request = json.load(sys.stdin)
    try:
        if request.get("cores"):
            os.sched_setaffinity(0, request["cores"])  # before any library starts its thread pool
        baseline = peak_rss_bytes()
        for module in request.get("modules") or ():  # a plugin's task: the module that registers it
            try:
                importlib.import_module(module)
            except Exception as exc:  # one line, like every other failure here
                raise EdgegolfError(f"plugin module {module!r} failed to import: {type(exc).__name__}: {exc}") from None
        timings = {"onnx": run_onnx, "torch": run_torch}[request["kind"]](request)
    except EdgegolfError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    json.dump({"peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline, **timings}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
