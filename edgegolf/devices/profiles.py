"""Device profiles: which threads (and optionally which cores) a measurement runs on.

A profile is data a user can write (TOML), validated when it is built so that a bad field
fails before any model is loaded. Its kind (edgegolf/devices/kinds.py, one registered
object each) says how it is measured: `cpu` (this host, in-process), `cuda` and `tensorrt`
(onnxruntime-gpu's execution providers), `torch-cuda` (the PyTorch model on a GPU), `ssh` (a
remote device reached with `ssh://user@host[:port]`), and whatever plugins register.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tomllib
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgegolf.devices import kinds
from edgegolf.errors import RecipeError
from edgegolf.settings import check_instance, setting

log = logging.getLogger(__name__)
_CORES = "accepted: a non-empty list of distinct CPU ids (integers >= 0)"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    # a registered device kind (edgegolf.devices.kinds)
    kind: str = setting("cpu", kind="str", choices=kinds.kind_names)
    # onnxruntime intra_op_num_threads / torch threads; None: all cores
    threads: int | None = setting(None, kind="int", optional=True, minimum=1,
                                  accepts="accepted: a positive integer, or omitted for all cores")
    # pin the measuring process to these CPU ids (Linux only)
    cores: tuple[int, ...] | None = setting(None, kind="ints", optional=True, accepts=_CORES)
    description: str = setting("", kind="str", accepts="accepted: a string")
    url: str | None = setting(None, kind="str", optional=True)  # kind "ssh": ssh://user@host[:port]
    # kind "ssh": the device's interpreter (must have onnxruntime and numpy)
    python: str = setting("python3", kind="str", accepts="accepted: the device's python command")

    def __post_init__(self) -> None:
        where = f"device profile {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise RecipeError(f"device profile field 'name' is {self.name!r}; accepted: a non-empty string")
        check_instance(self, "device", where=lambda name: f"{where}: field {name!r}")
        cores = self.cores
        if cores is not None and (not cores or any(c < 0 for c in cores) or len(set(cores)) != len(cores)):
            raise RecipeError(f"{where}: field 'cores' is {cores!r}; {_CORES}")
        if not self.python.strip():
            raise RecipeError(f"{where}: field 'python' is {self.python!r}; accepted: the device's python command")
        kind = kinds.get_kind(self.kind)
        if self.url is not None and not kind.takes_url:
            raise RecipeError(f"{where}: field 'url' is set for kind {self.kind!r}; accepted: only with kind "
                              f"{_kinds_with('takes_url')}")
        if self.cores is not None and not kind.takes_cores:
            raise RecipeError(f"{where}: field 'cores' is set for kind {self.kind!r}; accepted: only with kind "
                              f"{_kinds_with('takes_cores')}")
        kind.validate(self, where)

    @property
    def device_kind(self) -> kinds.DeviceKind:
        """What measures this profile (edgegolf.devices.kinds)."""
        return kinds.get_kind(self.kind)

    @property
    def needs(self) -> str:
        return self.device_kind.needs

    @property
    def resolved_threads(self) -> int:
        """The thread count to ask for: the profile's, or every core this machine has."""
        return self.threads or os.cpu_count() or 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "threads": self.threads,
            "cores": list(self.cores) if self.cores is not None else None,
            "description": self.description,
            "url": self.url,
            "python": self.python,
        }


def _kinds_with(flag: str) -> str:
    return " or ".join(repr(k.name) for k in kinds.all_kinds() if getattr(k, flag))


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


def parse_ssh_url(url: object, *, where: str = "device") -> SshTarget:
    """ssh://[user@]host[:port] -> its parts; anything else is refused with the accepted form."""
    accepted = "accepted: ssh://user@host or ssh://user@host:port"
    if not isinstance(url, str) or not url.startswith("ssh://"):
        raise RecipeError(f"{where}: url is {url!r}; {accepted}")
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 22
    except ValueError:
        raise RecipeError(f"{where}: url {url!r} has a bad port; {accepted} (port 1-65535)") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise RecipeError(f"{where}: url is {url!r}; {accepted} (no path, password or query)")
    return SshTarget(user=urllib.parse.unquote(parts.username) if parts.username else None, host=parts.hostname,
                     port=port)


# The built-in kinds' profiles as they are at import (plugins' kinds add theirs to all_profiles).
BUILTIN: dict[str, DeviceProfile] = {p.name: p for p in kinds.get_kind("cpu").builtin_profiles()}
# Accelerator targets: built in, but usable only where their runtime is installed (devices/kinds.py).
ACCELERATORS: dict[str, DeviceProfile] = {name: p for name, p in kinds.builtin_profiles().items()
                                          if name not in BUILTIN}


def get_profile(name: str, custom: Mapping[str, DeviceProfile] | None = None) -> DeviceProfile:
    """A registered kind's built-in profile, one of `custom` (e.g. from `load_profiles_toml`), or
    a profile a kind makes from the name itself (an ssh:// url)."""
    made = kinds.profile_from_name(name)
    if made is not None:
        return made
    known = all_profiles(custom)
    try:
        return known[name]
    except (KeyError, TypeError):
        raise RecipeError(f"device profile {name!r} is unknown; known profiles: {', '.join(known)}, "
                          "or ssh://user@host[:port]") from None


def all_profiles(custom: Mapping[str, DeviceProfile] | None = None) -> dict[str, DeviceProfile]:
    return {**kinds.builtin_profiles(), **(custom or {})}


_FIELDS = tuple(f.name for f in fields(DeviceProfile) if f.name != "name")


def load_profiles_toml(path: str | Path) -> dict[str, DeviceProfile]:
    """User profiles from a TOML file, one table per profile:

        [profiles.pi-like]
        threads = 1
        cores = [0]
        description = "one pinned core"
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise RecipeError(f"device profile file {str(path)!r} does not exist; accepted: a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"device profile file {str(path)!r} is not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"profiles"})
    if extra or not isinstance(data.get("profiles"), dict):
        raise RecipeError(
            f"device profile file {str(path)!r} has top-level keys {sorted(data)}; accepted: only [profiles.<name>] tables"
        )
    profiles: dict[str, DeviceProfile] = {}
    builtin = kinds.builtin_profiles()
    for name, table in data["profiles"].items():
        if name in builtin:
            raise RecipeError(
                f"device profile {name!r} in {str(path)!r} shadows a built-in profile; accepted: a name other than "
                f"{', '.join(builtin)}"
            )
        if not isinstance(table, dict):
            raise RecipeError(f"device profile {name!r} in {str(path)!r} is {table!r}; accepted: a table of {list(_FIELDS)}")
        unknown = sorted(set(table) - set(_FIELDS))
        if unknown:
            raise RecipeError(
                f"device profile {name!r} in {str(path)!r} has unknown field {unknown[0]!r}; accepted: {list(_FIELDS)}"
            )
        values = dict(table)
        if isinstance(values.get("cores"), list):
            values["cores"] = tuple(values["cores"])  # TOML arrays arrive as lists; the profile is frozen
        try:
            profiles[name] = DeviceProfile(name=name, **values)
        except RecipeError as exc:
            raise RecipeError(f"{str(path)!r}: {exc}") from None
    return profiles


@contextlib.contextmanager
def pinned(profile: DeviceProfile) -> Iterator[None]:
    """Pin the calling thread to the profile's cores for the block, then restore.

    Threads started inside the block (onnxruntime's pool is created with the session)
    inherit the mask, which is why sessions must be created inside it.
    """
    if profile.cores is None:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise RecipeError(f"device profile {profile.name!r} pins cores {list(profile.cores)}; "
                          "accepted on Linux only (this platform cannot set CPU affinity)")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, profile.cores)
    except (OSError, ValueError):
        raise RecipeError(
            f"device profile {profile.name!r}: field 'cores' is {list(profile.cores)}; accepted: CPU ids this "
            f"process may use, {sorted(before)}"
        ) from None
    log.debug("pinned to cores %s for profile %s", list(profile.cores), profile.name)
    if profile.threads is not None and profile.threads > len(profile.cores):
        log.warning("device profile %s runs %d threads on %d pinned cores: threads will contend",
                    profile.name, profile.threads, len(profile.cores))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
