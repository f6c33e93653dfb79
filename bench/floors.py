"""The floors: the least work that gives each answer, measured beside the real thing.

- check: parse each bridge's config.yaml (the same YAML library), one connection, one SELECT of
  the account, one HKDF + HMAC with the key that opens it. No discovery, no unit file, no rules,
  no decryption.
- deep: fetch the same pickled rows through a server-side cursor, the same batch size, and drop
  them.
- reset / restore: a plain `COPY table TO file` (fsynced) / `COPY table FROM file` of the same
  rows of the same tables, nothing else.

Kept to the standard library, ruamel.yaml and asyncpg, so `floor_check.py` can run it as a whole
process that loads no more than the floor needs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ruamel.yaml import YAML

PICKLED = (
    ("crypto_olm_session", "session"),
    ("crypto_megolm_inbound_session", "session"),
    ("crypto_megolm_outbound_session", "session"),
    ("crypto_secrets", "secret"),
)


@dataclass(frozen=True)
class FloorBridge:
    config: Path
    data_dir: Path
    key: str  # the key that opens the stored account


def _uri(tree: dict) -> str:
    db = tree.get("appservice", {}).get("database")
    if isinstance(db, str):
        return db
    if isinstance(db, dict):
        return db["uri"]
    return tree["database"]["uri"]


def hmac_once(stored: bytes, key: str) -> bool:
    """HKDF-SHA256 (empty salt, info "Pickle") then the 8-byte HMAC over the ciphertext."""
    prk = hmac.new(b"\0" * 32, key.encode(), hashlib.sha256).digest()
    okm, t = b"", b""
    for i in range(1, 4):
        t = hmac.new(prk, t + b"Pickle" + bytes([i]), hashlib.sha256).digest()
        okm += t
    raw = base64.b64decode(stored + b"=" * (-len(stored) % 4))
    tag = hmac.new(okm[32:64], raw[:-8], hashlib.sha256).digest()[:8]
    return hmac.compare_digest(tag, raw[-8:])


async def pg_bridge(b: FloorBridge, host: str, port: int) -> bool:
    import asyncpg

    # Parsed on the loop thread: the next bridge's config is parsed while this one connects.
    tree = YAML(typ="safe").load(b.config.read_text())
    u = urlsplit(_uri(tree))
    conn = await asyncpg.connect(
        user=unquote(u.username or ""),
        password=unquote(u.password or ""),
        host=host,
        port=port,
        database=u.path.lstrip("/"),
        ssl=False,
    )
    try:
        stored = await conn.fetchval("SELECT account FROM crypto_account")
    finally:
        await conn.close()
    return hmac_once(bytes(stored), b.key)


async def pg_fleet(bridges: list[FloorBridge], host: str, port: int) -> list[bool]:
    import asyncio  # here: the SQLite floor needs no event loop

    return list(await asyncio.gather(*(pg_bridge(b, host, port) for b in bridges)))


def sqlite_bridge(b: FloorBridge) -> bool:
    tree = YAML(typ="safe").load(b.config.read_text())
    raw = _uri(tree).split("?", 1)[0].removeprefix("sqlite:").removeprefix("file:")
    path = b.data_dir / Path("/" + raw.lstrip("/")).relative_to("/data")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        stored = conn.execute("SELECT account FROM crypto_account").fetchone()[0]
    finally:
        conn.close()
    return hmac_once(bytes(stored), b.key)


def sqlite_fleet(bridges: list[FloorBridge]) -> list[bool]:
    """In order, in this thread: for SQLite that is less work than any hand-off to threads."""
    return [sqlite_bridge(b) for b in bridges]


async def fetch_rows(conn: Any, batch: int) -> int:
    """Every pickled row, through a server-side cursor `batch` rows at a time, dropped."""
    n = 0
    present = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
    for table, col in PICKLED:
        if table not in present:
            continue
        async with conn.transaction():
            cur = await conn.cursor(f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL")
            while rows := await cur.fetch(batch):
                n += len(rows)
    return n


async def copy_to(conn: Any, targets: list[tuple[str, str, str]], dest: Path) -> None:
    """COPY each (table, where, stem) to dest/stem, fsynced: what any backup must do at least."""
    for table, where, stem in targets:
        sql = f'SELECT * FROM "{table}"' + (f" WHERE {where}" if where else "")
        with (dest / stem).open("wb") as f:

            async def sink(chunk: bytes, write: Any = f.write) -> None:
                write(chunk)

            await conn.copy_from_query(sql, output=sink)
            f.flush()
            os.fsync(f.fileno())


async def copy_from(conn: Any, targets: list[tuple[str, str, str]], src: Path) -> None:
    """COPY each file back into its (emptied) table, in one transaction."""
    async with conn.transaction():
        for table, _, stem in targets:
            await conn.copy_to_table(table, source=src / stem)
