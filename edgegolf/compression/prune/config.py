"""What to prune: `PruneConfig`, from a spec string (CLI) or a table (TOML recipe).

Both forms go through `prune_config_from_dict`, so they accept the same things and fail
with the same one-line messages (field, value, what would be accepted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

from edgegolf.compression.spec import choice_field, number_field, spec_terms, spec_value
from edgegolf.errors import RecipeError

LAYER_SELECTIONS = ("even", "importance")
IMPORTANCE_METHODS = ("activation", "magnitude")
UNSTRUCTURED_SCOPES = ("global", "layer")
SPEC_FORM = "layers=3,heads=0.5,ffn=0.5,vocab=corpus.txt"


@dataclass(frozen=True)
class PruneConfig:
    """Which structures to cut. Every field left at None is not pruned.

    Fractions say how much is KEPT: heads=0.5 keeps half of the attention heads (for
    grouped-query attention, half of the key/value groups with all their query heads),
    ffn=0.5 keeps half of the feed-forward neurons. Only uniform sizes are produced: every
    layer keeps the same number of heads and neurons, each layer choosing its own by
    importance. `unstructured` is the other way round: the fraction of weights set to zero.
    """

    layers: int | None = None  # number of transformer layers kept
    layer_selection: str = "even"  # even: evenly spaced, first and last kept; importance: measured
    heads: float | None = None  # fraction of attention heads (kv groups) kept, 0 < heads <= 1
    ffn: float | None = None  # fraction of feed-forward neurons kept, 0 < ffn <= 1
    importance: str = "activation"  # activation: measured on calibration text; magnitude: weights only
    vocab: Path | None = None  # domain corpus (a .txt file, or a folder of .txt files) for vocabulary pruning
    vocab_min_count: int = 1  # a corpus token is kept when it occurs at least this many times
    vocab_alphabet: bool = True  # also keep single characters, so unseen words are spelled out, not [UNK]
    unstructured: float | None = None  # fraction of weights zeroed by magnitude, 0 <= x < 1
    unstructured_scope: str = "global"  # global: one threshold over all layers; layer: the same share per layer

    @property
    def structural(self) -> bool:
        """True when the cut changes tensor shapes (layers, heads, FFN, vocabulary)."""
        return any(v is not None for v in (self.layers, self.heads, self.ffn, self.vocab))

    @property
    def needs_calibration(self) -> bool:
        measured = self.importance == "activation" and (self.heads is not None or self.ffn is not None)
        return measured or (self.layers is not None and self.layer_selection == "importance")

    def is_empty(self) -> bool:
        return not self.structural and self.unstructured is None

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that differ from the defaults, JSON-ready (a recipe's [prune] table)."""
        base = PruneConfig()
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if value != getattr(base, name):
                out[name] = str(value) if isinstance(value, Path) else value
        return out


_number = partial(number_field, "prune")
_choice = partial(choice_field, "prune")


def _fraction_kept(name: str, value: Any, what: str) -> float:
    rule = f"give the fraction of {what} kept, 0 < {name} <= 1 (0.5 keeps half)"
    value = _number(name, value, float, rule)
    if not 0.0 < value <= 1.0:
        raise RecipeError(f"prune.{name} = {value!r} is out of range; {rule}")
    return value


def prune_config_from_dict(data: Any, *, base_dir: Path | None = None) -> PruneConfig:
    """Validate a [prune] table. A relative `vocab` path is taken from `base_dir` (the recipe's folder)."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe [prune] must be a table like {{layers = 3, heads = 0.5}}, got {data!r}")
    allowed = [f.name for f in fields(PruneConfig)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise RecipeError(f"prune has unknown field {unknown[0]!r}; accepted: {', '.join(allowed)}")
    values: dict[str, Any] = {}
    if data.get("layers") is not None:
        rule = "give the number of layers kept, an integer >= 1 (layers=3 keeps 3)"
        layers = _number("layers", data["layers"], int, rule)
        if layers < 1:
            raise RecipeError(f"prune.layers = {layers!r} is out of range; {rule}")
        values["layers"] = layers
    if "layer_selection" in data:
        values["layer_selection"] = _choice("layer_selection", data["layer_selection"], LAYER_SELECTIONS)
    if data.get("heads") is not None:
        values["heads"] = _fraction_kept("heads", data["heads"], "attention heads")
    if data.get("ffn") is not None:
        values["ffn"] = _fraction_kept("ffn", data["ffn"], "feed-forward neurons")
    if "importance" in data:
        values["importance"] = _choice("importance", data["importance"], IMPORTANCE_METHODS)
    if data.get("vocab") is not None:
        values["vocab"] = _corpus_path(data["vocab"], base_dir)
    if "vocab_min_count" in data:
        rule = "give how often a corpus token must occur to be kept, an integer >= 1"
        count = _number("vocab_min_count", data["vocab_min_count"], int, rule)
        if count < 1:
            raise RecipeError(f"prune.vocab_min_count = {count!r} is out of range; {rule}")
        values["vocab_min_count"] = count
    if "vocab_alphabet" in data:
        flag = data["vocab_alphabet"]
        if not isinstance(flag, bool):
            raise RecipeError(f"prune.vocab_alphabet = {flag!r} is not accepted; choose one of: true, false")
        values["vocab_alphabet"] = flag
    if data.get("unstructured") is not None:
        rule = "give the fraction of weights set to zero, 0 <= unstructured < 1 (0.5 zeroes half)"
        share = _number("unstructured", data["unstructured"], float, rule)
        if not 0.0 <= share < 1.0:
            raise RecipeError(f"prune.unstructured = {share!r} is out of range; {rule}")
        values["unstructured"] = share
    if "unstructured_scope" in data:
        values["unstructured_scope"] = _choice("unstructured_scope", data["unstructured_scope"], UNSTRUCTURED_SCOPES)
    config = PruneConfig(**values)
    if config.is_empty():
        raise RecipeError(f"prune {data!r} prunes nothing; set at least one of layers, heads, ffn, vocab, unstructured "
                          f"(e.g. {SPEC_FORM})")
    return config


def _corpus_path(value: Any, base_dir: Path | None) -> Path:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise RecipeError(f"prune.vocab = {value!r} is not a path; give a text file or a folder of .txt files")
    path = Path(str(value).strip()).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise RecipeError(f"prune.vocab = {str(value)!r} does not exist; give a text file or a folder of .txt files")
    return path


def parse_prune_spec(text: str, *, base_dir: Path | None = None) -> PruneConfig:
    """Parse the CLI form, e.g. "layers=3,heads=0.5,ffn=0.5,vocab=corpus.txt" (paths may not hold commas)."""
    table: dict[str, Any] = {key: spec_value(raw) for key, raw in spec_terms(text, "prune", SPEC_FORM).items()}
    if "vocab" in table:
        table["vocab"] = str(table["vocab"])  # a corpus name such as "2024" stays a path
    return prune_config_from_dict(table, base_dir=base_dir)
