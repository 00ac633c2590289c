"""What a search varies: the pipeline's own settings, as Optuna parameters.

A trial's parameters map to recipe overrides (the dotted keys `compress` takes), so every
trial is an ordinary compress run and its bundle's recipe.toml reruns it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgegolf.compression.prune.config import PruneConfig
from edgegolf.compression.quantize import Int4WeightOnly, scheme_names, searched_scheme_names
from edgegolf.compression.spec import spec_terms, spec_value
from edgegolf.errors import RecipeError
from edgegolf.settings import rule_of


def _searched_schemes() -> tuple[str, ...]:
    """The registered schemes marked for search (quantize.register_scheme), default first."""
    return searched_scheme_names()


def _kept(name: str) -> tuple[float, ...]:
    """The kept fractions PruneConfig.heads / .ffn declare as searchable."""
    return tuple(rule_of(PruneConfig, name).search or (1.0,))


def _vocab_counts() -> tuple[int, ...]:
    """0 (no vocabulary pruning), then the minimum counts PruneConfig.vocab_min_count declares."""
    return (0, *(rule_of(PruneConfig, "vocab_min_count").search or ()))


def _int4_block_sizes() -> tuple[int, ...]:
    """The `search` values Int4WeightOnly.block_size declares."""
    return tuple(rule_of(Int4WeightOnly, "block_size").search or (Int4WeightOnly().block_size,))


def _scheme_defaults(scheme: str) -> Any:
    """The config a scheme name gives with nothing else set ("default": the tuned int8), as a
    [quantize] table naming only the scheme gives it."""
    from edgegolf.recipe import quant_config

    return quant_config({"scheme": scheme})


def embedding_rule(scheme: str):
    """The `embeddings` field's Rule of a scheme whose table precision a search may choose (the
    field declares `search` values, e.g. Int8Dynamic's); None for schemes without that choice."""
    config = type(_scheme_defaults(scheme))
    if "embeddings" not in {f.name for f in fields(config)}:
        return None
    rule = rule_of(config, "embeddings")
    return rule if rule.search else None


def default_embeddings(scheme: str) -> str | None:
    """How a scheme stores embedding tables when the recipe does not say (None: no such field)."""
    return getattr(_scheme_defaults(scheme), "embeddings", None)


def _embedding_tables() -> tuple[str, ...]:
    """The embedding table precisions the searched schemes declare as searchable, in order."""
    declared = [v for s in _searched_schemes() if (rule := embedding_rule(s)) for v in rule.search or ()]
    return tuple(dict.fromkeys(declared)) or ("per-row",)


@dataclass(frozen=True)
class SearchSpace:
    """The choices offered to the sampler. Fractions are kept shares, as in a prune spec."""

    min_layers: int = 1
    max_layers: int | None = None  # None: the model's own count
    heads: tuple[float, ...] = field(default_factory=lambda: _kept("heads"))
    ffn: tuple[float, ...] = field(default_factory=lambda: _kept("ffn"))
    # vocabulary pruned to the train split's tokens seen at least this often (0: not pruned);
    # the word embeddings are most of a small encoder's bytes
    vocab: tuple[int, ...] = field(default_factory=_vocab_counts)
    schemes: tuple[str, ...] = field(default_factory=_searched_schemes)
    int4_block_sizes: tuple[int, ...] = field(default_factory=_int4_block_sizes)
    # how embedding tables are stored, for the schemes whose `embeddings` field declares search
    # values: "per-row" (8-bit rows) or "int4-block" (4-bit blocks in GatherBlockQuantized, about
    # half the bytes): MiniLM's word table is 11.7 MB at 8 bits, most of a pruned int8 student
    embeddings: tuple[str, ...] = field(default_factory=_embedding_tables)
    # [distill] settings (e.g. {"steps": 300}) offered as a choice for pruned students; None: never
    distill: dict[str, Any] | None = None
    # True: every pruned student asks for distillation (the proxy still rejects those that cannot fit)
    always_distill: bool = False

    def __post_init__(self) -> None:
        for name in ("min_layers", "max_layers"):
            value = getattr(self, name)
            if not (value is None and name == "max_layers") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise RecipeError(f"search {name} = {value!r} is not accepted; give an integer >= 1")
        if self.max_layers is not None and self.max_layers < self.min_layers:
            raise RecipeError(f"search max_layers = {self.max_layers} is below min_layers = {self.min_layers}; "
                              "give max_layers >= min_layers")
        known = scheme_names(with_default=True)
        unknown = [s for s in self.schemes if s not in known]
        if unknown or not self.schemes:
            raise RecipeError(f"search scheme {unknown[0] if unknown else ''!r} is not accepted; "
                              f"choose from: {', '.join(known)}")
        sizes = rule_of(Int4WeightOnly, "block_size").allowed()
        if not self.int4_block_sizes or any(b not in sizes for b in self.int4_block_sizes):
            raise RecipeError(f"search int4_block_sizes = {self.int4_block_sizes!r} is not accepted; choose from: "
                              f"{', '.join(map(str, sizes))}")
        offering = [s for s in self.schemes if embedding_rule(s)]
        for scheme in offering:
            allowed = embedding_rule(scheme).allowed()
            if not self.embeddings or any(e not in allowed for e in self.embeddings):
                raise RecipeError(f"search embeddings = {self.embeddings!r} is not accepted for scheme {scheme!r}; "
                                  f"choose from: {', '.join(allowed)}")
        if not offering and self.embeddings != _embedding_tables():
            storing = ", ".join(s for s in scheme_names(with_default=True) if embedding_rule(s))
            raise RecipeError(f"search embeddings = {self.embeddings!r} needs a scheme that stores embedding tables; "
                              f"schemes that do: {storing}")
        if not self.vocab or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.vocab):
            raise RecipeError(f"search vocab = {self.vocab!r} is not accepted; give minimum token counts >= 1, "
                              "0 for no vocabulary pruning")
        for name in ("heads", "ffn"):
            values = getattr(self, name)
            if not values or not all(0.0 < v <= 1.0 for v in values):
                raise RecipeError(f"search {name} = {values!r} is not accepted; give kept fractions 0 < f <= 1")


SPACE_FORM = "max_layers=2,heads=0.5;0.25,vocab=3;10,embeddings=int4-block"
_SPACE_INTS = ("min_layers", "max_layers")
_SPACE_LISTS: dict[str, type] = {"heads": float, "ffn": float, "vocab": int, "schemes": str,
                                 "int4_block_sizes": int, "embeddings": str}


def parse_space_spec(text: str) -> SearchSpace:
    """--space 'max_layers=2,heads=0.5;0.25': the fields of SearchSpace a user narrows, lists
    separated by ';'; every field not named keeps its default."""
    given: dict[str, Any] = {}
    for key, raw in spec_terms(text, "search space", SPACE_FORM).items():
        if key in _SPACE_INTS:
            given[key] = spec_value(raw)
        elif key in _SPACE_LISTS:
            kind = _SPACE_LISTS[key]
            try:
                given[key] = tuple(kind(part.strip()) for part in raw.split(";"))
            except ValueError:
                raise RecipeError(f"search space {key} = {raw!r} is not accepted; give {kind.__name__} values "
                                  f"separated by ';' (e.g. {SPACE_FORM})") from None
        else:
            raise RecipeError(f"search space has no setting {key!r}; accepted: "
                              f"{', '.join([*_SPACE_INTS, *_SPACE_LISTS])}")
    return SearchSpace(**given)


@dataclass(frozen=True)
class ModelShape:
    """What the space needs to know about the teacher."""

    layers: int
    heads: int  # key/value groups: the unit head pruning removes
    vocab_pruning: bool


@dataclass
class BoundSpace:
    """A space bound to one model and one vocabulary corpus: suggests and translates trials."""

    space: SearchSpace
    shape: ModelShape
    vocab_corpus: Path | None
    head_choices: list[float] = field(init=False)

    def __post_init__(self) -> None:
        # distinct head counts only: on a 2-head model 0.75 and 1.0 keep the same heads
        counts = sorted({max(1, round(f * self.shape.heads)) for f in self.space.heads}, reverse=True)
        self.head_choices = [c / self.shape.heads for c in counts]

    def layer_range(self) -> tuple[int, int]:
        """The fewest and most layers a trial keeps, within the model's own count."""
        most = min(self.space.max_layers or self.shape.layers, self.shape.layers)
        return min(self.space.min_layers, most), most

    def describe(self) -> dict[str, Any]:
        """Stored with the study: a rerun with another space must not mix into it."""
        return {"layers": list(self.layer_range()),
                "heads": self.head_choices, "ffn": list(self.space.ffn), "vocab": self.vocab_options(),
                "schemes": list(self.space.schemes), "int4_block_sizes": list(self.space.int4_block_sizes),
                "embeddings": list(self.space.embeddings),
                "distill": self.space.distill, **({"always_distill": True} if self.space.always_distill else {})}

    def vocab_options(self) -> list[int]:
        return [v for v in self.space.vocab if not v or (self.shape.vocab_pruning and self.vocab_corpus)] or [0]

    def baseline(self) -> dict[str, Any]:
        """The least pruned model in the space (the unpruned one by default) with the first scheme:
        what quantization alone gives."""
        params: dict[str, Any] = {
            "layers": self.layer_range()[1], "heads": 1.0 if 1.0 in self.head_choices else self.head_choices[0],
            "ffn": 1.0 if 1.0 in self.space.ffn else self.space.ffn[0], "vocab": 0, "quantize": self.space.schemes[0]}
        if params["quantize"] == "int4":
            params["int4_block_size"] = self.space.int4_block_sizes[0]
        if embedding_rule(params["quantize"]):
            params["embeddings"] = self.space.embeddings[0]
        return params

    def suggest(self, trial) -> dict[str, Any]:
        """Ask the trial for one value of each setting (int4's block size only under int4, the
        embedding tables' precision only under a scheme that offers it)."""
        trial.suggest_int("layers", *self.layer_range())
        trial.suggest_categorical("heads", self.head_choices)
        trial.suggest_categorical("ffn", list(self.space.ffn))
        vocab = trial.suggest_categorical("vocab", self.vocab_options())
        pruned = (trial.params["layers"] < self.shape.layers or trial.params["heads"] < 1.0
                  or trial.params["ffn"] < 1.0 or vocab)
        if self.space.distill and pruned:  # distillation needs a smaller student
            trial.suggest_categorical("distill", [True] if self.space.always_distill else [False, True])
        scheme = trial.suggest_categorical("quantize", list(self.space.schemes))
        if scheme == "int4":
            trial.suggest_categorical("int4_block_size", list(self.space.int4_block_sizes))
        if embedding_rule(scheme):
            trial.suggest_categorical("embeddings", list(self.space.embeddings))
        return dict(trial.params)

    def overrides(self, params: dict[str, Any]) -> dict[str, Any]:
        """Trial parameters -> the recipe overrides compress takes."""
        prune: dict[str, Any] = {}
        if params["layers"] < self.shape.layers:
            prune["layers"] = int(params["layers"])
        if params["heads"] < 1.0:
            prune["heads"] = float(params["heads"])
        if params["ffn"] < 1.0:
            prune["ffn"] = float(params["ffn"])
        if params["vocab"]:
            prune["vocab"] = str(self.vocab_corpus)
            if params["vocab"] > 1:
                prune["vocab_min_count"] = int(params["vocab"])
        quantize: dict[str, Any] = {"scheme": params["quantize"]}
        if params["quantize"] == "int4":
            quantize["block_size"] = int(params["int4_block_size"])
        # the scheme's own default table is left unsaid: the recipe reads as it did before the choice
        if params.get("embeddings", default_embeddings(params["quantize"])) != default_embeddings(params["quantize"]):
            quantize["embeddings"] = params["embeddings"]
        overrides = {"prune": prune, "quantize": quantize}
        if params.get("distill") and prune and self.space.distill:
            overrides["distill"] = dict(self.space.distill)
        return overrides


def model_shape(source_dir: Path, *, trust_remote_code: bool = False) -> ModelShape:
    """Layers and head groups of the teacher, read from its config (nothing is loaded)."""
    from transformers import AutoConfig

    from edgegolf.compression.prune.arch import family_for

    config = AutoConfig.from_pretrained(str(source_dir), trust_remote_code=trust_remote_code)
    family = family_for(config)  # raises a clear PruneError for an unsupported type
    view = family.config_view(config)  # the family's normalised words for its config
    if view.layers is None or view.kv_heads is None:
        raise RecipeError(f"search cannot read the layers and heads of {str(source_dir)!r}'s config "
                          f"({view.model_type})")
    layers, heads = view.layers, view.kv_heads
    return ModelShape(layers=layers, heads=heads, vocab_pruning=family.vocab_pruning and _is_wordpiece(source_dir))


def _is_wordpiece(source_dir: Path) -> bool:
    import json

    path = Path(source_dir) / "tokenizer.json"
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("model", {}).get("type") == "WordPiece"
        except (OSError, ValueError):
            return False
    return (Path(source_dir) / "vocab.txt").exists()  # a slow BERT tokenizer: WordPiece
