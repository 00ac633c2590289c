"""The recipe (what to run) and the budget (what must hold).

Both come from a TOML file, from CLI flags, or from Python; all three go through
`Recipe.from_dict` / `Budget.from_dict`, so they accept exactly the same things and fail
with the same one-line messages naming the field, the value and what would be accepted.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgegolf.errors import RecipeError
from edgegolf.runtime.registry import task_names


def _check_fields(section: str, data: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RecipeError(f"recipe [{section}] must be a table, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RecipeError(f"recipe [{section}] has unknown field {unknown[0]!r}; "
                          f"accepted: {', '.join(sorted(allowed))}")
    return data


def _typed(section: str, name: str, value: Any, kind: type[Any], *, choices: tuple = (), minimum: float | None = None,
           maximum: float | None = None) -> Any:
    where = f"{section}.{name}"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise RecipeError(f"{where} = {value!r} is not a {kind.__name__}")
    if kind is float and not math.isfinite(value):  # nan passes every comparison below, and every limit
        raise RecipeError(f"{where} = {value!r} is not accepted; give a finite number")
    if choices and value not in choices:
        raise RecipeError(f"{where} = {value!r} is not accepted; choose one of: {', '.join(map(str, choices))}")
    if minimum is not None and value < minimum:
        raise RecipeError(f"{where} = {value!r} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise RecipeError(f"{where} = {value!r} is above the maximum {maximum}")
    return value


def _string_list(section: str, name: str, value: Any, *, choices: tuple = ()) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise RecipeError(f"{section}.{name} = {value!r} is not a list of strings")
    return tuple(_typed(section, name, item, str, choices=choices) for item in value)


COMPARISONS = ("ort-quantize-dynamic",)


@dataclass(frozen=True)
class ExportSettings:
    exporter: str = "torch"  # torch.onnx (legacy tracer); "optimum" needs the optimum extra
    opset: int = 17
    max_length: int = 128  # truncation of every input, in tokens
    atol: float = 1e-3  # max abs difference allowed between ONNX and PyTorch outputs
    layout: tuple[str, ...] = ()  # extra files other loaders need (edgegolf/layouts.py), e.g. "sentence-transformers"

    @classmethod
    def from_dict(cls, data: Any) -> ExportSettings:
        from edgegolf.layouts import layout_names

        d = _check_fields("export", data, {f.name for f in fields(cls)})
        base = cls()
        return cls(
            exporter=_typed("export", "exporter", d.get("exporter", base.exporter), str, choices=("torch", "optimum")),
            opset=_typed("export", "opset", d.get("opset", base.opset), int, minimum=14, maximum=23),
            max_length=_typed("export", "max_length", d.get("max_length", base.max_length), int,
                              minimum=8, maximum=8192),
            atol=_typed("export", "atol", d.get("atol", base.atol), float, minimum=0.0),
            layout=_string_list("export", "layout", d.get("layout", base.layout), choices=layout_names()),
        )


@dataclass(frozen=True)
class OptimizeSettings:
    mode: str = "auto"  # auto: keep the fused graph only if measured faster; on; off

    @classmethod
    def from_dict(cls, data: Any) -> OptimizeSettings:
        d = _check_fields("optimize", data, {"mode"})
        return cls(mode=_typed("optimize", "mode", d.get("mode", "auto"), str, choices=("auto", "on", "off")))


@dataclass(frozen=True)
class EvaluateSettings:
    data: str = "bbc-news"  # "bbc-news", a folder with one sub-folder of .txt files per class, or .csv/.jsonl/.parquet
    text_column: str = "text"  # the columns of a .csv/.jsonl/.parquet file
    label_column: str = "label"
    limit: int = 600  # texts scored: a stratified subset (accuracy shown with its 95 % interval); 0 = every text
    test_fraction: float = 0.3
    seed: int = 0
    calibration_size: int = 64  # train-split texts used to calibrate static quantization
    batch: int = 32  # texts per padded batch where outputs do not depend on batch neighbours; 1: one at a time
    # Reference artifacts measured beside the chain, e.g. "ort-quantize-dynamic": what
    # onnxruntime's quantize_dynamic with default arguments gives (what a user does by hand).
    compare: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any) -> EvaluateSettings:
        d = _check_fields("evaluate", data, {f.name for f in fields(cls)})
        base = cls()
        return cls(
            data=_typed("evaluate", "data", d.get("data", base.data), str),
            text_column=_typed("evaluate", "text_column", d.get("text_column", base.text_column), str),
            label_column=_typed("evaluate", "label_column", d.get("label_column", base.label_column), str),
            limit=_typed("evaluate", "limit", d.get("limit", base.limit), int, minimum=0),
            test_fraction=_typed("evaluate", "test_fraction", d.get("test_fraction", base.test_fraction), float,
                                 minimum=0.05, maximum=0.95),
            seed=_typed("evaluate", "seed", d.get("seed", base.seed), int),
            calibration_size=_typed("evaluate", "calibration_size", d.get("calibration_size", base.calibration_size),
                                    int, minimum=1),
            batch=_typed("evaluate", "batch", d.get("batch", base.batch), int, minimum=1, maximum=1024),
            compare=_string_list("evaluate", "compare", d.get("compare", base.compare), choices=COMPARISONS),
        )


@dataclass(frozen=True)
class BenchSettings:
    device: str = "cpu-1"  # a device profile name (edgegolf.devices.profiles); the budget's latency is measured here
    also: tuple[str, ...] = ()  # more device profiles every stage is timed on, for the report
    batch: int = 1
    seq: int = 128
    runs: int = 100
    warmup: int = 10
    max_seconds: float = 10.0

    @classmethod
    def from_dict(cls, data: Any) -> BenchSettings:
        d = _check_fields("bench", data, {f.name for f in fields(cls)})
        base = cls()
        return cls(
            device=_typed("bench", "device", d.get("device", base.device), str),
            also=_string_list("bench", "also", d.get("also", base.also)),
            batch=_typed("bench", "batch", d.get("batch", base.batch), int, minimum=1),
            seq=_typed("bench", "seq", d.get("seq", base.seq), int, minimum=1),
            runs=_typed("bench", "runs", d.get("runs", base.runs), int, minimum=5),
            warmup=_typed("bench", "warmup", d.get("warmup", base.warmup), int, minimum=0),
            max_seconds=_typed("bench", "max_seconds", d.get("max_seconds", base.max_seconds), float, minimum=0.1),
        )


@dataclass(frozen=True)
class Recipe:
    task: str | None = None  # None: inferred from the model's config
    export: ExportSettings = field(default_factory=ExportSettings)
    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    prune: dict[str, Any] = field(default_factory=dict)  # edgegolf.compression.prune.PruneConfig fields
    distill: dict[str, Any] = field(default_factory=dict)  # edgegolf.compression.distill.DistillConfig fields
    quantize: dict[str, Any] = field(default_factory=lambda: {"scheme": "default"})
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)

    SECTIONS = ("task", "prune", "distill", "export", "optimize", "quantize", "evaluate", "bench", "budget")

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe must be a table of sections, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.SECTIONS))
        if unknown:
            raise RecipeError(f"recipe has unknown section {unknown[0]!r}; accepted: {', '.join(cls.SECTIONS)}")
        task = data.get("task")
        if task is not None:
            task = _typed("recipe", "task", task, str, choices=task_names())
        from edgegolf.compression.prune import prune_config_from_dict

        prune = data.get("prune") or {}
        if prune:
            prune = prune_config_from_dict(prune).to_dict()  # validated and normalised
        from edgegolf.compression.distill import distill_config_from_dict

        distill = data.get("distill") or {}
        if distill:
            distill = distill_config_from_dict(distill).to_dict()  # validated; every field, so a rerun is exact
        quantize = data.get("quantize", {})
        if not isinstance(quantize, dict):
            raise RecipeError(f"recipe [quantize] must be a table, got {quantize!r}")
        quantize = {"scheme": "default", **quantize}  # quantize.RECIPE_DEFAULT: edgegolf's tuned int8
        quant_config(quantize)  # validates the scheme and its fields now, before any work
        return cls(
            task=task,
            prune=prune,
            distill=distill,
            export=ExportSettings.from_dict(data.get("export", {})),
            optimize=OptimizeSettings.from_dict(data.get("optimize", {})),
            quantize=quantize,
            evaluate=EvaluateSettings.from_dict(data.get("evaluate", {})),
            bench=BenchSettings.from_dict(data.get("bench", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["task"] is None:
            del data["task"]
        return data


_BUDGET_KEYS = {
    # key: (field, unit suffixes accepted)
    "size": ("size_mb", ("mb",)),
    "zstd": ("zstd_mb", ("mb",)),
    "p50": ("p50_ms", ("ms",)),
    "p95": ("p95_ms", ("ms",)),
    "memory": ("memory_mb", ("mb",)),
    "drop": ("max_accuracy_drop", ("", "pt", "points")),
}
_BUDGET_FORM = "size<=24MB, zstd<=20MB, p50<=8ms, p95<=10ms, memory<=300MB, drop<=0.5 (accuracy points)"


@dataclass(frozen=True)
class Budget:
    """Limits on the deployed artifact. None means "no limit on this"."""

    size_mb: float | None = None  # bytes the runtime needs (model graph + weights), MB = 1e6 bytes
    zstd_mb: float | None = None  # the same after zstd: the download size
    p50_ms: float | None = None  # latency at the bench shape on the bench device
    p95_ms: float | None = None
    memory_mb: float | None = None  # peak RSS of a fresh process that loads and runs the model
    max_accuracy_drop: float | None = None  # task metric of teacher minus artifact, in points

    @classmethod
    def from_dict(cls, data: Any) -> Budget:
        names = {f.name for f in fields(cls)}
        d = _check_fields("budget", data, names)
        values = {}
        for name, value in d.items():
            values[name] = _typed("budget", name, value, float, minimum=0.0)
        return cls(**values)

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse the CLI form, e.g. "size<=24MB,p50<=8ms,drop<=0.5"."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            match = re.fullmatch(r"([a-z0-9]+)\s*(<=|=)\s*([0-9]*\.?[0-9]+)\s*([a-z]*)", part.lower())
            if not match:
                raise RecipeError(f"budget term {part!r} is malformed; write terms like: {_BUDGET_FORM}")
            key, _, number, unit = match.groups()
            if key not in _BUDGET_KEYS:
                raise RecipeError(f"budget term {part!r} limits unknown {key!r}; accepted: {', '.join(_BUDGET_KEYS)}")
            name, units = _BUDGET_KEYS[key]
            if unit not in units and not (unit == "" and units[0] in ("mb", "ms")):
                raise RecipeError(f"budget term {part!r} has unit {unit!r}; {key} takes {units[0] or 'a plain number'}")
            values[name] = float(number)
        if not values:
            raise RecipeError(f"budget {text!r} sets no limit; write terms like: {_BUDGET_FORM}")
        return cls(**values)

    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def quant_config(table: dict[str, Any]):
    """The quantization config a [quantize] table asks for. "default" is edgegolf's tuned
    int8; fields given beside it (such as exclude) adjust that default."""
    from edgegolf.compression import quantize

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
