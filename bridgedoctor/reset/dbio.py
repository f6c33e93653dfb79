"""Write access to a bridge database, PostgreSQL or SQLite, behind one small interface.

Table data is backed up per table in a format that restores byte-exactly:
- PostgreSQL: COPY text format (`COPY ... TO STDOUT`), loaded back with `COPY ... FROM STDIN`;
  the server itself encodes every type, so nothing is lost in a Python round trip.
- SQLite: JSON lines, one row a line, bytes as {"b64": ...} (SQLite has only five storage
  classes, all of which JSON plus that tag represents exactly).
A table's digest is sha256 over its rows ordered by every column, so two databases with the same
rows compare equal whatever their physical order.

The fence: before a destructive transaction (the crypto delete, DROP OWNED, the restore's load)
a one-row table FENCE is committed holding a token, and the destructive transaction drops it (for
SQLite full resets the file that holds it is removed). After a crash the fence answers exactly
whether that transaction committed, even if the bridge ran and wrote in between: the manifest
alone cannot, since it is written after the commit. FENCE never appears in `tables()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from ..facts import ProbeError
from ..probes import sqlite_read
from ..probes.database import PgTarget, SqliteTarget
from .errors import ResetError

# SQLite: how long to wait for a lock another connection holds (the bridge is stopped, so only
# a straggler could hold one). PostgreSQL writes have no client-side timeout at all: a bulk COPY
# of a store of millions of rows takes as long as it takes, and cutting it off half-way only
# leaves a bridge stopped for longer. Plans are read-only and keep the probes' short timeout.
SQLITE_BUSY_SECONDS = 120.0
CHUNK = 1 << 20
OnChunk = Callable[[bytes], None] | None
FENCE = "bridgedoctor_fence"


@dataclass(frozen=True)
class TableSum:
    rows: int
    sha256: str


def qi(name: str) -> str:
    """Quote an identifier; table names come from the catalog, never from the user."""
    return '"' + name.replace('"', '""') + '"'


def file_sum(path: Path) -> tuple[int, str]:
    """Lines and sha256 of a written file, read back from disk (the verification step)."""
    h = hashlib.sha256()
    lines = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            lines += chunk.count(b"\n")
    return lines, h.hexdigest()


class Summer:
    """Lines and sha256 of a stream, taken as it passes (one pass, no second read)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.lines = 0

    def add(self, chunk: bytes) -> bytes:
        self.h.update(chunk)
        self.lines += chunk.count(b"\n")
        return chunk

    def check(self, path: Path, rows: int, sha256: str) -> None:
        if (self.lines, self.h.hexdigest()) != (rows, sha256):
            raise damaged(path)


def damaged(path: Path) -> ResetError:
    return ResetError(f"backup file {path.name} is damaged; nothing restored.")


def refuse_if_damaged(path: Path, rows: int, sha256: str) -> None:
    """After a load failed part-way: a file changed since its backup is named as damaged, not
    by the first line the database or the parser could not read."""
    if file_sum(path) != (rows, sha256):
        raise damaged(path)


class PgDb:
    kind = "postgres"

    def __init__(self, conn: asyncpg.Connection, target: PgTarget) -> None:
        self.conn = conn
        self.target = target

    @classmethod
    async def open(cls, t: PgTarget, read_only: bool = False) -> PgDb:
        if read_only:
            conn = await t.connect(read_only=True, application_name="bridgedoctor-plan")
        else:
            conn = await t.connect(
                read_only=False, application_name="bridgedoctor-reset", command_timeout=None
            )
        return cls(conn, t)

    async def close(self) -> None:
        await self.conn.close()

    async def schema(self) -> str:
        return str(await self.conn.fetchval("SELECT current_schema()"))

    async def tables(self) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename <> $1 ORDER BY 1",
            FENCE,
        )
        return [r[0] for r in rows]

    async def estimate(self, table: str) -> int | None:
        """The planner's row estimate (free, no scan): a total for progress, never a check."""
        n = await self.conn.fetchval(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)", qi(table)
        )
        return int(n) if n is not None and n >= 0 else None

    async def set_fence(self, token: str) -> None:
        async with self.conn.transaction():
            await self.conn.execute(f"CREATE TABLE IF NOT EXISTS {qi(FENCE)} (token TEXT)")
            await self.conn.execute(f"DELETE FROM {qi(FENCE)}")
            await self.conn.execute(f"INSERT INTO {qi(FENCE)} VALUES ($1)", token)

    async def has_fence(self, token: str) -> bool:
        if await self.conn.fetchval("SELECT to_regclass($1)", qi(FENCE)) is None:
            return False
        sql = f"SELECT count(*) FROM {qi(FENCE)} WHERE token = $1"
        return bool(await self.conn.fetchval(sql, token))

    async def drop_fence(self) -> None:
        await self.conn.execute(f"DROP TABLE IF EXISTS {qi(FENCE)}")

    async def size(self, tables: list[str] | None) -> int:
        if tables is None:
            return int(await self.conn.fetchval("SELECT pg_database_size(current_database())"))
        total = 0
        for t in tables:
            total += int(await self.conn.fetchval("SELECT pg_total_relation_size($1)", qi(t)))
        return total

    async def digest(self, table: str) -> TableSum:
        ncols = await self.conn.fetchval(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
        order = ", ".join(str(i) for i in range(1, int(ncols) + 1))
        h = hashlib.sha256()
        lines = 0

        async def sink(chunk: bytes) -> None:
            nonlocal lines
            h.update(chunk)
            lines += chunk.count(b"\n")

        await self.conn.copy_from_query(f"SELECT * FROM {qi(table)} ORDER BY {order}", output=sink)
        return TableSum(lines, h.hexdigest())

    async def dump(self, table: str, path: Path, where: str = "", on_chunk: OnChunk = None) -> int:
        """Write the rows to path (fsynced); returns how many the server sent (COPY's count).
        `on_chunk` sees each piece as it is written (progress)."""
        sql = f"SELECT * FROM {qi(table)}" + (f" WHERE {where}" if where else "")
        with path.open("wb") as f:
            write = f.write

            # A plain write per chunk: page-cache writes are quick, a thread hand-off is not.
            async def sink(chunk: bytes) -> None:
                write(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)

            status = await self.conn.copy_from_query(sql, output=sink)
            f.flush()
            _fsync(f)
        return int(status.split()[-1])

    async def dump_sum(self, table: str, where: str = "") -> tuple[int, str]:
        """Lines and sha256 that `dump` would write now, without writing (recovery asks whether
        the rows are still exactly the backed-up ones: same rows, same physical order)."""
        summer = Summer()

        async def sink(chunk: bytes) -> None:
            summer.add(chunk)

        sql = f"SELECT * FROM {qi(table)}" + (f" WHERE {where}" if where else "")
        await self.conn.copy_from_query(sql, output=sink)
        return summer.lines, summer.h.hexdigest()

    async def delete(self, table: str, where: str = "") -> None:
        await self.conn.execute(f"DELETE FROM {qi(table)}" + (f" WHERE {where}" if where else ""))

    async def clear(self, targets: list[tuple[str, str]]) -> None:
        """Remove these (table, where) rows, in order, inside the caller's transaction. Whole
        tables go in one TRUNCATE: no per-row work and no dead rows for the next scan to wade
        through (a DELETE of a million sessions takes seconds). If the server refuses it (a foreign
        key from a table outside the set, or no TRUNCATE right), the same rows are DELETEd."""
        whole = [t for t, where in targets if not where]
        try:
            if whole:
                async with self.conn.transaction():  # a savepoint: a refusal keeps the outer one
                    await self.conn.execute("TRUNCATE " + ", ".join(qi(t) for t in whole))
        except (asyncpg.FeatureNotSupportedError, asyncpg.InsufficientPrivilegeError):
            whole = []
        for table, where in targets:
            if where or table not in whole:
                await self.delete(table, where)

    async def load(
        self,
        table: str,
        path: Path,
        rows: int,
        sha256: str,
        schema: str | None = None,
        on_chunk: OnChunk = None,
    ) -> None:
        """COPY the file in, checking its lines and sha256 as it streams (one read, not two);
        a damaged file raises inside the caller's transaction, so nothing is kept."""
        summer = Summer()

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    if on_chunk is not None:
                        on_chunk(chunk)
                    yield summer.add(chunk)

        if path.stat().st_size:
            try:
                await self.conn.copy_to_table(table, source=chunks(), schema_name=schema)
            except asyncpg.PostgresError:
                refuse_if_damaged(path, rows, sha256)
                raise
        summer.check(path, rows, sha256)

    def transaction(self) -> Any:
        return self.conn.transaction()


class SqliteDb:
    kind = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, t: SqliteTarget) -> SqliteDb:
        """For a reset's own steps, with the bridge stopped (plans read through SqlitePlanDb).
        Never creates the file (mode=rw, not rwc): a missing store is an error, not a new
        empty root-owned file the bridge could not open afterwards."""
        if not t.path.is_file():
            raise MissingDatabase(f"the database {t.path} does not exist")
        uri = f"file:{quote(str(t.path))}?mode=rw"
        # isolation_level None: we issue BEGIN/COMMIT ourselves so a step is one transaction.
        conn = sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_SECONDS, isolation_level=None)
        return cls(conn)

    async def close(self) -> None:
        self.conn.close()

    async def schema(self) -> str:
        return "main"

    async def tables(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name <> ? ORDER BY 1",
            (FENCE,),
        ).fetchall()
        return [r[0] for r in rows]

    async def estimate(self, table: str) -> int | None:
        return None  # SQLite keeps no row estimate short of counting

    async def set_fence(self, token: str) -> None:
        async with self.transaction():
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {qi(FENCE)} (token TEXT)")
            self.conn.execute(f"DELETE FROM {qi(FENCE)}")
            self.conn.execute(f"INSERT INTO {qi(FENCE)} VALUES (?)", (token,))
        # Into the main file: a full reset removes the -wal before the file itself.
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def has_fence(self, token: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FENCE,)
        ).fetchone()
        if row is None:
            return False
        sql = f"SELECT count(*) FROM {qi(FENCE)} WHERE token = ?"
        return bool(self.conn.execute(sql, (token,)).fetchone()[0])

    async def drop_fence(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {qi(FENCE)}")

    def _rows(self, sql: str) -> Any:
        return self.conn.execute(sql)

    async def digest(self, table: str) -> TableSum:
        ncols = len(self.conn.execute(f"PRAGMA table_info({qi(table)})").fetchall())
        order = ", ".join(str(i) for i in range(1, ncols + 1))
        h = hashlib.sha256()
        n = 0
        for row in self._rows(f"SELECT * FROM {qi(table)} ORDER BY {order}"):
            h.update(_encode_row(row))
            n += 1
        return TableSum(n, h.hexdigest())

    async def dump(self, table: str, path: Path, where: str = "", on_chunk: OnChunk = None) -> int:
        """Write the rows to path (fsynced); returns how many were written."""
        sql = f"SELECT * FROM {qi(table)}" + (f" WHERE {where}" if where else "")
        n = 0
        with path.open("wb") as f:
            for row in self._rows(sql):
                line = _encode_row(row)
                f.write(line)
                n += 1
                if on_chunk is not None:
                    on_chunk(line)
            f.flush()
            _fsync(f)
        return n

    async def dump_sum(self, table: str, where: str = "") -> tuple[int, str]:
        summer = Summer()
        sql = f"SELECT * FROM {qi(table)}" + (f" WHERE {where}" if where else "")
        for row in self._rows(sql):
            summer.add(_encode_row(row))
        return summer.lines, summer.h.hexdigest()

    async def delete(self, table: str, where: str = "") -> None:
        self.conn.execute(f"DELETE FROM {qi(table)}" + (f" WHERE {where}" if where else ""))

    async def clear(self, targets: list[tuple[str, str]]) -> None:
        # SQLite empties a table without a WHERE in one step already (its truncate optimisation).
        for table, where in targets:
            await self.delete(table, where)

    async def load(
        self,
        table: str,
        path: Path,
        rows: int,
        sha256: str,
        schema: str | None = None,
        on_chunk: OnChunk = None,
    ) -> None:
        summer = Summer()
        with path.open("rb") as f:
            try:
                for line in f:
                    if on_chunk is not None:
                        on_chunk(line)
                    values = [_decode(v) for v in json.loads(summer.add(line))]
                    marks = ", ".join("?" for _ in values)
                    self.conn.execute(f"INSERT INTO {qi(table)} VALUES ({marks})", values)
            except (ValueError, TypeError, KeyError, sqlite3.Error):
                refuse_if_damaged(path, rows, sha256)
                raise
        summer.check(path, rows, sha256)

    def transaction(self) -> _SqliteTx:
        return _SqliteTx(self.conn)


class _SqliteTx:
    """BEGIN IMMEDIATE ... COMMIT, or a savepoint inside an open transaction (as asyncpg nests),
    so the engine can wrap a step's own transaction with the fence and a check."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.nested = False

    async def __aenter__(self) -> None:
        self.nested = self.conn.in_transaction
        self.conn.execute("SAVEPOINT bd" if self.nested else "BEGIN IMMEDIATE")

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.nested:
            if exc_type:
                self.conn.execute("ROLLBACK TO bd")
            self.conn.execute("RELEASE bd")
        else:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


class SqlitePlanDb:
    """What a plan needs from a SQLite store, its tables and size, read in the killable child
    process of probes/sqlite_read.py: the bridge still runs, and its container could swap the
    file for a FIFO that would block an in-process open forever."""

    kind = "sqlite"

    def __init__(self, tables: list[str], size: int) -> None:
        self._tables = tables
        self._size = size

    @classmethod
    async def open(cls, t: SqliteTarget) -> SqlitePlanDb:
        try:
            size = os.lstat(t.path).st_size
        except FileNotFoundError:
            raise MissingDatabase(f"the database {t.path} does not exist") from None
        facts = await sqlite_read.probe(t.path, t.path.parent)
        if isinstance(facts, ProbeError):
            raise UnreadableStore(facts.message)
        return cls(sorted(x for x in facts.tables if not x.startswith("sqlite_")), size)

    async def close(self) -> None:
        pass

    async def tables(self) -> list[str]:
        return list(self._tables)

    async def size(self, tables: list[str] | None) -> int:
        return self._size


Db = PgDb | SqliteDb


class MissingDatabase(Exception):
    """The SQLite file is not there (it is never created by us)."""


class UnreadableStore(Exception):
    """A plan could not read the SQLite store; str() is one sentence."""


async def open_db(target: PgTarget | SqliteTarget, read_only: bool = False) -> Db | SqlitePlanDb:
    """`read_only`: for plans, which must never write (PostgreSQL read-only sessions; SQLite
    read in a child process, see SqlitePlanDb)."""
    if isinstance(target, SqliteTarget):
        if read_only:
            return await SqlitePlanDb.open(target)
        return await SqliteDb.open(target)
    return await PgDb.open(target, read_only)


async def snapshot(db: Db) -> dict[str, TableSum]:
    """Row count and digest of every table: what the manifest records and restore is checked by."""
    return {t: await db.digest(t) for t in await db.tables()}


def _encode_row(row: tuple[Any, ...]) -> bytes:
    return (json.dumps([_encode(v) for v in row], separators=(",", ":")) + "\n").encode()


def _encode(v: Any) -> Any:
    if isinstance(v, (bytes, memoryview)):
        return {"b64": base64.b64encode(bytes(v)).decode("ascii")}
    return v


def _decode(v: Any) -> Any:
    if isinstance(v, dict):
        return base64.b64decode(v["b64"])
    return v


def _fsync(f: Any) -> None:
    import os

    os.fsync(f.fileno())
