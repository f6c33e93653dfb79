"""Crypto-only reset: the rows a lost pickle key makes unreadable (failures.md §3).

Kept: crypto_device, crypto_tracked_user, crypto_cross_signing_* (public data) and every bridge
table, so portals and logins survive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .dbio import Db, file_sum
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
    """(table, where, backup file stem) for what is present in this database."""
    out = [(t, "", t) for t in CLEARED if t in tables]
    if "kv_store" in tables:
        out.append(("kv_store", RECOVERY_WHERE, "kv_store.recovery_key"))
    return out


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
