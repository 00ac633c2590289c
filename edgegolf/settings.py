"""The typed settings layer: every field a user writes carries its rule, and one validator
reads tables (TOML, dicts, CLI overrides) into frozen configs with one-line errors.

    @dataclass(frozen=True)
    class ExportSettings:
        opset: int = setting(17, minimum=14, maximum=23, help="ONNX opset")

    validate(ExportSettings, {"opset": 99}, "export")
    # RecipeError: export.opset = 99 is above the maximum 23

A field's metadata (its `Rule`) is also what the CLI's choices and the search space read
(`rule_of`, `choices_of`), so a choice is declared once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgegolf.errors import RecipeError

KINDS = ("int", "float", "str", "bool", "strings", "ints", "path", "any")
_NAMED = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "strings": "a list of strings", "ints": "a list of integers", "path": "a path", "any": "a value"}


@dataclass(frozen=True)
class Rule:
    """What a field accepts. `accepts` (when given) is the "what would be accepted" text of every
    error about the field; otherwise the message names the kind, the choices or the bound."""

    kind: str = "any"
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] = ()
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound
    below: float | None = None  # exclusive upper bound
    optional: bool = False  # None is accepted (and means "not set")
    accepts: str | None = None
    cli: str | None = None  # the CLI flag that sets this field, e.g. "--opset"
    search: tuple[Any, ...] | None = None  # values a search offers for this field
    help: str = ""
    extra: Mapping[str, Any] = dataclass_field(default_factory=dict)  # what one section needs (a unit, a label)

    def allowed(self) -> tuple[Any, ...]:
        return self.choices() if callable(self.choices) else self.choices


def setting(default: Any = MISSING, *, kind: str = "any", factory: Callable[[], Any] | None = None,
            **rule: Any) -> Any:
    """A dataclass field with its Rule in the metadata (see Rule for the keywords)."""
    if kind not in KINDS:
        raise ValueError(f"setting kind {kind!r} is not one of {KINDS}")
    metadata = {"rule": Rule(kind=kind, **rule)}
    if factory is not None:
        return dataclass_field(default_factory=factory, metadata=metadata)
    return dataclass_field(default=default, metadata=metadata)


def with_rules(rules: Mapping[str, Rule]) -> Callable[[type], type]:
    """Class decorator (above @dataclass): put `rules` on the fields of a config whose field
    lines stay plain defaults; the same as writing `setting(...)` on each."""
    def attach(cls: type) -> type:
        by_name = {f.name: f for f in fields(cls)}
        unknown = sorted(set(rules) - set(by_name))
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}")
        for name, rule in rules.items():
            by_name[name].metadata = MappingProxyType({**by_name[name].metadata, "rule": rule})
        return cls
    return attach


def rule_of(cls: Any, name: str) -> Rule:
    for f in fields(cls):
        if f.name == name:
            return f.metadata.get("rule", Rule())
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def choices_of(cls: Any, name: str) -> tuple[Any, ...]:
    return rule_of(cls, name).allowed()


def _join(values: tuple[Any, ...]) -> str:
    return ", ".join("none" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in values)


def _among(value: Any, allowed: tuple[Any, ...]) -> bool:
    """`value in allowed`, where True is not 1 and 1 is not True."""
    return any(type(v) is type(value) and v == value for v in allowed)


def _fail(where: str, value: Any, problem: str, rule: Rule) -> RecipeError:
    return RecipeError(f"{where} = {value!r} {problem}" + (f"; {rule.accepts}" if rule.accepts else ""))


def check_value(where: str, value: Any, rule: Rule) -> Any:
    """`value` coerced to the rule's kind (a whole float is an int, an int a float, a list a
    tuple), or a RecipeError naming `where`, the value and what would be accepted."""
    if value is None and rule.optional:
        return None
    allowed = rule.allowed()
    kind = rule.kind
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if allowed and not rule.accepts:
                raise RecipeError(f"{where} = {value!r} is not accepted; choose one of: {_join(allowed)}")
            raise _fail(where, value, f"is not {_NAMED[kind]}", rule)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise _fail(where, value, "is not an integer", rule)
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):  # nan passes every comparison, and every limit
                raise _fail(where, value, "is not accepted" if rule.accepts else
                            "is not accepted; give a finite number", rule)
    elif kind == "str":
        if not isinstance(value, str):
            raise _fail(where, value, "is not a string", rule)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise _fail(where, value, "is not accepted", rule) if rule.accepts else \
                RecipeError(f"{where} = {value!r} is not accepted; choose one of: true, false")
    elif kind in ("strings", "ints"):
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _fail(where, value, f"is not {_NAMED[kind]}", rule)
        item = Rule(kind=kind[:-1] if kind == "ints" else "str", choices=rule.choices, accepts=rule.accepts)
        value = tuple(check_value(where, v, item) for v in value)
        if allowed:
            return value
    elif kind == "path":
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise _fail(where, value, "is not a path", rule)
        value = Path(str(value).strip()).expanduser()
    if allowed and not _among(value, allowed):
        raise RecipeError(f"{where} = {value!r} is not accepted; choose one of: {_join(allowed)}")
    if kind in ("int", "float"):
        low_bad = ((rule.minimum is not None and value < rule.minimum)
                   or (rule.above is not None and value <= rule.above))
        high_bad = ((rule.maximum is not None and value > rule.maximum)
                    or (rule.below is not None and value >= rule.below))
        if rule.accepts and (low_bad or high_bad):
            raise _fail(where, value, "is out of range", rule)
        if low_bad:
            bound = rule.minimum if rule.minimum is not None else rule.above
            raise RecipeError(f"{where} = {value!r} is below the minimum {bound}")
        if high_bad:
            bound = rule.maximum if rule.maximum is not None else rule.below
            raise RecipeError(f"{where} = {value!r} is above the maximum {bound}")
    return value


def table_of(section: str, data: Any, cls: Any, *, label: str | None = None, example: str = "") -> dict[str, Any]:
    """`data` as a table of `cls`'s fields, or the one-line error (not a table; unknown field).
    `label` names the section in the unknown-field error (a CLI spec's "prune", not "recipe [prune]")."""
    if not isinstance(data, Mapping):
        like = f" like {example}" if example else ""
        raise RecipeError(f"recipe [{section}] must be a table{like}, got {data!r}")
    label = label or f"recipe [{section}]"
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise RecipeError(f"{label} has unknown field {unknown[0]!r}; accepted: {', '.join(sorted(names))}")
    return dict(data)


def validate(cls: Any, data: Any, section: str, *, label: str | None = None, example: str = "",
             given: Mapping[str, Any] | None = None) -> Any:
    """A frozen `cls` from a table: every field present is checked against its Rule under the
    name `section.field`; absent fields keep their defaults. `given` are fields set by the caller
    (not by the user), passed through as they are."""
    table = table_of(section, data, cls, label=label, example=example)
    values = dict(given or {})
    for f in fields(cls):
        if f.name in table:
            values[f.name] = check_value(f"{section}.{f.name}", table[f.name], f.metadata.get("rule") or _implied(f))
    return cls(**values)


def _implied(f: Any) -> Rule:
    """The rule of a field declared without one (a plugin's plain dataclass): its default's kind."""
    default = f.default
    if isinstance(default, bool):
        return Rule(kind="bool")
    if isinstance(default, (int, float, str)):
        return Rule(kind=type(default).__name__)
    if isinstance(default, tuple):
        return Rule(kind="ints" if default and all(isinstance(v, int) for v in default) else "strings")
    return Rule()


def check_instance(config: Any, section: str, *, where: Callable[[str], str] | None = None) -> None:
    """For __post_init__ of a config built directly in Python (Int4WeightOnly(block_size=33)):
    the same rules as `validate`, with the same messages; coerced values are stored. `where`
    names a field in the errors when `section.field` would not (a device profile's name)."""
    for f in fields(config):
        rule = f.metadata.get("rule")
        if rule is None:
            continue
        value = getattr(config, f.name)
        checked = check_value(where(f.name) if where else f"{section}.{f.name}", value, rule)
        if type(checked) is not type(value) or checked != value:
            object.__setattr__(config, f.name, checked)


def to_table(config: Any, *, changed_only: bool = False) -> dict[str, Any]:
    """A config as TOML/JSON-ready data (tuples as lists, paths as strings); `changed_only`
    keeps only the fields that differ from the defaults."""
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if changed_only and f.default is not MISSING and value == f.default:
            continue
        if is_dataclass(value) and not isinstance(value, type):
            value = to_table(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path):
            value = str(value)
        out[f.name] = value
    return out
