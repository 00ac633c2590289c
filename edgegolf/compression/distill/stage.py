"""Distillation as a step: after pruning inside `compress`, or on two model folders.

    report = distill_pruned(teacher, student, tokenizer, "feature-extraction", config, split=split,
                            kept_layers=[0, 3, 5])
    report = distill_folder("teacher/", "pruned/", "distilled/", parse_distill_spec("steps=600"))

Both read the transfer data the same way (`transfer_data`): the evaluation split's test half
is never trained on (texts equal to a test text are dropped, then checked), and both match a
pruned student's layers to the teacher layers they were cut from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from edgegolf.compression.distill.config import DistillConfig
from edgegolf.compression.distill.parallel import is_main_process, require_launcher
from edgegolf.compression.distill.report import DistillReport
from edgegolf.compression.distill.train import distill
from edgegolf.compression.distill.transfer import TransferData, exclude_test, load_transfer
from edgegolf.data import Split
from edgegolf.errors import DataError, SourceError
from edgegolf.publish import StagedFolder, check_output

log = logging.getLogger(__name__)

REPORT_FILE = "distill_report.json"
PRUNE_REPORT_FILE = "prune_report.json"  # what `edgegolf prune` writes (edgegolf.compression.prune.folder)


def transfer_data(config: DistillConfig, split: Split | None) -> TransferData:
    """The transfer texts `config.data` names, never one of `split`'s test texts."""
    data = load_transfer(config.data, config.column, split=split)
    if split is None:
        return data
    earlier = data.dropped_test_overlap
    data = exclude_test(data, split)  # also drops train texts that repeat a test text (BBC News has 36)
    data = dataclasses.replace(data, dropped_test_overlap=earlier + data.dropped_test_overlap)
    test = set(split.test.texts)
    if any(text in test for text in data.texts):  # the guarantee the accuracy numbers rest on
        raise DataError(f"distill data {data.source!r} still holds texts of the evaluation test split; "
                        "this is a bug in edgegolf, please report it")
    return data


def with_kept_layers(config: DistillConfig, kept_layers: list[int] | None) -> DistillConfig:
    """A layer-pruned student's layer i came from teacher layer kept_layers[i]: match those
    (unless the config names its own map), not the evenly spaced "auto" guess."""
    if config.layer_map != "auto" or not kept_layers:
        return config
    return dataclasses.replace(config, layer_map=tuple(int(k) for k in kept_layers))


def distill_pruned(teacher, student, tokenizer, task, config: DistillConfig, *, split: Split | None,
                   kept_layers: list[int] | None = None, teacher_tokenizer=None,
                   checkpoint_dir: Path | None = None, resume: bool = False) -> DistillReport:
    """`distill` with the transfer data and layer map resolved as above; trains `student` in place."""
    config = with_kept_layers(config, kept_layers)
    data = transfer_data(config, split)
    return distill(teacher, student, tokenizer, task, config, data=data, checkpoint_dir=checkpoint_dir,
                   resume=resume, teacher_tokenizer=teacher_tokenizer)


def _same_vocabulary(a, b) -> bool:
    return a.get_vocab() == b.get_vocab()


def distill_folder(teacher_dir: str | Path, student_dir: str | Path, out_dir: str | Path, config: DistillConfig, *,
                   task: str | None = None, eval_data: str = "bbc-news", checkpoint_dir: str | Path | None = None,
                   resume: bool = False, force: bool = False) -> DistillReport:
    """Distill the model in `student_dir` from the one in `teacher_dir`; write a HF folder to `out_dir`.

    The output (safetensors weights, config, tokenizer, distill_report.json, and the student's
    prune_report.json when it has one) is published atomically (edgegolf.publish): at every
    instant `out_dir` holds the old output or the whole new one. Texts of `eval_data`'s evaluation test split (30%, seed 0: what `compress`
    measures on by default) are never trained on. Checkpoints go to `checkpoint_dir`
    (default: `<out_dir>.checkpoints`) every `checkpoint_every` steps (default: a tenth of the
    run); `resume` continues from the newest one. They are deleted once the output is written.
    """
    from transformers import AutoConfig, AutoTokenizer

    from edgegolf.compression.prune.folder import save_pruned
    from edgegolf.measure.evaluate import default_split
    from edgegolf.tasks import get_task, infer_task

    teacher_dir, student_dir, out = Path(teacher_dir), Path(student_dir), Path(out_dir)
    check_output(out, force, option="", folders_only=False)  # before any work
    require_launcher()  # launched as several processes without accelerate: say so before any work
    for role, folder in (("teacher", teacher_dir), ("student", student_dir)):
        if not (folder / "config.json").is_file():
            raise SourceError(f"{role} folder {str(folder)!r} has no config.json; give a folder written by "
                              "save_pretrained (or edgegolf prune)")
    split = default_split(eval_data)
    kept = _kept_layers(student_dir)
    config = with_kept_layers(config, kept)
    data = transfer_data(config, split)  # bad data fails here, before any model is loaded
    if config.checkpoint_every == 0:
        config = dataclasses.replace(config, checkpoint_every=max(1, config.steps // 10))
    checkpoints = Path(checkpoint_dir) if checkpoint_dir is not None else out.parent / f"{out.name}.checkpoints"

    adapter = get_task(task or infer_task(AutoConfig.from_pretrained(str(student_dir))))
    adapter.read_source(teacher_dir)  # the teacher's sentence-transformers pooling, when it has one
    teacher = adapter.load_model(teacher_dir)
    student = adapter.load_model(student_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(student_dir))
        teacher_tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot load a tokenizer: {str(exc).splitlines()[0]}") from None
    if _same_vocabulary(tokenizer, teacher_tokenizer):
        teacher_tokenizer = None  # one tokenization feeds both (and hidden states can be matched)
    report = distill(teacher, student, tokenizer, adapter, config, data=data, checkpoint_dir=checkpoints,
                     resume=resume, teacher_tokenizer=teacher_tokenizer)
    if not is_main_process():  # launched as several processes: each holds the same student; one writes it
        return report

    with StagedFolder(out, force=force, option="", folders_only=False) as staged:
        # the student's head (a pruned copy carries its teacher's), else the teacher's
        head = student_dir if (student_dir / "modules.json").is_file() else teacher_dir
        save_pruned(student, tokenizer, staged.staging, sentence_head_of=head)
        record = {"teacher": str(teacher_dir), "student": str(student_dir), **report.to_dict()}
        (staged.staging / REPORT_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        if (student_dir / PRUNE_REPORT_FILE).is_file():
            shutil.copyfile(student_dir / PRUNE_REPORT_FILE, staged.staging / PRUNE_REPORT_FILE)
        staged.publish()
    shutil.rmtree(checkpoints, ignore_errors=True)
    log.info("wrote the distilled model to %s", out)
    return report


def _kept_layers(folder: Path) -> list[int] | None:
    """The teacher layers an `edgegolf prune` output kept, from its prune_report.json."""
    path = folder / PRUNE_REPORT_FILE
    if not path.is_file():
        return None
    try:
        kept: Any = json.loads(path.read_text(encoding="utf-8")).get("kept_layers")
    except (ValueError, AttributeError):
        return None
    return kept if isinstance(kept, list) and all(isinstance(k, int) for k in kept) else None
