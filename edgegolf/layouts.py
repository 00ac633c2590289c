"""Layouts: the extra files other loaders look for, written into a bundle so that code people
already run reads it as its own model folder (`edgegolf compress --layout NAME`).

A bundle is already close to a Hugging Face model folder: `model.onnx`, `config.json` and the
tokenizer files sit at its top. A layout adds only small JSON files beside them, never a second
copy of the weights, and they are written before the manifest, so its sha256 list covers them.

- "optimum": Hugging Face Optimum's `ORTModelForFeatureExtraction`,
  `ORTModelForSequenceClassification` and `ORTModelForCausalLM` find the graph and `config.json`
  in a bundle folder as it is (they look for `*.onnx`; a causal LM's cache inputs,
  `past.N.key` / `past.N.value`, are found by their `.key` / `.value` suffix). The layout
  makes the tokenizer load as the runtime's does (see `_hf_tokenizer_config`) and, for a
  causal LM, adds `generation_config.json`, so that `generate` stops and pads on the tokens
  the runtime uses.
- "sentence-transformers": `SentenceTransformer(path, backend="onnx")` loads `model.onnx`
  from the folder's top through Optimum, and needs `modules.json` (Transformer, Pooling and,
  when the runtime normalises, Normalize), `sentence_bert_config.json` (the runtime's
  truncation length) and `1_Pooling/config.json` (the runtime's pooling). Sentence embeddings
  only (feature-extraction bundles).

Each layout is one function registered under its name; `write_layouts` runs the ones asked
for and records what each wrote in the manifest's "layouts" table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgegolf.errors import RecipeError

log = logging.getLogger(__name__)

LayoutWriter = Callable[[Path, dict[str, Any]], list[str]]


@dataclass(frozen=True)
class Layout:
    name: str
    tasks: tuple[str, ...]  # the bundle tasks the layout serves
    write: LayoutWriter  # (bundle folder, manifest) -> the files written, relative to the folder
    loads_in: str  # what reads it, for messages and docs


LAYOUTS: dict[str, Layout] = {}


def register(name: str, *, tasks: tuple[str, ...], loads_in: str) -> Callable[[LayoutWriter], LayoutWriter]:
    def add(write: LayoutWriter) -> LayoutWriter:
        LAYOUTS[name] = Layout(name, tasks, write, loads_in)
        return write

    return add


def layout_names() -> tuple[str, ...]:
    return tuple(LAYOUTS)


def check_layouts(names: Sequence[str], task: str) -> None:
    """Refuse, before any work, a layout that does not exist or does not serve `task`."""
    for name in names:
        layout = LAYOUTS.get(name)
        if layout is None:
            raise RecipeError(f"layout {name!r} is not accepted; choose from: {', '.join(LAYOUTS)}")
        if task not in layout.tasks:
            raise RecipeError(f"layout {name!r} serves {' and '.join(layout.tasks)} bundles; this bundle's task is "
                              f"{task!r} (leave the layout out, or choose from: {', '.join(layouts_for(task))})")


def layouts_for(task: str) -> list[str]:
    return [name for name, layout in LAYOUTS.items() if task in layout.tasks]


def write_layouts(folder: Path, manifest: dict[str, Any], names: Sequence[str]) -> dict[str, list[str]]:
    """Write each named layout into the bundle `folder` (before its manifest is written) and
    record the files in `manifest["layouts"]`. Returns {layout: files}."""
    folder = Path(folder)
    task = manifest["model"]["task"]
    check_layouts(names, task)
    written: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):  # each once, in the order given
        written[name] = sorted(set(LAYOUTS[name].write(folder, manifest)))
        log.info("layout %s: wrote %s", name, ", ".join(written[name]) or "nothing (the bundle loads as it is)")
    if written:
        manifest["layouts"] = written
    return written


def _write_json(folder: Path, relative: str, data: Any) -> str:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return relative


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise RecipeError(f"a layout needs the bundle's config.json; {str(folder)!r} has none")
    return json.loads(path.read_text(encoding="utf-8"))


def _hidden_size(config: dict[str, Any]) -> int:
    for key in ("hidden_size", "dim", "d_model", "n_embd"):  # BERT-likes, DistilBERT, T5-likes, GPT-2
        if isinstance(config.get(key), int):
            return config[key]
    raise RecipeError("the bundle's config.json names no hidden size (hidden_size, dim, d_model or n_embd); "
                      "the sentence-transformers layout needs it for 1_Pooling/config.json")


def _hf_tokenizer_config(folder: Path, spec: dict[str, Any]) -> list[str]:
    """tokenizer_config.json as every transformers release reads it, feeding what the graph takes.

    transformers 5 saves a tokenizer.json-only tokenizer as class "TokenizersBackend", which
    transformers 4 (the one Optimum's ONNX package runs on, <4.58) cannot load; both read
    "PreTrainedTokenizerFast" over the same tokenizer.json. And that generic class returns
    token_type_ids unless told the model's inputs, which a causal LM's `generate` refuses:
    `model_input_names` is set to the graph's text inputs, as the runtime feeds them.
    """
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return []
    config = json.loads(path.read_text(encoding="utf-8"))
    changed = dict(config)
    if changed.get("tokenizer_class") == "TokenizersBackend":
        changed["tokenizer_class"] = "PreTrainedTokenizerFast"
    changed["model_input_names"] = list(spec["input_names"])
    if changed != config:
        _write_json(folder, "tokenizer_config.json", changed)
    return ["tokenizer_config.json"]


@register("optimum", tasks=("feature-extraction", "text-classification", "causal-lm"),
          loads_in="optimum.onnxruntime ORTModelForFeatureExtraction / ForSequenceClassification / ForCausalLM")
def optimum_layout(folder: Path, manifest: dict[str, Any]) -> list[str]:
    spec = manifest["model"]
    written = _hf_tokenizer_config(folder, spec)
    if spec["task"] != "causal-lm":
        return written
    config = _config(folder)
    eos = spec.get("extra", {}).get("eos_token_id", config.get("eos_token_id"))
    generation = {key: value for key, value in (("bos_token_id", config.get("bos_token_id")), ("eos_token_id", eos),
                                                ("pad_token_id", spec["pad_token_id"])) if value is not None}
    return [*written, _write_json(folder, "generation_config.json", generation)]


@register("sentence-transformers", tasks=("feature-extraction",),
          loads_in='sentence_transformers.SentenceTransformer(path, backend="onnx")')
def sentence_transformers_layout(folder: Path, manifest: dict[str, Any]) -> list[str]:
    spec = manifest["model"]
    pooling = spec.get("pooling", "mean")
    if list(spec["output_names"]) != ["last_hidden_state"]:  # a graph that pools (before Dense layers)
        raise RecipeError("the sentence-transformers layout needs a graph that gives token states, but this model's "
                          "Dense layers are in the graph (it gives the sentence embedding); leave out --layout "
                          "sentence-transformers and load the bundle with edgegolf.runtime")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if spec.get("normalize", True):
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    return [
        *_hf_tokenizer_config(folder, spec),
        _write_json(folder, "modules.json", modules),
        # truncate where the runtime does; the tokenizer files decide lower-casing themselves
        _write_json(folder, "sentence_bert_config.json", {"max_seq_length": spec["max_length"], "do_lower_case": False}),
        _write_json(folder, "config_sentence_transformers.json",
                    {"prompts": spec.get("prompts", {}), "default_prompt_name": spec.get("default_prompt_name") or None,
                     "similarity_fn_name": "cosine"}),
        # one flag per mode: what every sentence-transformers release reads (>= 5 also reads "pooling_mode")
        _write_json(folder, "1_Pooling/config.json", {
            "word_embedding_dimension": _hidden_size(_config(folder)),
            **{flag: pooling == mode for flag, mode in _POOLING_FLAGS.items()},
        }),
    ]


_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
                  "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
