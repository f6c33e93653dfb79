"""The `check all` pin block: one vars.yml snippet fixing every bridge's proven key in place."""

from __future__ import annotations

from .findings import BridgeReport, Fix


def fleet_pin(reports: list[BridgeReport]) -> Fix | None:
    blocks = [r.pin for r in reports if r.pin]
    if not blocks:
        return None
    unproven = [r.bridge for r in reports if not r.pin and r.status != "unknown"]
    steps = [
        "Add the block to inventory/host_vars/<your matrix domain>/vars.yml: every key is written "
        "explicitly, so a future change of MDAD's defaults cannot lock a bridge out of its store.",
        "Apply it: just setup-all  (or one bridge at a time: just install-service mautrix-<name>)",
    ]
    if unproven:
        steps.append(
            "No key was proven for " + ", ".join(unproven) + " (no crypto account yet, or the key "
            "is lost): see `bridgedoctor check <name>`."
        )
    return Fix(vars_yml="\n\n".join(blocks), steps=tuple(steps))
