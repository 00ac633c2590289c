"""`edgegolf devices`: every profile, what it needs, and whether this machine has it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgegolf.devices.kinds import all_kinds, get_kind
from edgegolf.devices.profiles import DeviceProfile, all_profiles


def availability(profile: DeviceProfile) -> tuple[bool, str]:
    """(usable here, why not): checked for real, by the profile's kind asking the runtime it needs."""
    return profile.device_kind.availability()


def describe_profiles(custom: Mapping[str, DeviceProfile] | None = None) -> list[dict[str, Any]]:
    """Every profile (the kinds' built-ins, then `custom`), then each kind's example rows (ssh://...)."""
    known: dict[str, tuple[bool, str]] = {}  # availability is asked once per kind: it can be slow
    rows = []
    examples = [p for kind in all_kinds() for p in kind.listed_examples()]
    for profile in [*all_profiles(custom).values(), *examples]:
        if profile.kind not in known:
            known[profile.kind] = availability(profile)
        ok, why = known[profile.kind]
        rows.append({**profile.to_dict(), "needs": profile.needs, "available": ok, "why": why})
    return rows


def devices_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| profile | kind | threads | cores | usable here | needs |", "|---|---|---|---|---|---|"]
    for r in rows:
        usable = "yes" if r["available"] else "no"
        if r["why"]:
            usable += f" ({r['why']})"
        lines.append(f"| {r['name']} | {r['kind']} | {r['threads'] or get_kind(r['kind']).unset_threads} | "
                     f"{','.join(map(str, r['cores'])) if r['cores'] else '-'} | {usable} | {r['needs']} |")
    return "\n".join(lines)
