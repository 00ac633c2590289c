"""`edgegolf devices`: every profile, what it needs, and whether this machine has it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgegolf.devices.profiles import DeviceProfile, all_profiles
from edgegolf.errors import EdgegolfError


def availability(profile: DeviceProfile) -> tuple[bool, str]:
    """(usable here, why not): checked for real, by asking the runtime each kind needs."""
    if profile.kind == "cpu":
        return True, ""
    try:
        if profile.kind in ("cuda", "tensorrt"):
            from edgegolf.devices.cuda import ort_providers

            ort_providers(profile)
        elif profile.kind == "torch-cuda":
            from edgegolf.devices.cuda import check_torch_cuda

            check_torch_cuda()
        elif profile.kind == "ssh":
            from edgegolf.extras import EXTRAS, has_extra

            if not has_extra("asyncssh"):
                return False, f"the remote extra: {EXTRAS['remote'][1]}"
            return True, "reachability is checked when it is used"
    except EdgegolfError as exc:
        return False, str(exc)
    return True, ""


def describe_profiles(custom: Mapping[str, DeviceProfile] | None = None) -> list[dict[str, Any]]:
    rows = []
    for profile in all_profiles(custom).values():
        ok, why = availability(profile)
        rows.append({**profile.to_dict(), "needs": profile.needs, "available": ok, "why": why})
    remote = DeviceProfile("ssh://user@host[:port]", kind="ssh", url="ssh://user@host",
                           description="any device you can reach over SSH with a key")
    ok, why = availability(remote)
    rows.append({**remote.to_dict(), "needs": remote.needs, "available": ok, "why": why})
    return rows


def devices_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| profile | kind | threads | cores | usable here | needs |", "|---|---|---|---|---|---|"]
    for r in rows:
        usable = "yes" if r["available"] else "no"
        if r["why"]:
            usable += f" ({r['why']})"
        lines.append(f"| {r['name']} | {r['kind']} | {r['threads'] or ('all' if r['kind'] == 'cpu' else '-')} | "
                     f"{','.join(map(str, r['cores'])) if r['cores'] else '-'} | {usable} | {r['needs']} |")
    return "\n".join(lines)
