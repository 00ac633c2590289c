"""Does a remote run measure what a local run measures?

Times the same MiniLM fp32 bundle (batch 1 x 128 tokens, one thread) two ways, in
alternating rounds of one run:

  local    `edgegolf bench --device cpu-1`: the in-process harness through edgegolf.runtime
  ssh      `edgegolf bench --device ssh://...` to a real SSH server on 127.0.0.1 (the one
           tests/builders/ssh.py starts): SFTP copy, runner.py in a fresh python, raw
           samples summarised here by the same latency_stats

The two should agree within the noise of this machine (measured on a shared 2-core box: 1-thread
p50 moved 2-10% between quiet runs); the remote side also reports cold start and peak RSS.

    PYTHONPATH=. python benchmarks/remote_loopback.py [--rounds 4] [--runs 40] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--bundle", type=Path, default=Path(tempfile.gettempdir()) / "edgegolf-bench" / "minilm-fp32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from edgegolf.devices.bench import BenchSettings, bench, bench_texts
    from edgegolf.devices.profiles import DeviceProfile, get_profile
    from edgegolf.devices.remote import RemoteOptions
    from tests.builders.minilm import fp32_minilm_bundle
    from tests.builders.ssh import LoopbackServer

    bundle = fp32_minilm_bundle(args.bundle)
    texts = bench_texts()
    with tempfile.TemporaryDirectory() as tmp:
        server = LoopbackServer(Path(tmp))
        try:
            known = Path(tmp) / "known_hosts"
            known.write_text(server.known_hosts_line())
            url = f"ssh://bench@127.0.0.1:{server.port}"
            profiles = {"local": get_profile("cpu-1"),
                        "ssh": DeviceProfile("loopback", kind="ssh", url=url, threads=1, python=sys.executable)}
            options = RemoteOptions(known_hosts=known, identity=(server.client_key_file,))
            settings = BenchSettings(seqs=(args.seq,), warmup=5, runs=args.runs, max_seconds=None,
                                     min_runs=args.runs, cold_start=False)
            p50: dict[str, list[float]] = {name: [] for name in profiles}
            extra = {}
            load = os.getloadavg()[0]
            for r in range(args.rounds):
                for name in (("local", "ssh") if r % 2 == 0 else ("ssh", "local")):
                    device = bench(bundle, [profiles[name]], settings, texts=texts, remote=options)["devices"][0]
                    p50[name].append(device["shapes"][0]["latency"]["p50_ms"])
                    if name == "ssh":
                        extra = device
            load_end = os.getloadavg()[0]
        finally:
            server.close()
    print(f"\nall-MiniLM-L6-v2 fp32 ({bundle}), batch 1 x {args.seq} tokens, 1 thread, {args.rounds} alternating "
          f"rounds x {args.runs} runs; load average {load:.2f} -> {load_end:.2f} on {os.cpu_count()} cores\n")
    print("| device | median p50 ms | best-round p50 ms | p50 per round (ms) |")
    print("|---|---|---|---|")
    for name, values in p50.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | "
              f"{' '.join(f'{v:.2f}' for v in values)} |")
    ratio = statistics.median(p50["ssh"]) / statistics.median(p50["local"])
    best = min(p50["ssh"]) / min(p50["local"])
    print(f"\nssh / local: {ratio:.3f} (medians), {best:.3f} (best rounds)")
    cold = extra.get("cold_start") or {}
    print(f"remote runner: onnxruntime {extra['runtime']['onnxruntime']}, cold start {cold.get('total_ms', 0):.0f} ms "
          f"(load {cold.get('load_ms', 0):.0f} + first run {cold.get('first_run_ms', 0):.0f}), "
          f"peak RSS {extra['peak_rss_bytes'] / 1e6:.0f} MB")
    if max(load, load_end) > 0.5 * (os.cpu_count() or 1):
        print("the machine was busy: trust the best-round column over the medians, or rerun when it is quiet")


if __name__ == "__main__":
    main()
