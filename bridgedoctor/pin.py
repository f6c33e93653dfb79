"""The `check all` pin block: one vars.yml snippet pinning exactly the bridges that need it
(rules/keys.py and rules/prevention.py decide which: a store that opens only with a key MDAD's
defaults do not render and that vars.yml does not pin, or pins wrongly)."""

from __future__ import annotations

from .findings import BridgeReport, Fix

PROVEN = frozenset({"pickle_key_ok", "pickle_key_mismatch"})  # a key opened the account


def fleet_pin(reports: list[BridgeReport]) -> Fix | None:
    blocks = [r.pin for r in reports if r.pin]
    if not blocks:
        return None
    unproven = [
        r.bridge
        for r in reports
        if r.status != "unknown" and not any(f.code in PROVEN for f in r.findings)
    ]
    steps = [
        "Add the block to inventory/host_vars/<your matrix domain>/vars.yml: each of these "
        "stores opens only with the key shown, and without the pin the next playbook run or "
        "upgrade renders another one (MDAD's default, or a wrong pin) and locks the bridge out.",
        "Apply it: just setup-all  (or one bridge at a time: just install-service mautrix-<name>)",
    ]
    if unproven:
        steps.append(
            "No key was proven for " + ", ".join(unproven) + " (no crypto account yet, or the key "
            "is lost): see `bridgedoctor check <name>`."
        )
    return Fix(vars_yml="\n\n".join(blocks), steps=tuple(steps))
