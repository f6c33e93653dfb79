"""Whole-store rules (`check --deep`): is every pickled row readable with the key that opens the
account, and if not, which rows are under which key and what that costs the bridge."""

from __future__ import annotations

from ..facts import ProbeError, StoreScan, TableScan
from ..findings import Finding, Fix
from ..knowledge import BridgeSpec
from ..proof import KeyProof
from .context import RuleContext

LABEL = {
    "olm_session": "Olm sessions",
    "megolm_inbound": "inbound Megolm sessions",
    "megolm_outbound": "outbound Megolm sessions",
    "secret": "stored secrets",
}
# What the bridge cannot do with a row of this kind it cannot unpickle (mautrix-go crypto store).
COST = {
    "megolm_outbound": "sending into the rooms of those outbound Megolm sessions fails until they "
    "are gone",
    "olm_session": "to-device messages (room keys) from the devices of those Olm sessions cannot "
    "be decrypted",
    "megolm_inbound": "messages of those inbound Megolm sessions stay unreadable",
    "secret": "those secrets (cross-signing, key backup) cannot be used",
}
# Rows the bridge uses for live traffic: unreadable ones break sending or receiving now.
LIVE = ("megolm_outbound", "olm_session")
NO_KEY = -1


def store_findings(
    spec: BridgeSpec, scan: StoreScan | ProbeError, proof: KeyProof, ctx: RuleContext
) -> list[Finding]:
    if isinstance(scan, ProbeError):
        return [
            Finding(
                "crypto_store_unverified",
                "unknown",
                f"The whole-store check of {spec.name} could not finish: {scan.message}",
            )
        ]
    proven = _index(scan, proof)
    if len(_keys_seen(scan, proven)) > 1:
        return [_mixed(spec, scan, proven, ctx)]
    if proven == NO_KEY:
        return []  # every row under the same unknown key as the account: the key findings say it
    if _damaged(scan):
        return [_damaged_rows(spec, scan, proven, ctx)]
    return [_verified(scan, proven, ctx)]


def _index(scan: StoreScan, proof: KeyProof) -> int:
    """Position of the key that opens the account among the scan's candidates (NO_KEY if none)."""
    if proof.opened_by is None:
        return NO_KEY
    for i, c in enumerate(scan.candidates):
        if c.key == proof.opened_by.key:
            return i
    return NO_KEY


def _keys_seen(scan: StoreScan, proven: int) -> set[int]:
    """Every key some row (the account included) is under; rows under no candidate count as one
    more, unknown key."""
    seen = {proven}
    for t in scan.tables:
        seen.update(t.opened)
        seen.update(t.bad_plaintext)
        if t.unknown:
            seen.add(NO_KEY)
    return seen


def _damaged(scan: StoreScan) -> bool:
    return any(t.corrupt or t.bad_plaintext for t in scan.tables)


def _readable(t: TableScan, proven: int) -> int:
    return t.opened.get(proven, 0) if proven != NO_KEY else 0


def _verified(scan: StoreScan, proven: int, ctx: RuleContext) -> Finding:
    # "1 stored secret", "2 stored secrets": every label is a plural ending in "s".
    parts = [
        f"{t.rows:,} {LABEL[t.kind][: -1 if t.rows == 1 else None]}" for t in scan.tables if t.rows
    ]
    key = ctx.show(scan.candidates[proven].key)
    return Finding(
        "crypto_store_verified",
        "info",
        f"Every pickled row of the crypto store opens with the proven key {key}: "
        + (", ".join(parts) if parts else "no sessions or secrets yet")
        + f" ({scan.rows:,} rows checked in {scan.seconds:.1f} s).",
    )


def _key_name(scan: StoreScan, i: int, proven: int, ctx: RuleContext) -> str:
    if i == NO_KEY:
        return "no known key"
    c = scan.candidates[i]
    return f"{ctx.show(c.key)} ({'proven, opens the account' if i == proven else c.origin})"


def _table_line(t: TableScan, proven: int, scan: StoreScan, ctx: RuleContext) -> str:
    parts = [
        f"{n:,} with {_key_name(scan, i, proven, ctx)}"
        for i, n in sorted(t.opened.items(), key=lambda kv: (kv[0] != proven, -kv[1]))
    ]
    if t.unknown:
        parts.append(f"{t.unknown:,} with no known key")
    for i, n in t.bad_plaintext.items():
        parts.append(
            f"{n:,} pass the MAC with {_key_name(scan, i, proven, ctx)} but are not valid "
            "sessions (written by a newer libolm?)"
        )
    if t.corrupt:
        parts.append(f"{t.corrupt:,} are not libolm pickles at all")
    return f"{t.table} ({LABEL[t.kind]}, {t.rows:,} rows): " + "; ".join(parts)


def _evidence(scan: StoreScan, proven: int, ctx: RuleContext) -> tuple[str, ...]:
    account = f"crypto_account (the account, 1 row): 1 with {_key_name(scan, proven, proven, ctx)}"
    return (account, *(_table_line(t, proven, scan, ctx) for t in scan.tables if t.rows))


def _hurt(scan: StoreScan, proven: int) -> list[TableScan]:
    return [t for t in scan.tables if t.rows > _readable(t, proven)]


def _severity(hurt: list[TableScan]) -> str:
    return "error" if any(t.kind in LIVE for t in hurt) else "warning"


def _damaged_rows(spec: BridgeSpec, scan: StoreScan, proven: int, ctx: RuleContext) -> Finding:
    hurt = _hurt(scan, proven)
    bad = sum(t.rows - _readable(t, proven) for t in hurt)
    return Finding(
        "crypto_store_damaged",
        _severity(hurt),  # type: ignore[arg-type]
        f"{bad:,} of {scan.rows:,} session and secret rows of the {spec.name} crypto store are "
        f"damaged: they are not libolm pickles, or pass the MAC with the proven key "
        f"{ctx.show(scan.candidates[proven].key)} but hold no valid session. The bridge cannot "
        "read them: " + "; ".join(COST[t.kind] for t in hurt) + ".",
        evidence=_evidence(scan, proven, ctx),
        fix=Fix(vars_yml="", steps=_reset_steps(spec)[1:]),
    )


def _reset_steps(spec: BridgeSpec) -> tuple[str, ...]:
    return (
        "No key setting can fix this: the account opens only with one key, the other rows only "
        "with theirs.",
        "Reset the crypto store so the bridge starts from one key: "
        f"`bridgedoctor reset {spec.name}`. It backs up and verifies first; portals, logins and "
        "messages stay, the bridge creates a new device.",
        "Keep that backup (and the other key, if one is named above) if the old messages matter: "
        f"`bridgedoctor restore {spec.name} <id>` puts the rows back exactly.",
    )


def _mixed(spec: BridgeSpec, scan: StoreScan, proven: int, ctx: RuleContext) -> Finding:
    hurt = _hurt(scan, proven)
    unreadable = sum(t.rows - _readable(t, proven) for t in hurt)
    costs = [COST[t.kind] for t in hurt]
    if proven != NO_KEY:
        what = (
            f"the account opens with {ctx.show(scan.candidates[proven].key)}, but {unreadable:,} "
            f"of {scan.rows:,} session and secret rows do not"
        )
    else:
        what = "no known key opens the account, and the other rows are under other keys"
    summary = (
        f"The {spec.name} crypto store holds rows under more than one key: {what} (typical after "
        "the crypto_account row was deleted by hand: a new account on top of the old store). The "
        "bridge cannot read them: " + "; ".join(costs) + "."
    )
    return Finding(
        "crypto_store_mixed_keys",
        _severity(hurt),  # type: ignore[arg-type]
        summary,
        evidence=_evidence(scan, proven, ctx),
        fix=Fix(vars_yml="", steps=_reset_steps(spec)),
    )
