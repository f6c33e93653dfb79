"""How a test judges a bridge after a reset, restore, crash or reboot, by its own means (not the
code under test): a digest of every table, the stand-in bridge's rows left out, and for every
row the stand-in ever wrote, whether it is still in the database or in a backup."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from pathlib import Path

import asyncpg

from bridgedoctor.probes.database import PgTarget, SqliteTarget

from .standin_bridge import TAG

STANDIN_TABLE = "crypto_olm_session"
STANDIN_RE = re.compile(re.escape(TAG).encode() + rb"\d+-\d+")
Digests = dict[str, tuple[int, str]]


def digests(target: PgTarget | SqliteTarget) -> Digests:
    """(rows, sha256) of every table, the stand-in's rows left out; {} without a database."""
    if isinstance(target, SqliteTarget):
        return _sqlite_digests(target.path) if target.path.is_file() else {}
    return asyncio.run(_pg_digests(target))


def where_digest(target: PgTarget | SqliteTarget, table: str, where: str) -> tuple[int, str]:
    """(rows, sha256) of the rows of `table` matching `where`, the stand-in's left out."""
    cond = f"({where})"
    if table == STANDIN_TABLE:
        cond += f" AND session_id NOT LIKE '{TAG}%'"
    if isinstance(target, SqliteTarget):
        if not target.path.is_file():
            return (0, "")
        conn = sqlite3.connect(f"file:{target.path}?mode=ro", uri=True)
        try:
            if not _sqlite_has(conn, table):
                return (0, "")
            rows = sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{table}" WHERE {cond}'))
        finally:
            conn.close()
        return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()

    async def go() -> tuple[int, str]:
        conn = await _pg(target)
        try:
            if await conn.fetchval("SELECT to_regclass($1)", f'"{table}"') is None:
                return (0, "")
            h = hashlib.sha256()

            async def sink(chunk: bytes) -> None:
                h.update(chunk)

            sql = f'SELECT t::text FROM "{table}" t WHERE {cond} ORDER BY 1'
            await conn.copy_from_query(sql, output=sink)
            n = await conn.fetchval(f'SELECT count(*) FROM "{table}" WHERE {cond}')
            return int(n), h.hexdigest()
        finally:
            await conn.close()

    return asyncio.run(go())


def standin_present(target: PgTarget | SqliteTarget) -> set[str]:
    sql = f"SELECT session_id FROM {STANDIN_TABLE} WHERE session_id LIKE '{TAG}%'"
    if isinstance(target, SqliteTarget):
        if not target.path.is_file():
            return set()
        conn = sqlite3.connect(f"file:{target.path}?mode=ro", uri=True)
        try:
            if not _sqlite_has(conn, STANDIN_TABLE):
                return set()
            return {r[0].strip() for r in conn.execute(sql)}
        finally:
            conn.close()

    async def go() -> set[str]:
        conn = await _pg(target)
        try:
            if await conn.fetchval("SELECT to_regclass($1)", STANDIN_TABLE) is None:
                return set()
            return {r[0].strip() for r in await conn.fetch(sql)}
        finally:
            await conn.close()

    return asyncio.run(go())


def standin_in_backups(bridge_dir: Path) -> set[str]:
    """Stand-in rows found in any file of any backup (COPY text, JSON lines, SQLite pages in a
    tar: the session id is stored as plain text in each)."""
    found: set[str] = set()
    for f in bridge_dir.rglob("*"):
        if f.is_file() and f.name not in ("manifest.json", ".reserve", ".lock"):
            with f.open("rb") as fh:
                tail = b""
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    data = tail + chunk
                    found |= {m.decode() for m in STANDIN_RE.findall(data)}
                    tail = data[-64:]
    return found


async def _pg(t: PgTarget) -> asyncpg.Connection:
    return await asyncpg.connect(
        user=t.user, password=t.password, host=t.host, port=t.port, database=t.database
    )


async def _pg_digests(t: PgTarget) -> Digests:
    conn = await _pg(t)
    try:
        names = [
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        out: Digests = {}
        for name in sorted(names):
            where = f" WHERE session_id NOT LIKE '{TAG}%'" if name == STANDIN_TABLE else ""
            h, rows = hashlib.sha256(), 0

            async def sink(chunk: bytes, h: hashlib._Hash = h) -> None:
                h.update(chunk)

            sql = f'SELECT t::text FROM "{name}" t{where} ORDER BY 1'
            await conn.copy_from_query(sql, output=sink)
            rows = await conn.fetchval(f'SELECT count(*) FROM "{name}"{where}')
            out[name] = (int(rows), h.hexdigest())
        return out
    finally:
        await conn.close()


def _sqlite_has(conn: sqlite3.Connection, table: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, (table,)).fetchone() is not None


def _sqlite_digests(path: Path) -> Digests:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        out: Digests = {}
        for name in sorted(names):
            where = f" WHERE session_id NOT LIKE '{TAG}%'" if name == STANDIN_TABLE else ""
            rows = sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{name}"{where}'))
            out[name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
        return out
    finally:
        conn.close()
