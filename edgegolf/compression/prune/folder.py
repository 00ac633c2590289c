"""Pruned models on disk: `prune_folder` (HF folder in, HF folder out) and `load_pruned`.

Layer, FFN and vocabulary cuts, and head cuts of LLaMA-family models, are described by the
standard config keys, so `from_pretrained` rebuilds them as is. BERT, RoBERTa, DistilBERT and
GPT-2 derive the head size from hidden_size / heads; after a head cut their config also
holds {"edgegolf_pruning": {"head_dim": ...}} and the folder must be loaded with
`load_pruned`, which builds the model with the original head count, slices the attention to
the saved shapes and loads the saved weights into it. (Stock `from_pretrained` refuses such
a folder with a size-mismatch error rather than loading wrong weights.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from edgegolf.compression.prune.arch import config_view, family_for
from edgegolf.compression.prune.config import PruneConfig
from edgegolf.compression.prune.model import PruneReport, prune_model
from edgegolf.errors import PruneError, SourceError
from edgegolf.publish import StagedFolder, check_output

log = logging.getLogger(__name__)

REPORT_FILE = "prune_report.json"


def attention_dims(config: Any) -> tuple[int, int]:
    """(heads, heads * head_dim) of a model config, head-pruned or not.

    These are the num_heads and hidden_size that onnxruntime's BERT attention fusion needs.
    Measured on MiniLM cut to 6 heads of 32: (6, 192) fuses 3 Attention nodes with outputs
    unchanged (max abs diff 1.4e-6); the config's (6, 384) fuses nothing; the original
    (12, 384) fuses and gives wrong outputs (max abs diff 0.5).
    """
    view = config_view(config)  # the family's reading (GPT-2's n_head, DistilBERT's n_heads...), else the HF keys
    if not view.heads or not view.attention_width:
        raise PruneError(f"model type {view.model_type!r}: its config gives no attention head count and size")
    return view.heads, view.attention_width


def _model_class(config: Any, model_class: Any) -> Any:
    import transformers

    if model_class is not None:
        return getattr(transformers, model_class) if isinstance(model_class, str) else model_class
    for name in getattr(config, "architectures", None) or []:
        if hasattr(transformers, name):
            return getattr(transformers, name)
    return transformers.AutoModel


def load_pruned(folder: str | Path, model_class: Any = None, **kwargs: Any) -> Any:
    """Load a model folder, pruned by edgegolf or not; kwargs go to `from_pretrained`.

    `model_class` is a transformers class or Auto class (or its name); by default the
    folder's config.architectures[0].
    """
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    cls = _model_class(config, model_class)
    record = getattr(config, "edgegolf_pruning", None)
    if not isinstance(record, dict) or "head_dim" not in record:
        return cls.from_pretrained(folder, **kwargs)

    family = family_for(config)
    heads_key = family.config_keys["heads"]
    kept_heads = getattr(config, heads_key)
    head_dim = int(record["head_dim"])
    setattr(config, heads_key, config.hidden_size // head_dim)  # what the stock modules need to build
    model = _quietly(lambda: cls.from_pretrained(folder, config=config, ignore_mismatched_sizes=True, **kwargs))
    setattr(model.config, heads_key, kept_heads)
    for block in family.layer_list(model.base_model):
        family.keep_heads(block, list(range(kept_heads)))  # shapes only: the saved weights follow
    _load_saved_layers(model, folder, family.layers_path)
    model.eval()
    return model


def _quietly(build):
    """Run `build` without transformers' "weights newly initialized" warning: they are loaded right after."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return build()
    finally:
        hf_logging.set_verbosity(level)


def _saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(load_file(str(folder / shard)))
        return tensors
    single = folder / "model.safetensors"
    if not single.exists():
        raise SourceError(f"pruned model folder {str(folder)!r} has no model.safetensors; give a folder written by "
                          "edgegolf prune")
    return load_file(str(single))


def _load_saved_layers(model: Any, folder: Path, layers_path: str) -> None:
    """Load every saved tensor of the transformer layers (names may differ by the base-model prefix)."""
    own = model.state_dict()
    prefix = model.base_model_prefix
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in _saved_tensors(folder).items():
        for candidate in (key, f"{prefix}.{key}", key.removeprefix(f"{prefix}.")):
            if candidate in own:
                mapped[candidate] = tensor
                break
    marker = f"{layers_path}."
    missing = sorted(k for k in own if marker in k and k not in mapped)
    if missing:
        raise PruneError(f"pruned model folder {str(folder)!r} lacks layer weights such as {missing[0]!r}; "
                         "give a folder written by edgegolf prune")
    wrong = [k for k, t in mapped.items() if t.shape != own[k].shape]
    if wrong:
        raise PruneError(f"pruned model folder {str(folder)!r}: {wrong[0]} has shape {tuple(mapped[wrong[0]].shape)}, "
                         f"the config implies {tuple(own[wrong[0]].shape)}")
    model.load_state_dict(mapped, strict=False)


def save_pruned(model: Any, tokenizer: Any, folder: str | Path, report: PruneReport | None = None, *,
                sentence_head_of: Path | None = None) -> None:
    """save_pretrained (safetensors) + tokenizer + the prune report, into an existing or new folder;
    with `sentence_head_of`, that folder's sentence-transformers head too (pooling, Dense,
    Normalize, prompts), so `compress` and `SentenceTransformer` read the result as the original."""
    from edgegolf.tasks.st_folder import copy_sentence_files

    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if sentence_head_of is not None:
        copy_sentence_files(sentence_head_of, folder)
    if report is not None:
        (folder / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")


def prune_folder(
    src_dir: str | Path,
    out_dir: str | Path,
    config: PruneConfig,
    calibration_texts: list[str] | None = None,
    *,
    force: bool = False,
    model_class: Any = None,
    **prune_kwargs: Any,
) -> PruneReport:
    """Load a HF folder, prune it, write a HF folder (safetensors, tokenizer, prune_report.json).

    The output is published atomically (edgegolf.publish): at every instant `out_dir` holds the
    old output or the whole new one. An existing `out_dir` is replaced only with `force`. `prune_kwargs` go to `prune_model`.
    """
    from transformers import AutoTokenizer

    src, out = Path(src_dir), Path(out_dir)
    check_output(out, force, option="", folders_only=False)  # before any work
    if not (src / "config.json").is_file():
        raise SourceError(f"model folder {str(src)!r} has no config.json; give a folder written by save_pretrained")
    model = load_pruned(src, model_class)
    tokenizer = AutoTokenizer.from_pretrained(src)
    model, tokenizer, report = prune_model(model, tokenizer, config, calibration_texts=calibration_texts,
                                           inplace=True, **prune_kwargs)
    with StagedFolder(out, force=force, option="", folders_only=False) as staged:
        save_pruned(model, tokenizer, staged.staging, report, sentence_head_of=src)
        staged.publish()
    log.info("wrote pruned model to %s", out)
    return report
