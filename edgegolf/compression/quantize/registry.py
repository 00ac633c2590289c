"""The scheme registry: scheme name -> config class, config class -> the function that
quantizes a graph for it, and a config's round trip through plain data (recipes, manifests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgegolf.errors import RecipeError
from edgegolf.settings import validate

SCHEMES: dict[str, type] = {}  # in registration order: built-ins first, then plugins
RECIPE_DEFAULT = "default"  # the recipe's alias for edgegolf's tuned int8 (default_int8)


SEARCHED: list[str] = []  # schemes a search offers (register_scheme(..., search=True))


def register_scheme(name: str, *, search: bool = False) -> Callable[[type], type]:
    """Class decorator: `name` is how recipes and --quantize call this config class; `search`
    offers it to `edgegolf search` (whose space also reads the fields' `search` values)."""
    def register(cls: type) -> type:
        if not isinstance(name, str) or not name or name == RECIPE_DEFAULT:
            raise ValueError(f"quantization scheme name {name!r} is not accepted; give a non-empty name other than "
                             f"{RECIPE_DEFAULT!r}")
        if name in SCHEMES and SCHEMES[name] is not cls:
            raise ValueError(f"quantization scheme {name!r} is already registered by {SCHEMES[name].__qualname__}")
        SCHEMES[name] = cls
        if search and name not in SEARCHED:
            SEARCHED.append(name)
        return cls
    return register


def scheme_names(*, with_default: bool = False) -> tuple[str, ...]:
    """Every registered scheme name (with the recipe alias "default" first when asked)."""
    return ((RECIPE_DEFAULT,) if with_default else ()) + tuple(SCHEMES)


def searched_scheme_names() -> tuple[str, ...]:
    """What a search tries: the tuned default first (its baseline), the searched schemes, and
    "none" (float32, the reference) last."""
    return (RECIPE_DEFAULT, *(n for n in SEARCHED if n != "none"), *(("none",) if "none" in SEARCHED else ()))


QuantConfig = Any  # an instance of any class in SCHEMES (the built-ins: NoQuant, Int8Dynamic, ...)


def scheme_name(config: QuantConfig) -> str:
    for name, cls in SCHEMES.items():
        if type(config) is cls:
            return name
    raise RecipeError(f"quantization config {config!r} is not one of: {', '.join(SCHEMES)}")


def config_from_dict(d: dict[str, Any]) -> QuantConfig:
    """{"scheme": "int8-dynamic", "per_channel": true, ...} -> Int8Dynamic(per_channel=True, ...)."""
    if not isinstance(d, dict):
        raise RecipeError(f"quantize must be a table such as {{scheme = 'int8-dynamic'}}, got {d!r}")
    scheme = d.get("scheme", "none")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise RecipeError(f"quantize.scheme = {scheme!r} is not accepted; choose one of: {', '.join(SCHEMES)}")
    cls = SCHEMES[scheme]
    known = [f.name for f in fields(cls)]
    for key, value in d.items():
        if key != "scheme" and key not in known:
            accepted = ", ".join(known) or "no other fields"
            raise RecipeError(f"quantize.{key} = {value!r} is not a field of scheme {scheme!r}; accepted: {accepted}")
    return validate(cls, {k: v for k, v in d.items() if k != "scheme"}, "quantize")


def config_to_dict(config: QuantConfig) -> dict[str, Any]:
    """The config as plain data, the inverse of config_from_dict (recorded in provenance)."""
    if type(config) not in SCHEMES.values() and hasattr(config, "to_dict"):
        return config.to_dict()  # a stand-in that names no scheme: choose.SchemeChoice
    out: dict[str, Any] = {"scheme": scheme_name(config)}
    for key, value in asdict(config).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


# returns None, or what it chose (a dict for the manifest, QuantReport.details)
Quantizer = Callable[[Any, Path, Path, list[str], "list[dict[str, np.ndarray]] | None"], "dict[str, Any] | None"]
_REGISTRY: dict[type, Quantizer] = {}


def quantizer(config_type: type) -> Callable[[Quantizer], Quantizer]:
    """Function decorator: how graphs are quantized for `config_type` (a registered scheme).

    The function gets (config, src .onnx, dst .onnx to write, node names excluded, calibration
    feeds or None) and writes dst; `quantize` wraps it with atomic output and the report.
    """
    def register(fn: Quantizer) -> Quantizer:
        _REGISTRY[config_type] = fn
        return fn
    return register
