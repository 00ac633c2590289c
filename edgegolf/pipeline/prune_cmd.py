"""`edgegolf prune`: structured pruning on its own, written as a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

from edgegolf.bundle import check_output
from edgegolf.measure.evaluate import DEFAULTS, default_split
from edgegolf.source import resolve_source


def prune(source: str | Path | None = None, *, spec: str | dict, output: str | Path, data: str = "bbc-news",
          calibration_size: int = 64, seed: int = DEFAULTS.seed, force: bool = False):
    """Prune a model on its own and write a Hugging Face folder (`edgegolf prune`).

    Importance is measured on `calibration_size` texts of the train split of `data` (the
    same seeded split `compress` evaluates on, so the held-out texts stay unseen).
    """
    from edgegolf.compression.prune import parse_prune_spec, prune_config_from_dict, prune_folder

    config = parse_prune_spec(spec) if isinstance(spec, str) else prune_config_from_dict(spec)
    check_output(Path(output), force)
    src = resolve_source(source)
    split = default_split(data, seed=seed)
    return prune_folder(src.path, output, config, list(split.train.texts[:calibration_size]), force=force)
