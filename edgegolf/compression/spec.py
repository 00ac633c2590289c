"""The CLI's one-line specs (--prune 'layers=3,heads=0.5', --distill 'steps=600,data=news.jsonl')
split into terms and typed as TOML would type them; the table they make is validated by the
stage's config through edgegolf/settings.py, like a recipe's table."""

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
