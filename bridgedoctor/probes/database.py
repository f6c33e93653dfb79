"""Read-only look into a bridge database (PostgreSQL via asyncpg, or SQLite).

Only what the diagnosis reads is queried, in two round trips whatever the store's size: the
table list, then one batched query for the version tables, database_owner, the crypto_account rows
and a few pickled rows per kind. Nothing is counted: a store with a million sessions costs what an
empty one does.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
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
# Pickled rows per kind: (table, column). A few of each are sampled by `check`; `--deep` reads all.
PICKLED = {
    "olm_session": ("crypto_olm_session", "session"),
    "megolm_inbound": ("crypto_megolm_inbound_session", "session"),
    "megolm_outbound": ("crypto_megolm_outbound_session", "session"),
    "secret": ("crypto_secrets", "secret"),
}
PG_TABLES_SQL = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
SQLITE_TABLES_SQL = "SELECT name FROM sqlite_master WHERE type = 'table'"


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


async def probe(target: PgTarget | SqliteTarget) -> DbFacts | ProbeError:
    if isinstance(target, SqliteTarget):
        # One hand-off to a worker thread for the whole SQLite probe, not one per query.
        return await asyncio.to_thread(_probe_sqlite, target)
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
        tables = frozenset(str(r[0]) for r in await conn.fetch(PG_TABLES_SQL))
        sql = batch_sql(tables, "bytea")
        rows = [tuple(r) for r in await conn.fetch(sql)] if sql else []
        return facts_of("postgres", t.location, tables, rows)
    except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as e:
        return ProbeError("db_unreachable", f"reading {t.location} failed ({_reason(e)}).")
    finally:
        await conn.close()


def _probe_sqlite(t: SqliteTarget) -> DbFacts | ProbeError:
    if not t.path.is_file():
        return ProbeError("db_unreachable", f"the SQLite database {t.path} does not exist.")
    try:
        conn = sqlite3.connect(f"{t.path.as_uri()}?mode=ro", uri=True, timeout=QUERY_TIMEOUT)
    except sqlite3.Error as e:
        return ProbeError("db_unreachable", f"cannot open {t.path} read-only ({e}).")
    try:
        tables = frozenset(str(r[0]) for r in conn.execute(SQLITE_TABLES_SQL))
        sql = batch_sql(tables, "BLOB")
        rows = conn.execute(sql).fetchall() if sql else []
        return facts_of("sqlite", str(t.path), tables, rows)
    except sqlite3.DatabaseError as e:
        return ProbeError("db_unreachable", f"reading {t.path} failed ({e}).")
    finally:
        conn.close()


def batch_sql(tables: frozenset[str], blob: str) -> str | None:
    """Everything `check` reads after the table list, as one query (one round trip): rows of
    (what, text, text, pickle). Only tables that exist are named. `blob` is the dialect's binary
    type; every column is cast, because PostgreSQL types a UNION pairwise from the left and an
    untyped NULL would become text. Table and column names are constants here."""
    none, nob = "CAST(NULL AS TEXT)", f"CAST(NULL AS {blob})"
    parts = [
        f"SELECT '{vt}', CAST(version AS TEXT), {none}, {nob} "
        f"FROM (SELECT version FROM {vt} LIMIT 1) AS v"
        for vt in VERSION_TABLES
        if vt in tables
    ]
    if "database_owner" in tables:
        parts.append(
            f"SELECT 'owner', CAST(owner AS TEXT), {none}, {nob} "
            "FROM (SELECT owner FROM database_owner LIMIT 1) AS o"
        )
    if "crypto_account" in tables:
        parts.append(
            "SELECT 'account', CAST(account_id AS TEXT), CAST(device_id AS TEXT), "
            f"CAST(account AS {blob}) FROM crypto_account"
        )
    for kind, (table, col) in PICKLED.items():
        if table in tables:
            parts.append(
                f"SELECT '{kind}', {none}, {none}, CAST({col} AS {blob}) FROM "
                f"(SELECT {col} FROM {table} WHERE {col} IS NOT NULL LIMIT {SAMPLE}) AS s"
            )
    return "\nUNION ALL\n".join(parts) or None


def facts_of(
    kind: str, location: str, tables: frozenset[str], rows: list[tuple[Any, ...]]
) -> DbFacts:
    versions: dict[str, int] = {}
    owner = None
    accounts: list[StoredAccount] = []
    samples: dict[str, list[bytes]] = {k: [] for k, (t, _) in PICKLED.items() if t in tables}
    for what, a, b, blob in rows:
        if what in VERSION_TABLES:
            if a is not None:
                versions[what] = int(a)
        elif what == "owner":
            owner = None if a is None else str(a)
        elif what == "account":
            accounts.append(StoredAccount(str(a), str(b or ""), _bytes(blob)))
        else:
            samples[what].append(_bytes(blob))
    return DbFacts(
        kind=kind,  # type: ignore[arg-type]
        location=location,
        tables=tables,
        versions=versions,
        owner=owner,
        accounts=tuple(accounts),
        samples={k: tuple(v) for k, v in samples.items()},
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
