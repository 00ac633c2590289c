"""What the prune and distill stages share in reading their settings: the CLI's one-line
specs (--prune 'layers=3,heads=0.5', --distill 'steps=600,data=news.jsonl') split into
terms, and the typed-field checks whose errors name `stage.field`. Each stage validates its
own table with them."""

from __future__ import annotations

from typing import Any

from edgegolf.errors import RecipeError


def spec_terms(text: str, stage: str, form: str) -> dict[str, str]:
    """{key: raw value} of "key=value,key=value" (so a path may not hold a comma)."""
    if not isinstance(text, str) or not text.strip():
        raise RecipeError(f"{stage} spec {text!r} is empty; write terms like: {form}")
    table: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, raw = (s.strip() for s in part.partition("="))
        if not sep or not key or not raw:
            raise RecipeError(f"{stage} spec term {part!r} is not key=value; write terms like: {form}")
        if key in table:
            raise RecipeError(f"{stage} spec sets {key!r} twice; give each key once")
        table[key] = raw
    return table


def spec_value(raw: str, *, none_word: bool = False) -> Any:
    """A raw term as TOML would type it: true/false, an int, a float, else the text
    ("none" is None only where the stage has optional fields that take it)."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if none_word and raw.lower() == "none":
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def number_field(stage: str, name: str, value: Any, kind: type, rule: str) -> Any:
    """`value` as an int or a float (a whole float is an int; bool is not a number), or a
    RecipeError naming `stage.name` and the `rule`."""
    if isinstance(value, bool):
        raise RecipeError(f"{stage}.{name} = {value!r} is not a number; {rule}")
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise RecipeError(f"{stage}.{name} = {value!r} is not a{'n integer' if kind is int else ' number'}; {rule}")
    return value


def choice_field(stage: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise RecipeError(f"{stage}.{name} = {value!r} is not accepted; choose one of: {', '.join(choices)}")
    return value
