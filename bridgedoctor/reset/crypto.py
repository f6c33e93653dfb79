"""Crypto-only reset: the rows a lost pickle key makes unreadable (failures.md §3).

Kept: crypto_device, crypto_tracked_user, crypto_cross_signing_* (public data) and every bridge
table, so portals and logins survive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .dbio import Db, file_sum
from .errors import ResetError

# Parents first (load order); deleted in reverse so the olm_message_hash FK never blocks.
CLEARED = (
    "crypto_account",
    "crypto_olm_message_hash",
    "crypto_olm_session",
    "crypto_megolm_inbound_session",
    "crypto_megolm_outbound_session",
    "crypto_megolm_outbound_session_shared",
    "crypto_secrets",
    "crypto_message_index",
)
RECOVERY_WHERE = "key = 'recovery_key'"


def targets(tables: list[str]) -> list[tuple[str, str, str]]:
    """(table, where, backup file stem) for what is present in this database."""
    out = [(t, "", t) for t in CLEARED if t in tables]
    if "kv_store" in tables:
        out.append(("kv_store", RECOVERY_WHERE, "kv_store.recovery_key"))
    return out


async def backup(db: Db, dest: Path) -> dict[str, dict[str, Any]]:
    ext = "copy" if db.kind == "postgres" else "jsonl"
    recorded: dict[str, dict[str, Any]] = {}
    for table, where, stem in targets(await db.tables()):
        path = dest / f"{stem}.{ext}"
        await db.dump(table, path, where)
        recorded[stem] = {"table": table, "where": where, "file": path.name}
    return recorded


async def verify(db: Db, dest: Path, recorded: dict[str, dict[str, Any]]) -> None:
    """Read every written file back: its rows must match the table as it stands (stopped)."""
    for stem, rec in recorded.items():
        rows, sha = file_sum(dest / rec["file"])
        live = await db.count(rec["table"], rec["where"])
        if rows != live:
            raise ResetError(f"backup of {stem} has {rows} rows, the table {live}; aborted.")
        rec["rows"], rec["sha256"] = rows, sha


async def apply(db: Db, tables: list[str]) -> None:
    async with db.transaction():
        for table, where, _stem in reversed(targets(tables)):
            await db.delete(table, where)


async def restore(db: Db, src: Path, recorded: dict[str, dict[str, Any]]) -> None:
    """Put the backed-up rows back exactly, replacing whatever the bridge created since."""
    for rec in recorded.values():
        rows, sha = file_sum(src / rec["file"])
        if (rows, sha) != (rec["rows"], rec["sha256"]):
            raise ResetError(f"backup file {rec['file']} is damaged; nothing restored.")
    schema = await db.schema()
    order = list(recorded.values())
    async with db.transaction():
        for rec in reversed(order):
            await db.delete(rec["table"], rec["where"])
        for rec in order:
            await db.load(rec["table"], src / rec["file"], schema)
