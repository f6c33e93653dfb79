"""Read-only look into a bridge database (PostgreSQL via asyncpg, or SQLite).

Only what the diagnosis needs is read: the table list, version tables, database_owner, the
crypto_account rows, a few pickled rows per kind, row counts of the crypto tables, and whether a
recovery key is stored (never its value).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from ..facts import DbFacts, ProbeError, StoredAccount

CONNECT_TIMEOUT = 5.0
QUERY_TIMEOUT = 10.0
SAMPLE = 5
VERSION_TABLES = ("version", "mx_version", "crypto_version")
SAMPLED = {
    "olm_session": "SELECT session FROM crypto_olm_session",
    "megolm_inbound": "SELECT session FROM crypto_megolm_inbound_session WHERE session IS NOT NULL",
    "megolm_outbound": "SELECT session FROM crypto_megolm_outbound_session",
    "secret": "SELECT secret FROM crypto_secrets",
}
SAMPLED_TABLE = {
    "olm_session": "crypto_olm_session",
    "megolm_inbound": "crypto_megolm_inbound_session",
    "megolm_outbound": "crypto_megolm_outbound_session",
    "secret": "crypto_secrets",
}
COUNTED = (
    "crypto_account",
    "crypto_olm_session",
    "crypto_megolm_inbound_session",
    "crypto_megolm_outbound_session",
    "crypto_secrets",
    "portal",
    "user_login",
)


@dataclass(frozen=True)
class PgTarget:
    user: str
    password: str
    host: str
    port: int
    database: str
    ssl: bool

    @property
    def location(self) -> str:
        return f"postgres://{self.user}@{self.host}:{self.port}/{self.database}"

    async def connect(
        self,
        *,
        read_only: bool,
        application_name: str,
        command_timeout: float | None = QUERY_TIMEOUT,
    ) -> asyncpg.Connection:
        """`command_timeout` None: no client-side cap (bulk COPY of a store of any size)."""
        settings = {"application_name": application_name}
        if read_only:
            settings["default_transaction_read_only"] = "on"
        return await asyncpg.connect(
            user=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
            ssl=self.ssl,
            timeout=CONNECT_TIMEOUT,
            command_timeout=command_timeout,
            server_settings=settings,
        )


@dataclass(frozen=True)
class SqliteTarget:
    path: Path

    @property
    def location(self) -> str:
        return str(self.path)


def parse_db_host(value: str) -> tuple[str, int | None]:
    """`--db-host`: HOST, HOST:PORT, or a Unix-socket directory (a path, optionally DIR:PORT)."""
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return value, None


def target_for(
    uri: str, *, data_dir: Path, config_dir: Path, base_dir: Path, db_host: str | None
) -> PgTarget | SqliteTarget | ProbeError:
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("postgres", "postgresql"):
        parts = urlsplit(uri)
        query = parse_qs(parts.query)
        host, port = parts.hostname or "localhost", parts.port or 5432
        if db_host:
            over_host, over_port = parse_db_host(db_host)
            host, port = over_host, over_port or port
        return PgTarget(
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=host,
            port=port,
            database=unquote(parts.path.lstrip("/")),
            ssl=query.get("sslmode", ["disable"])[0] not in ("disable", "allow", "prefer"),
        )
    if scheme in ("file", "sqlite", "sqlite3"):
        raw = uri.split(":", 1)[1].split("?", 1)[0]
        if raw.startswith("/"):
            # sqlite:////data/x.db (mautrix-python, mautrix-meta): "//" + absolute path
            raw = "/" + raw.lstrip("/")
        return _sqlite_target(raw, data_dir, config_dir, base_dir)
    if "://" not in uri:
        # MDAD renders most SQLite URIs as a bare in-container path: /data/mautrix-<b>.db
        return _sqlite_target(uri.split("?", 1)[0], data_dir, config_dir, base_dir)
    return ProbeError("db_unsupported", f"the database URI scheme '{scheme}' is not supported.")


def _sqlite_target(
    raw: str, data_dir: Path, config_dir: Path, base_dir: Path
) -> SqliteTarget | ProbeError:
    p = PurePosixPath(raw)
    # The URI names the path inside the container (workdir /data); map it to the host mounts.
    if not p.is_absolute():
        host = data_dir.joinpath(*p.parts)
    elif p.parts[:2] == ("/", "data"):
        host = data_dir.joinpath(*p.parts[2:])
    elif p.parts[:2] == ("/", "config"):
        host = config_dir.joinpath(*p.parts[2:])
    else:
        return ProbeError(
            "db_unsupported",
            f"the SQLite path {raw} is outside the bridge's /data and /config mounts.",
        )
    resolved = host.resolve()
    if not resolved.is_relative_to(base_dir.resolve()):
        return ProbeError("db_unsupported", f"the SQLite file {host} leaves the bridge directory.")
    return SqliteTarget(resolved)


Fetch = Callable[[str], Awaitable[list[tuple[Any, ...]]]]


async def probe(target: PgTarget | SqliteTarget) -> DbFacts | ProbeError:
    if isinstance(target, SqliteTarget):
        return await _probe_sqlite(target)
    return await _probe_pg(target)


async def _probe_pg(t: PgTarget) -> DbFacts | ProbeError:
    where = f"PostgreSQL at {t.host}" + ("" if t.host.startswith("/") else f":{t.port}")
    try:
        conn = await t.connect(read_only=True, application_name="bridgedoctor")
    except asyncpg.InvalidPasswordError:
        return ProbeError(
            "db_unreachable",
            f"{where} refused the password for user {t.user}; check the database password "
            "in the bridge's config.yaml.",
        )
    except asyncpg.InvalidCatalogNameError:
        return ProbeError(
            "db_unreachable", f"{where} has no database named {t.database}; is the bridge set up?"
        )
    except (OSError, asyncio.TimeoutError, socket.gaierror) as e:
        hint = (
            " MDAD's matrix-postgres only resolves inside Docker: pass --db-host with the host's "
            "socket directory (/matrix/postgres/run) or HOST:PORT."
            if t.host == "matrix-postgres"
            else " Is PostgreSQL running, and is --db-host right?"
        )
        return ProbeError("db_unreachable", f"cannot reach {where} ({_reason(e)}).{hint}")
    except asyncpg.PostgresError as e:
        return ProbeError("db_unreachable", f"{where} refused the connection: {type(e).__name__}.")
    try:

        async def fetch(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.fetch(sql)]

        tables_sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        return await _collect("postgres", t.location, fetch, tables_sql)
    except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as e:
        return ProbeError("db_unreachable", f"reading {t.location} failed ({_reason(e)}).")
    finally:
        await conn.close()


async def _probe_sqlite(t: SqliteTarget) -> DbFacts | ProbeError:
    if not t.path.is_file():
        return ProbeError("db_unreachable", f"the SQLite database {t.path} does not exist.")
    try:
        # check_same_thread off: each query runs in a worker thread so checks stay concurrent.
        conn = sqlite3.connect(
            f"{t.path.as_uri()}?mode=ro", uri=True, timeout=QUERY_TIMEOUT, check_same_thread=False
        )
    except sqlite3.Error as e:
        return ProbeError("db_unreachable", f"cannot open {t.path} read-only ({e}).")
    try:

        async def fetch(sql: str) -> list[tuple[Any, ...]]:
            return await asyncio.to_thread(lambda: conn.execute(sql).fetchall())

        tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return await _collect("sqlite", str(t.path), fetch, tables_sql)
    except sqlite3.DatabaseError as e:
        return ProbeError("db_unreachable", f"reading {t.path} failed ({e}).")
    finally:
        conn.close()


async def _collect(kind: str, location: str, fetch: Fetch, tables_sql: str) -> DbFacts:
    tables = frozenset(str(r[0]) for r in await fetch(tables_sql))
    versions: dict[str, int] = {}
    for vt in VERSION_TABLES:
        if vt in tables:
            rows = await fetch(f"SELECT version FROM {vt} LIMIT 1")
            if rows and rows[0][0] is not None:
                versions[vt] = int(rows[0][0])
    owner = None
    if "database_owner" in tables:
        rows = await fetch("SELECT owner FROM database_owner LIMIT 1")
        owner = str(rows[0][0]) if rows else None
    accounts: tuple[StoredAccount, ...] = ()
    if "crypto_account" in tables:
        rows = await fetch("SELECT account_id, device_id, account FROM crypto_account")
        accounts = tuple(StoredAccount(str(a), str(d or ""), _bytes(p)) for a, d, p in rows)
    samples = {}
    for kind_name, sql in SAMPLED.items():
        if SAMPLED_TABLE[kind_name] in tables:
            rows = await fetch(f"{sql} LIMIT {SAMPLE}")
            samples[kind_name] = tuple(_bytes(r[0]) for r in rows)
    counts = {}
    for table in COUNTED:
        if table in tables:
            counts[table] = int((await fetch(f"SELECT count(*) FROM {table}"))[0][0])
    recovery = False
    if "kv_store" in tables:
        recovery = bool(await fetch("SELECT 1 FROM kv_store WHERE key = 'recovery_key' LIMIT 1"))
    return DbFacts(
        kind=kind,  # type: ignore[arg-type]
        location=location,
        tables=tables,
        versions=versions,
        owner=owner,
        accounts=accounts,
        samples=samples,
        counts=counts,
        has_recovery_key=recovery,
    )


def _bytes(v: object) -> bytes:
    if isinstance(v, memoryview):
        return v.tobytes()
    if isinstance(v, str):
        return v.encode("ascii", "replace")
    return bytes(v)  # type: ignore[arg-type]


def _reason(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    return getattr(e, "strerror", None) or type(e).__name__
