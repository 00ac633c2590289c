"""What to prune: `PruneConfig`, from a spec string (CLI) or a table (TOML recipe).

Both forms go through `prune_config_from_dict`, so they accept the same things and fail
with the same one-line messages (field, value, what would be accepted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgegolf.compression.spec import spec_terms, spec_value
from edgegolf.errors import RecipeError
from edgegolf.settings import check_instance, check_value, rule_of, setting, table_of, validate

LAYER_SELECTIONS = ("auto", "even", "importance")
IMPORTANCE_METHODS = ("activation", "magnitude")
UNSTRUCTURED_SCOPES = ("global", "layer")
SPEC_FORM = "layers=3,heads=0.5,ffn=0.5,vocab=corpus.txt"
_CORPUS = "give a text file or a folder of .txt files"


def _fraction_rule(name: str, what: str) -> str:
    return f"give the fraction of {what} kept, 0 < {name} <= 1 (0.5 keeps half)"


@dataclass(frozen=True)
class PruneConfig:
    """Which structures to cut. Every field left at None is not pruned.

    Fractions say how much is KEPT: heads=0.5 keeps half of the attention heads (for
    grouped-query attention, half of the key/value groups with all their query heads),
    ffn=0.5 keeps half of the feed-forward neurons. Only uniform sizes are produced: every
    layer keeps the same number of heads and neurons, each layer choosing its own by
    importance. `unstructured` is the other way round: the fraction of weights set to zero.
    """

    layers: int | None = setting(None, kind="int", optional=True, minimum=1, cli="--prune layers=",
                                 accepts="give the number of layers kept, an integer >= 1 (layers=3 keeps 3)")
    # even: evenly spaced, first and last kept; importance: measured on calibration text (greedy,
    # one forward pass per layer left per layer removed); auto: the family's choice
    # (Family.auto_layer_selection) where calibration texts are given, else even
    layer_selection: str = setting("auto", kind="str", choices=LAYER_SELECTIONS)
    heads: float | None = setting(None, kind="float", optional=True, above=0.0, maximum=1.0, cli="--prune heads=",
                                  search=(1.0, 0.75, 0.5, 0.25), accepts=_fraction_rule("heads", "attention heads"))
    ffn: float | None = setting(None, kind="float", optional=True, above=0.0, maximum=1.0, cli="--prune ffn=",
                                search=(1.0, 0.75, 0.5, 0.25), accepts=_fraction_rule("ffn", "feed-forward neurons"))
    # activation: measured on calibration text; magnitude: weights only
    importance: str = setting("activation", kind="str", choices=IMPORTANCE_METHODS)
    # domain corpus (a .txt file, or a folder of .txt files) for vocabulary pruning
    vocab: Path | None = setting(None, kind="path", optional=True, cli="--prune vocab=", accepts=_CORPUS)
    # a corpus token is kept when it occurs at least this many times
    vocab_min_count: int = setting(1, kind="int", minimum=1, search=(1, 3, 10),
                                   accepts="give how often a corpus token must occur to be kept, an integer >= 1")
    # also keep single characters, so unseen words are spelled out, not [UNK]
    vocab_alphabet: bool = setting(True, kind="bool")
    # fraction of weights zeroed by magnitude, 0 <= x < 1
    unstructured: float | None = setting(None, kind="float", optional=True, minimum=0.0, below=1.0,
                                         accepts="give the fraction of weights set to zero, 0 <= unstructured < 1 "
                                                 "(0.5 zeroes half)")
    # global: one threshold over all layers; layer: the same share per layer
    unstructured_scope: str = setting("global", kind="str", choices=UNSTRUCTURED_SCOPES)

    def __post_init__(self) -> None:
        check_instance(self, "prune")

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


def prune_config_from_dict(data: Any, *, base_dir: Path | None = None) -> PruneConfig:
    """Validate a [prune] table. A relative `vocab` path is taken from `base_dir` (the recipe's folder)."""
    table = table_of("prune", data, PruneConfig, label="prune", example="{layers = 3, heads = 0.5}")
    given = {}
    if table.get("vocab") is not None:
        given["vocab"] = _corpus_path(table.pop("vocab"), base_dir)
    config = validate(PruneConfig, table, "prune", given=given)
    if config.is_empty():
        raise RecipeError(f"prune {data!r} prunes nothing; set at least one of layers, heads, ffn, vocab, unstructured "
                          f"(e.g. {SPEC_FORM})")
    return config


def _corpus_path(value: Any, base_dir: Path | None) -> Path:
    path = check_value("prune.vocab", value, rule_of(PruneConfig, "vocab"))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise RecipeError(f"prune.vocab = {str(value)!r} does not exist; {_CORPUS}")
    return path


def parse_prune_spec(text: str, *, base_dir: Path | None = None) -> PruneConfig:
    """Parse the CLI form, e.g. "layers=3,heads=0.5,ffn=0.5,vocab=corpus.txt" (paths may not hold commas)."""
    table: dict[str, Any] = {key: spec_value(raw) for key, raw in spec_terms(text, "prune", SPEC_FORM).items()}
    if "vocab" in table:
        table["vocab"] = str(table["vocab"])  # a corpus name such as "2024" stays a path
    return prune_config_from_dict(table, base_dir=base_dir)
