"""Crypto-only reset: the rows a lost pickle key makes unreadable (failures.md §3).

Kept: crypto_device, crypto_tracked_user, crypto_cross_signing_* (public data), every bridge
table (portals and logins survive) and kv_store's `recovery_key`. That row is plain text, not
pickled, so a lost pickle key does not touch it; mautrix-go's `doSelfSign`
(bridgev2/matrix/crypto.go) needs it when `self_sign` is on (MDAD: MAS with bridge encryption):
the new device is unverified while the server keeps the bot's cross-signing keys, and the bridge
verifies it from secret storage with that key, or exits 34 when the row is gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .dbio import Db, PgDb, file_sum
from .errors import ResetError
from .progress import Progress, counter

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
    """(table, where, backup file stem) for what is present in this database. Restores also
    accept backups that recorded `kv_store.recovery_key` (made before the key was kept)."""
    return [(t, "", t) for t in CLEARED if t in tables]


async def has_recovery_key(db: object, tables: list[str]) -> bool | None:
    """Whether kv_store holds a recovery key; None when the plan cannot ask (a SQLite store is
    planned from the killable reader's facts, which do not include it)."""
    if "kv_store" not in tables:
        return False
    sql = f"SELECT 1 FROM kv_store WHERE {RECOVERY_WHERE} LIMIT 1"
    if isinstance(db, PgDb):
        return await db.conn.fetchval(sql) is not None
    return None


def cross_signing_note(recovery_key: bool | None) -> str:
    """What the reset means for cross-signing, for the plan (mautrix-go doSelfSign)."""
    keeps = (
        "so a bridge with self_sign on verifies its new device with the bot's existing "
        "cross-signing keys; the bot's identity does not change"
    )
    if recovery_key:
        return f"cross-signing: the stored recovery key is kept, {keeps}"
    exit34 = (
        "stops with exit 34 if the server already has the bot's cross-signing keys (then set "
        "kv_store recovery_key to 'overwrite' for new keys)"
    )
    if recovery_key is None:
        return f"cross-signing: a stored recovery key is kept, {keeps}; without one the bridge {exit34}"
    return (
        "cross-signing: no recovery key is stored; with self_sign on the bridge makes new "
        f"cross-signing keys if the server has none, and {exit34}"
    )


async def backup(
    db: Db, dest: Path, progress: Progress | None = None
) -> dict[str, dict[str, Any]]:
    """Dump each table; the row count is the one the dump itself reports (never a recount)."""
    ext = "copy" if db.kind == "postgres" else "jsonl"
    recorded: dict[str, dict[str, Any]] = {}
    for table, where, stem in targets(await db.tables()):
        path = dest / f"{stem}.{ext}"
        about = None if where or progress is None or progress.silent else await db.estimate(table)
        rows = await db.dump(table, path, where, counter(progress, table, about, approx=True))
        recorded[stem] = {"table": table, "where": where, "file": path.name, "rows": rows}
    return recorded


async def verify(db: Db, dest: Path, recorded: dict[str, dict[str, Any]]) -> None:
    """Read every written file back from disk: it must hold every row the dump sent."""
    for stem, rec in recorded.items():
        rows, sha = file_sum(dest / rec["file"])
        if rows != rec["rows"]:
            raise ResetError(
                f"backup of {stem} has {rows} rows on disk, the dump sent {rec['rows']}; aborted."
            )
        rec["sha256"] = sha


async def apply(db: Db, tables: list[str]) -> None:
    async with db.transaction():
        await db.clear([(t, w) for t, w, _stem in reversed(targets(tables))])


async def restore(
    db: Db, src: Path, recorded: dict[str, dict[str, Any]], progress: Progress | None = None
) -> None:
    """Put the backed-up rows back exactly, replacing whatever the bridge created since. Each
    file's rows and sha256 are checked as it loads; a damaged one rolls everything back."""
    schema = await db.schema()
    order = list(recorded.values())
    async with db.transaction():
        await db.clear([(rec["table"], rec["where"]) for rec in reversed(order)])
        for rec in order:
            on_chunk = counter(progress, rec["table"], rec["rows"])
            await db.load(
                rec["table"], src / rec["file"], rec["rows"], rec["sha256"], schema, on_chunk
            )
