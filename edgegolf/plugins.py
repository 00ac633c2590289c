"""Plugins: code outside the package that registers tasks, quantization schemes, device kinds
or pruning families, loaded when the command line starts.

Two ways to name them, both read by `load_plugins`:
- the environment variable EDGEGOLF_PLUGINS, module names separated by commas
  (`EDGEGOLF_PLUGINS=my_scheme,my_device edgegolf compress ...`);
- the entry-point group "edgegolf.plugins" of an installed distribution
  (pyproject.toml: `[project.entry-points."edgegolf.plugins"] mine = "my_package.edgegolf_plugin"`),
  https://packaging.python.org/en/latest/specifications/entry-points/.

Importing the module is all a plugin needs: its decorators (runtime_model, register_task,
register_scheme / quantizer, register_kind, register_family) do the registering. A Python
program that uses edgegolf as a library imports its plugins itself.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from importlib import metadata

from edgegolf.errors import EdgegolfError

log = logging.getLogger(__name__)

ENV_VAR = "EDGEGOLF_PLUGINS"
ENTRY_POINT_GROUP = "edgegolf.plugins"

_loaded: list[str] = []


class PluginError(EdgegolfError):
    """A named plugin failed to import (exit code 2, like every bad input)."""


def load_plugins(environ: Mapping[str, str] | None = None) -> list[str]:
    """Import every plugin named by EDGEGOLF_PLUGINS and the "edgegolf.plugins" entry points,
    once each; returns the names imported by this call. A failure names the plugin and why."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    names = [(name.strip(), ENV_VAR) for name in env.get(ENV_VAR, "").split(",") if name.strip()]
    entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    done = []
    for name, origin in names:
        if name not in _loaded:
            _import(name, f"{name!r} (from {origin})", lambda name=name: importlib.import_module(name))
            done.append(name)
    for entry in entry_points:
        if entry.value not in _loaded:
            _import(entry.value, f"{entry.name!r} (entry point {entry.value!r} of group {ENTRY_POINT_GROUP})",
                    entry.load)
            done.append(entry.value)
    return done


def _import(key: str, described: str, load) -> None:
    try:
        load()
    except Exception as exc:  # any failure inside a plugin: one line that names it, never a traceback
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise PluginError(f"plugin {described} failed to import: {type(exc).__name__}: {detail}") from None
    _loaded.append(key)
    log.debug("loaded plugin %s", described)
