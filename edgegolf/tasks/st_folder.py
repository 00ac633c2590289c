"""A sentence-transformers folder, read as `SentenceTransformer(folder).encode` would run it.

The folder's modules.json lists its modules in order. edgegolf reproduces the common chain
Transformer -> Pooling -> Dense* -> Normalize? (https://sbert.net/docs/package_reference/
sentence_transformer/models.html) and refuses anything else, naming the module, before any
work: a module it silently skipped would compress a different model from the one the user has.

What each part becomes:
- Pooling: the runtime's `pool()` (edgegolf/runtime/models.py) in the named mode;
- Dense: layers in the exported graph, after a pooling the graph does itself (`SentenceHead`);
- Normalize: the spec's `normalize`; the prompts: the spec's `prompts`, prepended by the runtime;
- max_seq_length (sentence_bert_config.json, else the tokenizer's model_max_length): caps truncation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgegolf.errors import SourceError
from edgegolf.runtime.models import POOLINGS

log = logging.getLogger(__name__)

# The class names sentence-transformers writes into modules.json ("sentence_transformers.models.X"
# before v5, the defining module's path after); matched on the last dotted name within the package.
_PACKAGE = "sentence_transformers."
# Dense activations by their torch.nn class name (what Dense saves as "activation_function").
ACTIVATIONS = ("Tanh", "Identity", "ReLU", "GELU", "Sigmoid")
_LEGACY_MODES = {  # Pooling config keys of sentence-transformers before v5, in its concatenation order
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class SentenceHead:
    """What a sentence-transformers folder adds on top of its transformer."""

    pooling: str = "mean"
    normalize: bool = True
    dense: tuple[torch.nn.Module, ...] = ()  # Linear + activation, in order (empty: none)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""  # "" : no prompt unless asked for
    max_seq_length: int | None = None

    @property
    def default_prompt(self) -> str:
        return self.prompts.get(self.default_prompt_name, "")

    def describe(self) -> str:
        parts = [f"{self.pooling} pooling", *(f"Dense {d[0].in_features}->{d[0].out_features} "
                                            f"{type(d[1]).__name__}" for d in self.dense)]
        if self.normalize:
            parts.append("Normalize")
        if self.default_prompt_name:
            parts.append(f"default prompt {self.default_prompt_name!r}")
        return ", ".join(parts)


DEFAULT_HEAD = SentenceHead()  # a plain Hugging Face folder: mean pooling, L2-normalised (edgegolf's default)


def read_sentence_head(folder: Path) -> SentenceHead | None:
    """The folder's sentence-transformers head; None when it is not a sentence-transformers folder."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise SourceError(f"{modules_file} is not a list of modules; sentence-transformers writes one object "
                          "per module")
    kinds = [_kind(m, folder) for m in modules]
    if not kinds or kinds[0] != "Transformer" or modules[0].get("path", "") not in ("", "."):
        raise SourceError(f"{modules_file}: edgegolf needs the first module to be the Transformer stored in the "
                          f"folder itself (path \"\"); its modules are {kinds}")
    if "Pooling" not in kinds[1:2]:
        raise SourceError(f"{modules_file}: edgegolf needs a Pooling module right after the Transformer; "
                          f"its modules are {kinds}")
    pooling = _pooling(folder / str(modules[1].get("path", "")))
    dense: list[torch.nn.Module] = []
    normalize = False
    for module, kind in zip(modules[2:], kinds[2:], strict=True):
        where = folder / str(module.get("path", ""))
        if normalize:
            raise SourceError(f"{modules_file}: module {module.get('name')!r} ({kind}) comes after Normalize; "
                              "edgegolf reproduces Transformer, Pooling, Dense..., Normalize in that order")
        if kind == "Dense":
            dense.append(_dense(where, module))
        elif kind == "Normalize":
            _check_io(where, module, kind)
            normalize = True
    config = _json(folder / "config_sentence_transformers.json", missing={})
    prompts = config.get("prompts") or {}
    default = config.get("default_prompt_name") or ""
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str | None)
                                                for k, v in prompts.items()):
        raise SourceError(f"{folder / 'config_sentence_transformers.json'}: prompts must map names to texts")
    prompts = {k: v or "" for k, v in prompts.items()}
    if default and default not in prompts:
        raise SourceError(f"{folder / 'config_sentence_transformers.json'}: default_prompt_name {default!r} is not "
                          f"one of its prompts {sorted(prompts)}")
    _check_lower_case(folder)
    head = SentenceHead(pooling, normalize, tuple(dense), prompts, str(default), _max_seq_length(folder))
    log.info("sentence-transformers folder: %s", head.describe())
    return head


# The sentence-transformers files beside a model's own: what `SentenceTransformer(folder)` reads
# besides the Transformer module, whose files save_pretrained writes.
SENTENCE_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")


def copy_sentence_files(source: Path, target: Path) -> bool:
    """Carry `source`'s sentence-transformers head (modules.json, its configs and every module
    folder after the Transformer) into `target`, a folder written from a model pruned or
    distilled from `source`: its width is unchanged, so the head applies as it is. False where
    `source` is a plain Hugging Face folder."""
    import shutil

    try:
        if read_sentence_head(source) is None:
            return False
    except SourceError as exc:  # a head compress would refuse: the folder is written without it, and said so
        log.warning("the sentence-transformers head was not carried over: %s", exc)
        return False
    for name in SENTENCE_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    root = source.resolve()
    for module in _json(source / "modules.json")[1:]:
        where = (source / str(module.get("path", ""))).resolve()
        # the Transformer's files, a folder outside this one, or none at all (sentence-transformers
        # saves no folder for a Normalize module in some versions: the bundled MiniLM has none)
        if where == root or root not in where.parents or not where.is_dir():
            continue
        shutil.copytree(where, target / where.relative_to(root), dirs_exist_ok=True)
    return True


def _json(path: Path, missing: Any = None) -> Any:
    if not path.is_file() and missing is not None:
        return missing
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def _kind(module: dict, folder: Path) -> str:
    """The module's class name when edgegolf reproduces it; else refused, naming the module and its type."""
    type_name = str(module.get("type", ""))
    kind = type_name.rsplit(".", 1)[-1]
    if type_name.startswith(_PACKAGE) and kind in ("Transformer", "Pooling", "Dense", "Normalize"):
        return kind
    raise SourceError(f"sentence-transformers folder {folder.name!r}: module {module.get('name', module.get('idx'))!r} "
                      f"is a {type_name or '?'}, "
                      "which edgegolf cannot reproduce; it reproduces sentence-transformers' Transformer, Pooling, "
                      "Dense and Normalize")


def _pooling(where: Path) -> str:
    config = _json(where / "config.json")
    if not isinstance(config, dict):
        raise SourceError(f"{where / 'config.json'} is not a JSON object")
    mode = config.get("pooling_mode")
    if mode is None:  # the older one-flag-per-mode keys (sentence-transformers < 5)
        modes = [m for key, m in _LEGACY_MODES.items() if config.get(key)]
        mode = modes or ["mean"]
    modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1 or modes[0] not in POOLINGS:
        raise SourceError(f"{where}: Pooling mode {modes} cannot be reproduced; edgegolf pools with one of "
                          f"{list(POOLINGS)}")
    if config.get("include_prompt", True) is False:
        raise SourceError(f"{where}: Pooling with include_prompt false (prompt tokens left out of the pooling) "
                          "cannot be reproduced; edgegolf pools every token of the prompted text")
    return modes[0]


def _check_io(where: Path, module: dict, kind: str) -> dict:
    config = _json(where / "config.json", missing={})
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") not in ("sentence_embedding", None):
            raise SourceError(f"{where}: {kind} module {module.get('name')!r} works on {config[key]!r}; edgegolf "
                              "reproduces modules on the sentence embedding")
    return config


def _dense(where: Path, module: dict) -> torch.nn.Module:
    """Linear + activation, as sentence-transformers' Dense (whose default activation is Tanh)."""
    from safetensors.torch import load_file

    config = _check_io(where, module, "Dense")
    if config.get("use_residual"):
        raise SourceError(f"{where}: Dense with use_residual cannot be reproduced; edgegolf reproduces a plain Dense")
    activation = str(config.get("activation_function") or "torch.nn.modules.activation.Tanh")
    name = activation.rsplit(".", 1)[-1]
    if not activation.startswith("torch.") or name not in ACTIVATIONS:
        raise SourceError(f"{where}: Dense activation {activation!r} cannot be reproduced; edgegolf reproduces "
                          f"torch.nn {', '.join(ACTIVATIONS)}")
    try:
        in_features, out_features = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"{where / 'config.json'}: Dense needs integer in_features and out_features") from None
    linear = torch.nn.Linear(in_features, out_features, bias=bool(config.get("bias", True)))
    weights = where / "model.safetensors"
    if not weights.is_file():
        raise SourceError(f"{where}: Dense weights must be model.safetensors (pickled weights are not read)")
    state = {k.removeprefix("linear."): v for k, v in load_file(str(weights)).items()}
    try:
        linear.load_state_dict(state)
    except RuntimeError as exc:
        raise SourceError(f"{weights}: weights do not fit Dense {in_features}->{out_features}: "
                          f"{str(exc).splitlines()[0]}") from None
    return torch.nn.Sequential(linear, getattr(torch.nn, name)()).eval()


def _check_lower_case(folder: Path) -> None:
    """do_lower_case makes sentence-transformers lower-case the text before its tokenizer: the
    same thing only when the tokenizer lower-cases anyway (an uncased BERT's does)."""
    if not _json(folder / "sentence_bert_config.json", missing={}).get("do_lower_case"):
        return
    normalizer = (_json(folder / "tokenizer.json", missing={}) or {}).get("normalizer") or {}
    parts = normalizer.get("normalizers", [normalizer]) if isinstance(normalizer, dict) else []
    if not any(isinstance(p, dict) and (p.get("type") == "Lowercase" or p.get("lowercase") is True) for p in parts):
        raise SourceError(f"{folder / 'sentence_bert_config.json'}: do_lower_case with a tokenizer that keeps case "
                          "cannot be reproduced (the runtime feeds text to tokenizer.json as it is); "
                          "a tokenizer.json whose normalizer lower-cases is accepted")


def _max_seq_length(folder: Path) -> int | None:
    """What sentence-transformers truncates at: sentence_bert_config.json's, else the tokenizer's."""
    for file, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        value = _json(folder / file, missing={}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1_000_000:
            return value
    return None


# --- torch: the same pooling as the runtime's, for graphs that pool and for distillation ---------
def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Token states [batch, seq, hidden] to [batch, hidden], as sentence-transformers' Pooling on
    right-padded batches (what edgegolf's tokenizer makes)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if mode == "lasttoken":  # the last real token (right padding: count - 1)
        last = (attention_mask.sum(dim=1) - 1).clamp_min(0).long()
        return (hidden * mask)[torch.arange(hidden.shape[0]), last]
    if mode == "weightedmean":  # token i weighs i + 1
        weights = mask * torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype).view(1, -1, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
    count = mask.sum(1).clamp_min(1e-9)
    summed = (hidden * mask).sum(1)
    return summed / (count.sqrt() if mode == "mean_sqrt_len_tokens" else count)


class PooledOutput(torch.nn.Module):
    """A HF encoder with its pooling and Dense layers: the graph outputs the sentence embedding."""

    def __init__(self, model, head: SentenceHead):
        super().__init__()
        self.model = model
        self.mode = head.pooling
        self.dense = torch.nn.Sequential(*head.dense)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.model(**kwargs).last_hidden_state
        return (self.dense(pool_tokens(hidden, attention_mask, self.mode)),)
