"""The candidate a search would ship, scored again on the full evaluation split.

Trials are scored on a subset (evaluate.limit; 600 texts by default) so that many fit in the
time. Before a search ships one, its bundle (the very graph the trial measured: nothing is
rebuilt or retrained) is scored on every text of the split, against the teacher's outputs on
the same texts, through the runtime an app embeds. Both numbers are kept, each with its 95 %
interval, and whether the sample separated the candidate from the runner-up.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def score_on_full_split(bundle: Path, source, recipe, *, teacher_outputs=None,
                        trust_remote_code: bool = False) -> dict[str, Any]:
    """{accuracy, accuracy_ci95_low/high, teacher_accuracy, drop, test_texts} of `bundle` on the
    whole split of `recipe.evaluate` (limit 0)."""
    import json

    from transformers import AutoConfig

    from edgegolf.measure.evaluate import Evaluation, torch_threads, work_threads
    from edgegolf.pipeline.stages import Context, LoadConfig, load
    from edgegolf.runtime import load as load_bundle
    from edgegolf.runtime.tokenize import make_tokenizer
    from edgegolf.tasks import get_task

    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    adapter = get_task(manifest["task"])
    adapter.read_source(source.path)  # e.g. a sentence-transformers folder's prompts, as compress reads them
    whole = adapter.load_split(replace(recipe.evaluate, limit=0))
    evaluation = Evaluation(adapter, whole, recipe.evaluate.batch)
    with tempfile.TemporaryDirectory(prefix="edgegolf-full-split-") as work, torch_threads(work_threads()):
        ctx = Context(adapter=adapter, split=whole, source=source, task=manifest["task"],
                      max_length=recipe.export.max_length, atol=recipe.export.atol,
                      calibration_size=recipe.evaluate.calibration_size, trust_remote_code=trust_remote_code,
                      allow_pickle=False, work=Path(work))
        teacher, _ = load(None, LoadConfig(source.to_dict(), manifest["task"], recipe.export.max_length,
                                           trust_remote_code, False), ctx)
        encoder = make_tokenizer(teacher.tokenizer_json, teacher.spec)
        if teacher_outputs is not None:
            key = teacher_outputs.key(source.path, evaluation, teacher.spec.max_length)
            outputs, teacher_metrics = teacher_outputs.fetch(key, lambda: evaluation.teacher(teacher.model, encoder))
        else:
            outputs, teacher_metrics = evaluation.teacher(teacher.model, encoder)
    model = load_bundle(bundle, threads=work_threads())  # its files checked against its manifest
    batch = int((manifest.get("evaluation", {}).get("batch") or {}).get(_final_stage(manifest), 1))
    metrics = evaluation.artifact(model, "full split", outputs, AutoConfig.from_pretrained(str(bundle)), batch)
    return {"accuracy": metrics["accuracy"], "accuracy_ci95_low": metrics.get("accuracy_ci95_low"),
            "accuracy_ci95_high": metrics.get("accuracy_ci95_high"), "teacher_accuracy": teacher_metrics["accuracy"],
            "drop": teacher_metrics["accuracy"] - metrics["accuracy"],
            "drop_ci95_low": metrics.get("accuracy_drop_ci95_low"),
            "drop_ci95_high": metrics.get("accuracy_drop_ci95_high"), "test_texts": len(whole.test.texts)}


def _final_stage(manifest: dict[str, Any]) -> str:
    """The chain's last stage: what the bundle's graph is (its evaluation batch is recorded under it)."""
    chain = [name for name, stage in manifest["stages"].items() if not stage.get("reference")]
    return chain[-1]


def sample_numbers(record) -> dict[str, Any]:
    m = record.measured
    return {"accuracy": m["accuracy"], "accuracy_ci95_low": m.get("accuracy_ci95_low"),
            "accuracy_ci95_high": m.get("accuracy_ci95_high"), "teacher_accuracy": m["teacher_accuracy"],
            "drop": m["teacher_accuracy"] - m["accuracy"]}


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """Whether two accuracies' 95 % intervals overlap (None: an interval is missing)."""
    if None in (a.get("accuracy_ci95_low"), a.get("accuracy_ci95_high"), b.get("accuracy_ci95_low"),
                b.get("accuracy_ci95_high")):
        return None
    return a["accuracy_ci95_low"] <= b["accuracy_ci95_high"] and b["accuracy_ci95_low"] <= a["accuracy_ci95_high"]


def _acc(numbers: dict[str, Any]) -> str:
    low, high = numbers.get("accuracy_ci95_low"), numbers.get("accuracy_ci95_high")
    interval = f" (95% CI {low:.1f}-{high:.1f})" if low is not None and high is not None else ""
    return f"{numbers['accuracy']:.2f} %{interval}"


def describe(check: dict[str, Any]) -> str:
    """The lines the result message and front.md carry."""
    sample, full = check["sample"], check["full"]
    lines = [f"trial {check['trial']}, sample of {check['sample_texts']} test texts: accuracy {_acc(sample)}, "
             f"drop {sample['drop']:.2f} points"]
    if full is None:
        lines.append("the sample is the full split (evaluate.limit 0): no second measurement needed")
    else:
        lines.append(f"trial {check['trial']}, full split of {full['test_texts']} test texts: accuracy {_acc(full)}, "
                     f"teacher {full['teacher_accuracy']:.2f} %, drop {full['drop']:.2f} points")
        if check.get("drop_limit") is not None and full["drop"] > check["drop_limit"]:
            lines.append(f"on the full split it misses the accuracy drop limit: {full['drop']:.2f} points > "
                         f"{check['drop_limit']:g}")
    runner = check.get("runner_up")
    if runner is None:
        lines.append("no runner-up to compare with")
    elif check["within_noise"]:
        lines.append(f"within the noise: the runner-up, trial {runner['trial']} [{runner['label']}], scored "
                     f"{_acc(runner['sample'])} on the same sample; the 95% intervals overlap, so the sample does "
                     "not separate the two")
    elif check["within_noise"] is False:
        lines.append(f"beyond the noise: the runner-up, trial {runner['trial']} [{runner['label']}], scored "
                     f"{_acc(runner['sample'])} on the same sample; the 95% intervals do not overlap")
    return "\n".join(lines)
