"""Read-only look into a bridge database (PostgreSQL via asyncpg, or SQLite).

Only what the diagnosis reads is queried, in two round trips whatever the store's size
(probes/collect.py, bounded against what the bridge itself wrote there). SQLite is read in a
child process that can be killed (probes/sqlite_read.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    import asyncpg

from .. import dbpin
from ..dbpin import DbPin
from ..facts import DbFacts, ProbeError
from ..render.neutral import one_line
from . import postgres, sqlite_read
from .collect import PG_TABLES_JSON, batch_sql, facts_of, table_names

CONNECT_TIMEOUT = 5.0
QUERY_TIMEOUT = 10.0


@dataclass(frozen=True)
class PgTarget:
    user: str
    password: str = field(repr=False)  # never in a repr, a log line or a traceback
    host: str = ""
    port: int = 5432
    database: str = ""
    ssl: bool = False
    # The bridge's own identity (dbpin.py), when known: connect() proves the server agrees.
    pin: DbPin | None = None
    # Where the bridge itself connects (the URI's host, e.g. matrix-postgres on Docker's network),
    # before --db-host: pg_dump run inside MDAD's container connects there.
    uri_host: str = ""
    uri_port: int = 5432

    @property
    def location(self) -> str:
        """Printable: no password, and the names the config chose made one safe line."""
        return one_line(f"postgres://{self.user}@{self.host}:{self.port}/{self.database}", 300)

    async def connect(
        self,
        *,
        read_only: bool,
        application_name: str,
        command_timeout: float | None = QUERY_TIMEOUT,
    ) -> asyncpg.Connection:
        """`command_timeout` None: no client-side cap (bulk COPY of a store of any size)."""
        conn, _ = await self.connect_asking(
            read_only=read_only, application_name=application_name, command_timeout=command_timeout
        )
        return conn

    async def connect_asking(
        self,
        *,
        read_only: bool,
        application_name: str,
        command_timeout: float | None = QUERY_TIMEOUT,
        also: str | None = None,
    ) -> tuple[asyncpg.Connection, Any]:
        """`connect`, and the value of `also` (dbpin.who_and) asked with the identity."""
        import asyncpg  # here, not at the top: a SQLite-only host never pays for loading it

        settings = {"application_name": application_name}
        if read_only:
            settings["default_transaction_read_only"] = "on"
        conn = await asyncpg.connect(
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
        statement = dbpin.who_and(also) if also else dbpin.WHO
        try:
            # First statement on every connection: who the server says we are (dbpin.py).
            value = await asyncio.wait_for(dbpin.verify(conn, self.pin, statement), QUERY_TIMEOUT)
        except BaseException:
            await conn.close()
            raise
        return conn, value


@dataclass(frozen=True)
class SqliteTarget:
    path: Path

    @property
    def location(self) -> str:
        return str(self.path)


def parse_db_host(value: str) -> tuple[str, int | None]:
    """`--db-host`: HOST, HOST:PORT, an IPv6 address (bare, or [ADDR]:PORT as in a URI), or a
    Unix-socket directory (a path, optionally DIR:PORT)."""
    if value.startswith("["):
        addr, close, rest = value[1:].partition("]")
        if close and not rest:
            return addr, None
        if close and rest[:1] == ":" and rest[1:].isdigit():
            return addr, int(rest[1:])
        return value, None
    if not value.startswith("/") and value.count(":") > 1:
        return value, None  # a bare IPv6 address: its last group is not a port
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return value, None


def target_for(
    uri: str,
    *,
    data_dir: Path,
    config_dir: Path,
    base_dir: Path,
    db_host: str | None,
    root: Path | None = None,
) -> PgTarget | SqliteTarget | ProbeError:
    """`db_host` "auto" finds MDAD's Postgres under `root` (default: the bridge dir's parent)."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("postgres", "postgresql"):
        try:
            parts = urlsplit(uri)
            query = parse_qs(parts.query)
            uri_host, uri_port = parts.hostname or "localhost", parts.port or 5432
        except ValueError:  # a port that is not a number, or out of range
            return ProbeError(
                "db_unsupported", "the database URI in config.yaml is not a valid PostgreSQL URI."
            )
        host, port = uri_host, uri_port
        db_host = postgres.effective(db_host, uri_host, root or base_dir.parent)
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
            uri_host=uri_host,
            uri_port=uri_port,
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
    return ProbeError(
        "db_unsupported", f"the database URI scheme '{dbpin.short(scheme)}' is not supported."
    )


def _sqlite_target(
    raw: str, data_dir: Path, config_dir: Path, base_dir: Path
) -> SqliteTarget | ProbeError:
    p = PurePosixPath(raw)
    if ".." in p.parts:
        # Never resolved on the host: a path that climbs out of a mount names another
        # bridge's files (the container itself could not reach them).
        return ProbeError(
            "db_unsupported", f"the SQLite path {dbpin.short(raw)} leaves the bridge directory."
        )
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
            f"the SQLite path {dbpin.short(raw)} is outside the bridge's /data and /config mounts.",
        )
    # Not resolved: symlinks below the bridge directory are refused when the file is opened
    # (probes/sqlite_read.py, reset/paths.py), never followed.
    if not host.is_relative_to(base_dir):
        return ProbeError(
            "db_unsupported", f"the SQLite file {one_line(str(host))} leaves the bridge directory."
        )
    return SqliteTarget(host)


async def probe(target: PgTarget | SqliteTarget, base: Path | None = None) -> DbFacts | ProbeError:
    """`base`: the bridge directory a SQLite store must lie in (default: the store's own)."""
    if isinstance(target, SqliteTarget):
        return await sqlite_read.probe(target.path, base or target.path.parent)
    return await _probe_pg(target)


async def _probe_pg(t: PgTarget) -> DbFacts | ProbeError:
    import asyncpg

    where = one_line(f"PostgreSQL at {t.host}" + ("" if t.host.startswith("/") else f":{t.port}"))
    try:
        conn, listed = await t.connect_asking(
            read_only=True, application_name="bridgedoctor", also=PG_TABLES_JSON
        )
    except asyncpg.InvalidPasswordError:
        return ProbeError(
            "db_unreachable",
            f"{where} refused the password for user {one_line(t.user, 64)}; check the database password "
            "in the bridge's config.yaml.",
        )
    except asyncpg.InvalidCatalogNameError:
        return ProbeError(
            "db_unreachable",
            f"{where} has no database named {one_line(t.database, 64)}; is the bridge set up?",
        )
    except (OSError, asyncio.TimeoutError, socket.gaierror) as e:
        hint = (
            " MDAD's matrix-postgres only resolves inside Docker, and neither its socket "
            "directory (<root>/postgres/run) nor a running matrix-postgres container was found: "
            "set --db-host (db_host) to the socket directory or HOST:PORT."
            if t.host == postgres.MDAD_HOST
            else " Is PostgreSQL running, and is --db-host right?"
        )
        return ProbeError("db_unreachable", f"cannot reach {where} ({_reason(e)}).{hint}")
    except dbpin.IdentityRefused as e:
        return ProbeError("db_role_refused", f"{where}: {e}")
    except asyncpg.PostgresError as e:
        return ProbeError("db_unreachable", f"{where} refused the connection: {type(e).__name__}.")
    try:
        tables = table_names((name,) for name in json.loads(listed or "[]"))
        sql = batch_sql(tables, "bytea")
        rows = [tuple(r) for r in await conn.fetch(sql)] if sql else []
        return facts_of("postgres", t.location, tables, rows)
    except Exception as e:  # noqa: BLE001 - the bridge writes this database: any oddity is data
        return ProbeError("db_unreachable", f"reading {t.location} failed ({_reason(e)}).")
    finally:
        await conn.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    return getattr(e, "strerror", None) or type(e).__name__
