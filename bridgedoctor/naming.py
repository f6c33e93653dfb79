"""Which MDAD variable naming the admin's checkout uses (the 2026-07-16 prefix rename)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .facts import UnitFacts
from .knowledge import BridgeSpec

Preference = Literal["current", "legacy", "auto"]
Naming = Literal["current", "legacy", "both"]


@dataclass(frozen=True)
class NamingDecision:
    naming: Naming
    reason: str


def _version(tag: str) -> tuple[int, ...] | None:
    # MDAD pins e.g. "v0.2608.0", and "ig-v0.2608.0" for mautrix-meta's Instagram image.
    m = re.fullmatch(r"(?:[a-z]+-)?v?(\d+(?:\.\d+)*)", tag.strip())
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


INVENTORY_ERA = {
    "current": "your inventory's vars.yml uses the matrix_bridge_mautrix_* names (MDAD from "
    "2026-07-16 on)",
    "legacy": "your inventory's vars.yml uses the matrix_mautrix_* names (MDAD before 2026-07-16)",
}


def decide(
    spec: BridgeSpec,
    unit: UnitFacts | None,
    preference: Preference,
    inventory_eras: frozenset[str] = frozenset(),
) -> NamingDecision:
    """`inventory_eras`: the namings the admin's own vars.yml uses for bridge variables; one
    alone is the best evidence of the checkout there is (the playbook refuses old names)."""
    if spec.prefix_legacy is None:
        return NamingDecision("current", f"MDAD's {spec.name} role only ever used the new prefix")
    if preference != "auto":
        return NamingDecision(preference, f"--naming {preference}")
    if len(inventory_eras) == 1:
        (era,) = inventory_eras
        return NamingDecision(era, INVENTORY_ERA[era])  # type: ignore[arg-type]
    if unit is not None and unit.digest and not unit.tag:
        return NamingDecision(
            "both",
            "the bridge's systemd unit pins its image by digest alone, which names no release",
        )
    if unit is None or not unit.tag:
        return NamingDecision("both", "no image tag found in the bridge's systemd unit")
    pinned, at_rename = _version(unit.tag), _version(spec.rename_tag or "")
    if pinned is None or at_rename is None:
        return NamingDecision("both", f"image tag {unit.tag} is not a release version")
    if pinned > at_rename:
        return NamingDecision(
            "current",
            f"image {unit.tag} is newer than {spec.rename_tag}, the tag MDAD pinned at the rename "
            "(unless you override the bridge version in vars.yml)",
        )
    if pinned < at_rename:
        return NamingDecision(
            "legacy",
            f"image {unit.tag} is older than {spec.rename_tag}, the tag MDAD pinned at the rename "
            "(unless you override the bridge version in vars.yml)",
        )
    return NamingDecision(
        "both", f"image {unit.tag} was pinned by MDAD both before and after the rename"
    )
