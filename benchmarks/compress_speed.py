"""The README's default compress of the bundled all-MiniLM-L6-v2, the old way and the new, in one run.

Old: every text of BBC News (2,225) scored, one text at a time, by every stage
(`evaluate.limit = 0, evaluate.batch = 1`). New: the defaults, a stratified subset of
`EvaluateSettings.limit` texts, and padded batches for the stages whose outputs do not depend
on their batch neighbours (edgegolf/measure/evaluate.py). Both with the README's first
command's budget (`--budget 'size<=24MB,drop<=2'`). Printed: wall time of each, the verdict,
and per stage the accuracy with its 95 % interval, the drop's paired interval, fidelity and
the evaluation batch; then whether the new numbers fall inside the old ones' intervals.

    nice python benchmarks/compress_speed.py [--order old,new]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from edgegolf.pipeline import compress
from edgegolf.recipe import EvaluateSettings
from edgegolf.tasks import get_task

BUDGET = "size<=24MB,drop<=2"  # README.md's first command
RUNS = {"old": {"limit": 0, "batch": 1}, "new": {}}  # new: EvaluateSettings' defaults


def run(name: str, evaluate: dict, folder: Path):
    started = time.perf_counter()
    result = compress(None, output=folder / name, recipe={"evaluate": evaluate}, budget=BUDGET)
    return result, time.perf_counter() - started


def interval(m: dict, key: str) -> str:
    low, high = m.get(f"{key}_ci95_low"), m.get(f"{key}_ci95_high")
    return "-" if low is None else f"[{low:.2f}, {high:.2f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", default="old,new", help="which runs, in order")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("edgegolf").setLevel(logging.INFO)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.order.split(","):
            results[name] = run(name, RUNS[name], Path(tmp))
            print(f"{name}: {results[name][1]:.0f} s wall, load average {os.getloadavg()[0]:.2f}", flush=True)

    default_limit = get_task("feature-extraction").default_eval_limit  # EvaluateSettings().limit None: the task's
    print(f"\ndefault evaluation subset: {default_limit} texts, batch {EvaluateSettings().batch}")
    print("| run | wall s | verdict | scored train+test | stage | eval batch | accuracy % | 95% interval | "
          "drop 95% interval | fidelity cos |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (result, seconds) in results.items():
        ev = result.manifest["evaluation"]
        for stage in result.stages:
            m = stage.metrics
            print(f"| {name} | {seconds:.0f} | {result.verdict.summary()[:60]} | {ev['train_texts']}+{ev['test_texts']} "
                  f"| {stage.name} | {stage.eval_batch} | {m['accuracy']:.2f} | {interval(m, 'accuracy')} | "
                  f"{interval(m, 'accuracy_drop')} | {m.get('fidelity_mean_cosine', float('nan')):.4f} |")
    if {"old", "new"} <= set(results):
        (old, old_s), (new, new_s) = results["old"], results["new"]
        print(f"\nwall time new/old: {new_s / old_s:.2f} (target <= 0.50)")
        print(f"same verdict: {old.verdict.fits == new.verdict.fits} (old fits: {old.verdict.fits}, "
              f"new fits: {new.verdict.fits})")
        olds = {s.name: s for s in old.stages}
        for stage in new.stages:
            before = olds.get(stage.name)
            if before is None:
                continue
            a, b = before.metrics, stage.metrics
            inside = b["accuracy_ci95_low"] <= a["accuracy"] <= b["accuracy_ci95_high"]
            drop_old = olds["teacher"].metrics["accuracy"] - a["accuracy"]
            drop_new = new.stages[0].metrics["accuracy"] - b["accuracy"]
            drop_inside = ("accuracy_drop_ci95_low" not in b or
                           b["accuracy_drop_ci95_low"] <= drop_old <= b["accuracy_drop_ci95_high"])
            print(f"{stage.name}: accuracy old {a['accuracy']:.2f} inside new {interval(b, 'accuracy')}: {inside}; "
                  f"drop old {drop_old:+.2f} / new {drop_new:+.2f}, old inside new's paired interval: {drop_inside}; "
                  f"fidelity old {a['fidelity_mean_cosine']:.4f} new {b['fidelity_mean_cosine']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
