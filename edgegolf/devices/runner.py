"""The benchmark runner copied to a remote device: standard library, numpy and onnxruntime only.

It must run where edgegolf is not installed, so it imports nothing from edgegolf; it
only collects raw per-call times, and the host summarises them with the same
`latency_stats` as local runs (one statistics code path).

    python3 runner.py request.json   ->   one JSON object on stdout

Request (bench): {"onnx": file, "threads": int|null, "warmup", "runs", "max_seconds",
"min_runs", "shapes": [{"batch", "seq", "feeds": file.npz}], "cold": index into shapes}.
Request (compare): {"mode": "compare", "graphs": [{"onnx", "feeds"}, {...}], "threads",
"warmup", "rounds", "runs_per_round"}.
A failure prints {"ok": false, "error": kind, "message": ...} and exits 3.
"""

import gc
import json
import os
import platform
import sys
import time


def fail(kind, message):
    json.dump({"ok": False, "error": kind, "message": message}, sys.stdout)
    sys.stdout.write("\n")
    sys.exit(3)


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as status:  # VmHWM: this process only (see memprobe.py)
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def timed(run, warmup, runs, max_seconds, min_runs):
    for _ in range(warmup):
        run()
    samples = []
    floor = min(min_runs, runs)
    budget = None if max_seconds is None else int(max_seconds * 1e9)
    stopped_by = "runs"
    clock = time.perf_counter_ns
    enabled = gc.isenabled()
    gc.disable()
    try:
        started = clock()
        while len(samples) < runs:
            t0 = clock()
            run()
            t1 = clock()
            samples.append((t1 - t0) / 1e6)
            if budget is not None and len(samples) >= floor and t1 - started >= budget:
                stopped_by = "time" if len(samples) < runs else "runs"
                break
    finally:
        if enabled:
            gc.enable()
    return samples, stopped_by


def load_feeds(np, here, name):
    with np.load(os.path.join(here, name)) as data:
        return {key: np.ascontiguousarray(data[key]) for key in data.files}


def open_session(ort, here, onnx, threads):
    options = ort.SessionOptions()  # the same settings as edgegolf.runtime.session
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(os.path.join(here, onnx), sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        fail("load_failed", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def bench(np, ort, here, request):
    """Every shape of one graph, after timing its cold start (load + first run at `cold`)."""
    shapes = request["shapes"]
    feeds = [load_feeds(np, here, shape["feeds"]) for shape in shapes]
    started = time.perf_counter()
    session = open_session(ort, here, request["onnx"], request.get("threads"))
    loaded = time.perf_counter()
    session.run(None, feeds[request.get("cold", 0)])
    first = time.perf_counter()
    results = []
    for shape, feed in zip(shapes, feeds):
        samples, stopped_by = timed(lambda feed=feed: session.run(None, feed), request["warmup"], request["runs"],
                                    request.get("max_seconds"), request.get("min_runs", 20))
        results.append({"batch": shape["batch"], "seq": shape["seq"], "samples_ms": samples, "stopped_by": stopped_by})
    return {"cold_start": {"load_ms": 1e3 * (loaded - started), "first_run_ms": 1e3 * (first - loaded)},
            "shapes": results}


def compare(np, ort, here, request):
    """Two graphs in one process, timed in alternating blocks (A B, B A, ...)."""
    graphs = request["graphs"]
    sessions = [open_session(ort, here, g["onnx"], request.get("threads")) for g in graphs]
    feeds = [load_feeds(np, here, g["feeds"]) for g in graphs]
    calls = [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds)]
    for call in calls:
        for _ in range(request["warmup"]):
            call()
    samples = [[] for _ in calls]
    k = request["runs_per_round"]
    for r in range(request["rounds"]):
        for i in (range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))):
            block, _ = timed(calls[i], 1, k, None, k)
            samples[i].extend(block)
    return {"compare": {"samples_ms": samples}}


def main(argv):
    missing = []
    for module in ("numpy", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        fail("missing_module", ", ".join(missing))
    import numpy as np
    import onnxruntime as ort

    here = os.path.dirname(os.path.abspath(argv[1]))
    with open(argv[1]) as handle:
        request = json.load(handle)
    try:
        load_avg = os.getloadavg()[0]
    except (OSError, AttributeError):
        load_avg = None
    result = (compare if request.get("mode") == "compare" else bench)(np, ort, here, request)
    json.dump(dict({
        "ok": True,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "load_avg": load_avg,
        "peak_rss_bytes": peak_rss_bytes(),
    }, **result), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: runner.py request.json\n")
        sys.exit(2)
    sys.exit(main(sys.argv))
