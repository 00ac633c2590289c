"""The recipe (what to run) and the budget (what must hold).

Both come from a TOML file, from CLI flags, or from Python; all three go through
`Recipe.from_dict` / `Budget.from_dict`, so they accept exactly the same things and fail
with the same one-line messages naming the field, the value and what would be accepted.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgegolf.errors import RecipeError
from edgegolf.runtime.registry import task_names
from edgegolf.settings import Rule, check_instance, check_value, setting, to_table, validate, with_rules

if TYPE_CHECKING:
    from edgegolf.compression.distill.config import DistillConfig
    from edgegolf.compression.prune.config import PruneConfig

QuantConfig = Any  # an instance of a registered quantization scheme (edgegolf.compression.quantize.SCHEMES)


COMPARISONS = ("ort-quantize-dynamic",)
_TASK = Rule(kind="str", choices=task_names, cli="--task")
EXPORTERS = ("torch", "optimum")
OPTIMIZE_MODES = ("auto", "on", "off")


def _layout_names() -> tuple[str, ...]:
    from edgegolf.layouts import layout_names

    return tuple(layout_names())


@dataclass(frozen=True)
class ExportSettings:
    exporter: str = setting("torch", kind="str", choices=EXPORTERS, cli="--exporter",
                            help='torch.onnx (legacy tracer); "optimum" needs the optimum extra')
    opset: int = setting(17, kind="int", minimum=14, maximum=23, cli="--opset")
    max_length: int = setting(128, kind="int", minimum=8, maximum=8192, cli="--max-length",
                              help="truncation of every input, in tokens")
    atol: float = setting(1e-3, kind="float", minimum=0.0,
                          help="max abs difference allowed between ONNX and PyTorch outputs")
    layout: tuple[str, ...] = setting((), kind="strings", choices=_layout_names, cli="--layout",
                                      help='extra files other loaders need (edgegolf/layouts.py), '
                                           'e.g. "sentence-transformers"')

    def __post_init__(self) -> None:
        check_instance(self, "export")  # the same rules for ExportSettings(...) in Python as for a [export] table

    @classmethod
    def from_dict(cls, data: Any) -> ExportSettings:
        return validate(cls, data, "export")


@dataclass(frozen=True)
class OptimizeSettings:
    mode: str = setting("auto", kind="str", choices=OPTIMIZE_MODES, cli="--optimize",
                        help="auto: keep the fused graph unless timed slower side by side with the export; on; off")

    def __post_init__(self) -> None:
        check_instance(self, "optimize")  # the same rules for OptimizeSettings(...) in Python as for a [optimize] table

    @classmethod
    def from_dict(cls, data: Any) -> OptimizeSettings:
        return validate(cls, data, "optimize")


# The rules of [evaluate]'s fields, kept beside the class so that its field lines stay plain defaults.
_EVALUATE_RULES = {
    "data": Rule(kind="str", cli="--data"),
    "text_column": Rule(kind="str", cli="--text-column"),
    "label_column": Rule(kind="str", cli="--label-column"),
    # None: the task's own default (600 texts; 32,768 scored tokens for causal-lm); 0: everything
    "limit": Rule(kind="int", minimum=0, optional=True, cli="--eval-limit"),
    "test_fraction": Rule(kind="float", minimum=0.05, maximum=0.95),
    "seed": Rule(kind="int"),
    "calibration_size": Rule(kind="int", minimum=1),
    "batch": Rule(kind="int", minimum=1, maximum=1024),
    "compare": Rule(kind="strings", choices=COMPARISONS, cli="--compare"),
}


@with_rules(_EVALUATE_RULES)
@dataclass(frozen=True)
class EvaluateSettings:
    data: str = "bbc-news"  # "bbc-news", a folder with one sub-folder of .txt files per class, or .csv/.jsonl/.parquet
    text_column: str = "text"  # the columns of a .csv/.jsonl/.parquet file
    label_column: str = "label"
    # what is scored: None = the task's default_eval_limit (a stratified subset of 600 texts, accuracy
    # shown with its 95 % interval; causal-lm: 32,768 tokens); 0 = every text; N = N texts (tokens)
    limit: int | None = None
    test_fraction: float = 0.3
    seed: int = 0
    calibration_size: int = 64  # train-split texts used to calibrate static quantization
    batch: int = 32  # texts per padded batch where outputs do not depend on batch neighbours; 1: one at a time
    # Reference artifacts measured beside the chain, e.g. "ort-quantize-dynamic": what
    # onnxruntime's quantize_dynamic with default arguments gives (what a user does by hand).
    compare: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_instance(self, "evaluate")  # the same rules for EvaluateSettings(...) in Python as for a [evaluate] table

    @classmethod
    def from_dict(cls, data: Any) -> EvaluateSettings:
        return validate(cls, data, "evaluate")


@dataclass(frozen=True)
class BenchSettings:
    device: str = setting("cpu-1", kind="str", cli="--device",
                          help="a device profile name (edgegolf.devices.profiles); the budget's latency is "
                               "measured here")
    also: tuple[str, ...] = setting((), kind="strings", help="more device profiles every stage is timed on")
    batch: int = setting(1, kind="int", minimum=1)
    seq: int = setting(128, kind="int", minimum=1)
    runs: int = setting(100, kind="int", minimum=5)
    warmup: int = setting(10, kind="int", minimum=0)
    max_seconds: float = setting(10.0, kind="float", minimum=0.1)

    def __post_init__(self) -> None:
        check_instance(self, "bench")  # the same rules for BenchSettings(...) in Python as for a [bench] table

    @classmethod
    def from_dict(cls, data: Any) -> BenchSettings:
        return validate(cls, data, "bench")


def _default_quantize() -> QuantConfig:
    from edgegolf.compression.quantize import default_int8

    return default_int8()


@dataclass(frozen=True)
class Recipe:
    """What to run. Every section is a typed config: `Recipe(quantize=Int4WeightOnly(block_size=32),
    prune=PruneConfig(layers=3))` in Python, or the same as TOML tables through `from_dict`."""

    task: str | None = None  # None: inferred from the model's config
    export: ExportSettings = field(default_factory=ExportSettings)
    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    prune: PruneConfig | None = None  # None: not pruned
    distill: DistillConfig | None = None  # None: not distilled (needs prune)
    quantize: QuantConfig = field(default_factory=_default_quantize)  # default: edgegolf's tuned int8
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)

    SECTIONS = ("task", "prune", "distill", "export", "optimize", "quantize", "evaluate", "bench", "budget")

    def __post_init__(self) -> None:
        from edgegolf.compression.distill.config import DistillConfig
        from edgegolf.compression.prune.config import PruneConfig
        from edgegolf.compression.quantize import scheme_name

        if self.task is not None:
            check_value("recipe.task", self.task, _TASK)
        for name, kind in (("export", ExportSettings), ("optimize", OptimizeSettings),
                           ("evaluate", EvaluateSettings), ("bench", BenchSettings)):
            if not isinstance(getattr(self, name), kind):
                raise RecipeError(f"recipe.{name} = {getattr(self, name)!r} is not accepted; give {kind.__name__}(...)")
        if self.prune is not None and not isinstance(self.prune, PruneConfig):
            raise RecipeError(f"recipe.prune = {self.prune!r} is not accepted; give PruneConfig(...) or None")
        if self.distill is not None and not isinstance(self.distill, DistillConfig):
            raise RecipeError(f"recipe.distill = {self.distill!r} is not accepted; give DistillConfig(...) or None")
        from edgegolf.compression.quantize.choose import SchemeChoice

        if not isinstance(self.quantize, SchemeChoice):  # compress() asks a size limit to choose (choose.py)
            scheme_name(self.quantize)  # a registered scheme's config, or the one-line error

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe must be a table of sections, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.SECTIONS))
        if unknown:
            raise RecipeError(f"recipe has unknown section {unknown[0]!r}; accepted: {', '.join(cls.SECTIONS)}")
        from edgegolf.compression.distill import distill_config_from_dict
        from edgegolf.compression.prune import prune_config_from_dict

        if data.get("task") is not None:  # first: a section's fields can depend on the task
            check_value("recipe.task", data["task"], _TASK)
        prune = data.get("prune") or None
        distill = data.get("distill") or None
        quantize = data.get("quantize", {})
        if not isinstance(quantize, dict):
            raise RecipeError(f"recipe [quantize] must be a table, got {quantize!r}")
        return cls(
            task=data.get("task"),
            prune=prune_config_from_dict(prune) if prune is not None else None,
            distill=distill_config_from_dict(distill) if distill is not None else None,
            export=ExportSettings.from_dict(data.get("export", {})),
            optimize=OptimizeSettings.from_dict(data.get("optimize", {})),
            quantize=quant_config({"scheme": "default", **quantize}),  # quantize.RECIPE_DEFAULT: the tuned int8
            evaluate=EvaluateSettings.from_dict(data.get("evaluate", {})),
            bench=BenchSettings.from_dict(data.get("bench", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as the TOML file would hold it (recipe.toml, the manifest): from_dict of it
        gives this recipe back."""
        from edgegolf.compression import quantize

        data: dict[str, Any] = {} if self.task is None else {"task": self.task}
        data["export"] = to_table(self.export)
        data["optimize"] = to_table(self.optimize)
        data["prune"] = self.prune.to_dict() if self.prune is not None else {}
        data["distill"] = self.distill.to_dict() if self.distill is not None else {}
        data["quantize"] = ({"scheme": quantize.RECIPE_DEFAULT} if self.quantize == quantize.default_int8()
                            else quantize.config_to_dict(self.quantize))
        data["evaluate"] = to_table(self.evaluate)
        data["bench"] = to_table(self.bench)
        return data


_BUDGET_FORM = ("size<=24MB, zstd<=20MB, p50<=8ms, p95<=10ms, p50<=0.1x (times the fp32 export's p50), "
                "memory<=300MB, drop<=0.5 (accuracy points)")
# the unit of a latency limit relative to the fp32 export measured in the same run
RELATIVE = "x"


def _limit(term: str, unit: str, label: str, help: str, *, units: tuple[str, ...] | None = None) -> Any:
    """A budget limit: its CLI term (p50<=8ms), the units the term takes, and how the verdict names it."""
    extra = {"term": term, "units": units or (unit.lower(),), "unit": unit, "label": label}
    return setting(None, kind="float", optional=True, minimum=0.0, help=help, extra=extra)


@dataclass(frozen=True)
class Budget:
    """Limits on the deployed artifact. None means "no limit on this"."""

    size_mb: float | None = _limit("size", "MB", "size",
                                   "bytes the runtime needs (model graph + weights), MB = 1e6 bytes")
    zstd_mb: float | None = _limit("zstd", "MB", "zstd size", "the same after zstd: the download size")
    p50_ms: float | None = _limit("p50", "ms", "p50 latency", "latency at the bench shape on the bench device")
    p95_ms: float | None = _limit("p95", "ms", "p95 latency", "latency at the bench shape on the bench device")
    # p50<=0.1x: at most 0.1 times the p50 of the unpruned model's fp32 export, timed in the same
    # compress run on the same device (ratios within one run hold on a loaded machine; absolute ms do not)
    p50_ratio: float | None = _limit("p50", RELATIVE, "p50", "p50 as a multiple of the fp32 export's p50, "
                                     "measured in the same run on the same device", units=(RELATIVE,))
    p95_ratio: float | None = _limit("p95", RELATIVE, "p95", "p95 as a multiple of the fp32 export's p95, "
                                     "measured in the same run on the same device", units=(RELATIVE,))
    memory_mb: float | None = _limit("memory", "MB", "peak memory",
                                     "peak RSS of a fresh process that loads and runs the model")
    max_accuracy_drop: float | None = _limit("drop", "points", "accuracy drop",
                                             "task metric of teacher minus artifact, in points",
                                             units=("", "pt", "points"))

    def __post_init__(self) -> None:
        check_instance(self, "budget")

    @classmethod
    def limits(cls) -> dict[str, Mapping[str, Any]]:
        """field -> {term, units, unit, label}: the one table the CLI form and the verdict read."""
        return {f.name: f.metadata["rule"].extra for f in fields(cls)}

    @classmethod
    def from_dict(cls, data: Any) -> Budget:
        return validate(cls, data, "budget")

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse the CLI form, e.g. "size<=24MB,p50<=8ms,drop<=0.5"."""
        by_term: dict[str, list[str]] = {}  # a term's fields: p50 is p50_ms (ms) or p50_ratio (x)
        for name, limit in cls.limits().items():
            by_term.setdefault(limit["term"], []).append(name)
        relative = [term for term, names in by_term.items()
                    if any(RELATIVE in cls.limits()[n]["units"] for n in names)]
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            match = re.fullmatch(r"([a-z0-9]+)\s*(<=|=)\s*([0-9]*\.?[0-9]+)\s*([a-z]*)", part.lower())
            if not match:
                raise RecipeError(f"budget term {part!r} is malformed; write terms like: {_BUDGET_FORM}")
            key, _, number, unit = match.groups()
            if key not in by_term:
                raise RecipeError(f"budget term {part!r} limits unknown {key!r}; accepted: {', '.join(by_term)}")
            # a plain number is the term's first unit (p50<=0.1 is 0.1 ms, as it always was)
            field_name = next((n for n in by_term[key] if unit in cls.limits()[n]["units"]
                               or (unit == "" and cls.limits()[n]["units"][0] in ("mb", "ms"))), None)
            if field_name is None:
                absolute = cls.limits()[by_term[key][0]]["units"][0]
                takes = f"{absolute or 'a plain number'}" + (f" or {RELATIVE} (a multiple of the fp32 export's "
                                                             f"{key})" if key in relative else "")
                why = (f"only {' and '.join(relative)} take {RELATIVE} (a multiple of the fp32 export's latency); "
                       if unit == RELATIVE else "")
                raise RecipeError(f"budget term {part!r} has unit {unit!r}; {why}{key} takes {takes}")
            values[field_name] = float(number)
        if not values:
            raise RecipeError(f"budget {text!r} sets no limit; write terms like: {_BUDGET_FORM}")
        return cls(**values)

    def relative_fields(self) -> list[str]:
        """The limits set relative to the fp32 export (they need its latency measured)."""
        return [name for name, value in asdict(self).items()
                if value is not None and self.limits()[name]["unit"] == RELATIVE]

    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def quant_config(table: dict[str, Any] | QuantConfig) -> QuantConfig:
    """The quantization config a [quantize] table asks for (a config is returned as it is).
    "default" is edgegolf's tuned int8; fields given beside it (such as exclude) adjust that default."""
    from edgegolf.compression import quantize

    if not isinstance(table, dict):
        quantize.scheme_name(table)  # a registered scheme's config, or the one-line error
        return table
    if table.get("scheme") == quantize.RECIPE_DEFAULT:
        return quantize.config_from_dict({**quantize.config_to_dict(quantize.default_int8()),
                                          **{k: v for k, v in table.items() if k != "scheme"}})
    return quantize.config_from_dict(table)


def load_recipe_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a TOML recipe; returns (recipe table, budget table) before validation."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe file {str(path)!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe file {str(path)!r} is not valid TOML: {exc}") from None
    budget = data.pop("budget", {})
    resolve_paths(data, path.parent)  # relative to the recipe file, not to where edgegolf runs
    return data, budget


NAMED_DATA = ("train-split", "bbc-news")  # data sets by name, not paths
PATH_FIELDS = (("prune", "vocab"), ("distill", "data"), ("evaluate", "data"))


def resolve_paths(table: dict[str, Any], folder: Path) -> None:
    """Make the recipe's file paths absolute, relative to `folder`, so that the recipe.toml a
    bundle carries reruns the same files from anywhere."""
    for section, key in PATH_FIELDS:
        fields = table.get(section)
        if isinstance(fields, dict) and isinstance(fields.get(key), str) and fields[key].strip() not in NAMED_DATA:
            fields[key] = str((folder / Path(fields[key].strip()).expanduser()).resolve())


def set_dotted(table: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply a CLI override such as ("quantize.scheme", "int4") to a recipe table."""
    *sections, name = dotted.split(".")
    node = table
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise RecipeError(f"recipe field {section!r} must be a table to set {dotted}")
    node[name] = value
