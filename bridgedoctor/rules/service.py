"""Service rules: the bridge's systemd unit."""

from __future__ import annotations

from ..findings import Finding
from ..knowledge import BridgeSpec


def unit_missing(spec: BridgeSpec) -> Finding:
    return Finding(
        "unit_missing",
        "info",
        f"No systemd unit {spec.service}.service found; the bridge may be disabled.",
    )
