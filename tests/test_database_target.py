"""probes/database.py: a database URI from a bridge's config.yaml (attacker input) becomes a
target that stays inside the bridge's mounts, and a PostgreSQL connection set up as asked."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import pytest

from bridgedoctor.dbpin import DbPin, IdentityRefused
from bridgedoctor.facts import ProbeError
from bridgedoctor.probes import database
from bridgedoctor.probes.database import (
    PgTarget,
    SqliteTarget,
    parse_db_host,
    target_for,
)
from tests.support.pg import PgServer
from tests.test_dbpin import _role

BASE = Path("/srv/matrix/mautrix-x")


def target(uri: str, db_host: str | None = None, config_dir: Path = BASE / "config") -> object:
    return target_for(
        uri, data_dir=BASE / "data", config_dir=config_dir, base_dir=BASE, db_host=db_host
    )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("db.example.org", ("db.example.org", None)),
        ("db.example.org:5433", ("db.example.org", 5433)),
        ("/run/postgresql", ("/run/postgresql", None)),
        ("/run/postgresql:5433", ("/run/postgresql", 5433)),
        ("/run/a:b:6000", ("/run/a:b", 6000)),  # the last colon is the port's
        ("db:abc", ("db:abc", None)),  # not a port: all of it is the host
        ("db:", ("db:", None)),
        ("::1", ("::1", None)),  # IPv6: bare, the last group is not a port
        ("fe80::5432", ("fe80::5432", None)),
        ("[::1]", ("::1", None)),  # in brackets as in a URI, with or without a port
        ("[::1]:5433", ("::1", 5433)),
        ("[::1]x", ("[::1]x", None)),  # not a bracketed address: passed on whole, fails there
        ("[::1]:x", ("[::1]:x", None)),
        ("[::1", ("[::1", None)),
        ("/run/pg::5433", ("/run/pg:", 5433)),  # a path is a path, colons and all
    ],
)
def test_db_host_is_a_host_or_socket_directory_and_maybe_a_port(
    value: str, parsed: tuple[str, int | None]
) -> None:
    assert parse_db_host(value) == parsed


def test_a_postgres_uri_becomes_its_target() -> None:
    got = target("postgres://u%3Ax:p%40w@matrix-postgres:5433/db%2Fx?sslmode=require")
    assert got == PgTarget(
        user="u:x", password="p@w", host="matrix-postgres", port=5433, database="db/x",
        ssl=True, uri_host="matrix-postgres", uri_port=5433,
    )  # fmt: skip
    assert isinstance(got, PgTarget) and got.password == "p@w"
    assert "p@w" not in repr(got) and got.location == "postgres://u:x@matrix-postgres:5433/db/x"
    assert isinstance(x := target("postgres://u@db/XXdb"), PgTarget) and x.database == "XXdb"
    bare = target("POSTGRESQL://db")
    assert bare == PgTarget(user="", password="", host="db", port=5432, database="",
                            ssl=False, uri_host="db", uri_port=5432)  # fmt: skip
    assert target("postgres:///x") == PgTarget(
        user="", password="", host="localhost", database="x", uri_host="localhost"
    )


@pytest.mark.parametrize(
    ("mode", "ssl"),
    [("disable", False), ("allow", False), ("prefer", False), ("require", True),
     ("verify-ca", True), ("verify-full", True)],
)  # fmt: skip
def test_sslmode(mode: str, ssl: bool) -> None:
    got = target(f"postgres://u@db/x?sslmode={mode}")
    assert isinstance(got, PgTarget) and got.ssl is ssl


def test_db_host_redirects_the_connection_not_the_bridge_s_own_address(tmp_path: Path) -> None:
    got = target("postgres://u@matrix-postgres:5433/x", db_host="10.0.0.5:6543")
    assert isinstance(got, PgTarget)
    assert (got.host, got.port, got.uri_host, got.uri_port) == (
        "10.0.0.5", 6543, "matrix-postgres", 5433
    )  # fmt: skip
    got = target("postgres://u@matrix-postgres:5433/x", db_host="/run/postgresql")
    assert isinstance(got, PgTarget) and (got.host, got.port) == ("/run/postgresql", 5433)
    # auto: only matrix-postgres is looked for (under the bridge directory's parent by default).
    got = target("postgres://u@db.example.org/x", db_host="auto")
    assert isinstance(got, PgTarget) and (got.host, got.port) == ("db.example.org", 5432)


@pytest.mark.parametrize(
    "uri", ["postgres://u@db:99999/x", "postgres://u@db:port/x", "postgres://u@[::1/x"]
)
def test_a_postgres_uri_that_does_not_parse_is_one_sentence(uri: str) -> None:
    got = target(uri)
    assert got == ProbeError(
        "db_unsupported", "the database URI in config.yaml is not a valid PostgreSQL URI."
    )


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("/data/mautrix-x.db", BASE / "data" / "mautrix-x.db"),
        ("mautrix-x.db", BASE / "data" / "mautrix-x.db"),  # relative to the workdir, /data
        ("sub/x.db?_txlock=immediate", BASE / "data" / "sub" / "x.db"),
        ("/config/x.db", BASE / "config" / "x.db"),
        ("/config/sub/x.db", BASE / "config" / "sub" / "x.db"),
        ("sqlite:////data/x.db", BASE / "data" / "x.db"),
        ("sqlite3:/data/x.db?_pragma=foreign_keys(1)", BASE / "data" / "x.db"),
        ("file:/config/x.db?mode=rw", BASE / "config" / "x.db"),
        ("sqlite:x.db", BASE / "data" / "x.db"),
        ("file:/data/a:b.db?mode=ro?x", BASE / "data" / "a:b.db"),  # the first '?' ends it
        ("/data/x.db?a=1?b=2", BASE / "data" / "x.db"),
        ("sqlite:////data/Xx.db", BASE / "data" / "Xx.db"),
    ],
)
def test_a_sqlite_uri_maps_onto_the_bridge_s_mounts(uri: str, path: Path) -> None:
    assert target(uri) == SqliteTarget(path)


OUTSIDE = "is outside the bridge's /data and /config mounts."


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/etc/shadow", f"the SQLite path /etc/shadow {OUTSIDE}"),
        ("sqlite:////Xdata/x.db", f"the SQLite path /Xdata/x.db {OUTSIDE}"),
        ("sqlite:///var/lib/x.db", f"the SQLite path /var/lib/x.db {OUTSIDE}"),
        ("/configx/x.db", f"the SQLite path /configx/x.db {OUTSIDE}"),
        ("/data/../../x.db", "the SQLite path /data/../../x.db leaves the bridge directory."),
        ("../x.db", "the SQLite path ../x.db leaves the bridge directory."),
        ("mysql://u@db/x", "the database URI scheme 'mysql' is not supported."),
    ],
)
def test_a_sqlite_path_outside_the_mounts_is_refused(uri: str, message: str) -> None:
    assert target(uri) == ProbeError("db_unsupported", message)


def test_a_config_mount_outside_the_bridge_directory_is_refused() -> None:
    """MDAD mounts /config from the bridge's own directory; a unit saying otherwise (the bridge
    cannot write its unit, but the config could name a path there) is not followed."""
    got = target("/config/x.db", config_dir=Path("/etc/other"))
    assert got == ProbeError(
        "db_unsupported", "the SQLite file /etc/other/x.db leaves the bridge directory."
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (asyncio.TimeoutError(), "timed out"),
        (OSError(errno.ECONNREFUSED, "Connection refused"), "Connection refused"),
        (ConnectionResetError(), "ConnectionResetError"),
        (ValueError("x"), "ValueError"),
    ],
)
def test_the_reason_of_a_failure_is_short(error: BaseException, reason: str) -> None:
    assert database._reason(error) == reason


def pg_target(pg: PgServer, role: str, pin: DbPin | None = None) -> PgTarget:
    """A bridge's own role and database (the identity check refuses a superuser)."""
    return PgTarget(user=role, password="pw", host=pg.host, port=pg.port, database=role, pin=pin)


def test_a_connection_is_read_only_named_and_bounded_as_asked(pg: PgServer) -> None:
    async def go() -> None:
        role = await _role(pg)
        conn = await pg_target(pg, role).connect(
            read_only=True, application_name="bd-target-test", command_timeout=0.5
        )
        try:
            assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
            assert await conn.fetchval("SHOW application_name") == "bd-target-test"
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("SELECT pg_sleep(3)")
        finally:
            await conn.close()
        conn = await pg_target(pg, role).connect(read_only=False, application_name="bd-rw")
        try:
            assert await conn.fetchval("SHOW default_transaction_read_only") == "off"
            assert await conn.fetchval("SELECT 1 FROM pg_sleep(0.6)") == 1  # no 0.5 s cap
        finally:
            await conn.close()

    asyncio.run(go())


def test_a_refused_identity_closes_the_connection(pg: PgServer) -> None:
    """The identity check fails (a pin naming another role): the connection is closed, not
    left open on the server."""

    async def go() -> int:
        role = await _role(pg)
        pinned = pg_target(pg, role, DbPin(database=role, user="someone_else"))
        with pytest.raises(IdentityRefused):
            await pinned.connect(read_only=True, application_name="bd-target-refused")
        watcher = await pg_target(pg, role).connect(read_only=True, application_name="bd-watch")
        try:
            await asyncio.sleep(0.3)
            return await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                "bd-target-refused",
            )
        finally:
            await watcher.close()

    assert asyncio.run(go()) == 0


def test_a_sqlite_target_is_read_below_the_bridge_directory(tmp_path: Path) -> None:
    from bridgedoctor.facts import DbFacts
    from bridgedoctor.probes import sqlite_read
    from tests.support.fleet import sqlite_store

    base, real = tmp_path / "mautrix-x", tmp_path / "real"
    (base / "data").mkdir(parents=True)
    real.mkdir()
    sqlite_store(base / "data" / "x.db")
    try:
        # Without a bridge directory, the store's own directory is the one it must lie in.
        facts = asyncio.run(database.probe(SqliteTarget(base / "data" / "x.db")))
        assert isinstance(facts, DbFacts) and facts.location == str(base / "data" / "x.db")
        facts = asyncio.run(database.probe(SqliteTarget(base / "data" / "x.db"), base))
        assert isinstance(facts, DbFacts) and facts.accounts
        # The data directory a link: refused when walking from the bridge directory.
        os.rename(base / "data", real / "data")
        (base / "data").symlink_to(real / "data")
        got = asyncio.run(database.probe(SqliteTarget(base / "data" / "x.db"), base))
        assert isinstance(got, ProbeError) and got.code == "db_refused"
        assert f"{base / 'data'} is a symbolic link" in got.message
    finally:
        sqlite_read.stop()


@pytest.mark.parametrize(
    ("host", "port", "where"),
    [
        (
            "/nonexistent",
            5432,
            "cannot reach PostgreSQL at /nonexistent (No such file or directory).",
        ),
        ("127.0.0.1", 1, "cannot reach PostgreSQL at 127.0.0.1:1 ("),
    ],
)
def test_an_unreachable_server_is_named_by_socket_directory_or_host_and_port(
    host: str, port: int, where: str
) -> None:
    got = asyncio.run(database.probe(PgTarget(user="u", password="pw", host=host, port=port)))
    assert isinstance(got, ProbeError) and got.code == "db_unreachable"
    assert got.message.startswith(where)
    assert got.message.endswith(" Is PostgreSQL running, and is --db-host right?")


def test_a_reset_touches_only_the_bridge_s_own_database_on_its_server() -> None:
    """reset/target.py: the database a config names, judged before a reset, word for word."""
    from bridgedoctor.diagnose import Options
    from bridgedoctor.knowledge import load
    from bridgedoctor.reset.errors import ResetError
    from bridgedoctor.reset.target import _own_database

    spec = load().get("whatsapp")
    assert spec is not None
    own = "matrix_mautrix_whatsapp"

    def target(name: str, host: str = "matrix-postgres") -> database.PgTarget:
        return database.PgTarget(name, "pw", host, 5432, name)

    def refused(t: database.PgTarget, opts: Options) -> str:
        with pytest.raises(ResetError) as e:
            _own_database(spec, t, opts)
        return str(e.value)

    assert refused(target("matrix_mautrix_signal"), Options()) == (
        "whatsapp's config.yaml names the database matrix_mautrix_signal as role "
        "matrix_mautrix_signal, which belongs to the signal bridge; a reset of whatsapp must not "
        "touch it; nothing was changed."
    )
    assert refused(target("mine"), Options()) == (
        "whatsapp's config.yaml names the database mine as role mine, not whatsapp's own "
        f"database {own}; if it is right for this host, allow it with 'databases: {{whatsapp: "
        "mine:mine}' in helper.yaml or --db-name whatsapp=mine:mine; nothing was changed."
    )
    assert refused(target(own, "evil.example"), Options(db_host=None)) == (
        "whatsapp's config.yaml names the server evil.example, not MDAD's matrix-postgres; set "
        "db_host (--db-host) to where PostgreSQL is, or name the host in the database entry; "
        "nothing was changed."
    )
    assert _own_database(spec, target(own), Options()).pin == DbPin(own, own)
    # A custom setup's entry names its own server: that host is the bridge's.
    custom = Options(db_host=None, db_pins={"whatsapp": DbPin("wa", "wa", "db.internal")})
    assert _own_database(spec, target("wa", "db.internal"), custom).pin == DbPin(
        "wa", "wa", "db.internal"
    )


def test_a_wrong_password_or_database_is_said_as_such(pg: PgServer) -> None:
    role = asyncio.run(_role(pg))
    wrong = PgTarget(user=role, password="not-pw", host=pg.host, port=pg.port, database=role)
    got = asyncio.run(database.probe(wrong))
    where = f"PostgreSQL at {pg.host}:{pg.port}"
    assert got == ProbeError(
        "db_unreachable",
        f"{where} refused the password for user {role}; check the database password in the "
        "bridge's config.yaml.",
    )
    nodb = PgTarget(user=role, password="pw", host=pg.host, port=pg.port, database=role + "_x")
    assert asyncio.run(database.probe(nodb)) == ProbeError(
        "db_unreachable", f"{where} has no database named {role}_x; is the bridge set up?"
    )


def test_the_check_s_session_is_named_on_the_server(pg: PgServer) -> None:
    """What an admin sees in pg_stat_activity while a check reads: `bridgedoctor`.
    The read is held up by a lock on crypto_account until the session has been seen."""
    from bridgedoctor.facts import DbFacts

    async def go() -> tuple[list[tuple[str, str]], object]:
        role = await _role(pg)
        owner = await pg_target(pg, role).connect(read_only=False, application_name="bd-owner")
        watcher = await pg_target(pg, role).connect(read_only=True, application_name="bd-watch")
        try:
            await owner.execute("CREATE TABLE crypto_account (account_id text, device_id text, "
                                "account bytea)")  # fmt: skip
            tx = owner.transaction()
            await tx.start()
            await owner.execute("LOCK TABLE crypto_account IN ACCESS EXCLUSIVE MODE")
            probe = asyncio.ensure_future(database.probe(pg_target(pg, role)))
            seen: list[tuple[str, str]] = []
            for _ in range(100):
                rows = await watcher.fetch(
                    "SELECT application_name, wait_event_type FROM pg_stat_activity "
                    "WHERE datname = $1 AND application_name NOT LIKE 'bd-%'",
                    role,
                )
                seen = [(r[0], r[1] or "") for r in rows]
                if seen:
                    break
                await asyncio.sleep(0.05)
            await tx.rollback()
            return seen, await probe
        finally:
            await owner.close()
            await watcher.close()

    seen, facts = asyncio.run(go())
    assert seen == [("bridgedoctor", "Lock")]
    assert isinstance(facts, DbFacts) and "crypto_account" in facts.tables


def test_each_refusal_of_the_server_is_its_own_answer(pg: PgServer) -> None:
    """Names from config.yaml are shown bounded; what the server refuses is named."""

    async def go() -> tuple[str, list[object]]:
        role = await _role(pg)
        nologin = await _role(pg, "ALTER ROLE {role} NOLOGIN")
        broken = await _role(pg)
        owner = await pg_target(pg, broken).connect(read_only=False, application_name="bd-owner")
        try:
            await owner.execute("CREATE TABLE crypto_account (x int)")  # not the bridge's columns
        finally:
            await owner.close()
        at = {"host": pg.host, "port": pg.port}
        return broken, [
            await database.probe(PgTarget(user="u" * 100, password="x", database=role, **at)),
            await database.probe(PgTarget(user=role, password="pw", database="d" * 100, **at)),
            await database.probe(
                PgTarget(
                    user=role,
                    password="pw",
                    database=role,
                    pin=DbPin(database=role, user="someone_else"),
                    **at,
                )  # fmt: skip
            ),
            await database.probe(PgTarget(user=nologin, password="pw", database=nologin, **at)),
            await database.probe(pg_target(pg, broken)),
            await database.probe(pg_target(pg, role)),
        ]

    broken, (long_user, long_db, refused_role, no_login, unreadable, facts) = asyncio.run(go())
    where = f"PostgreSQL at {pg.host}:{pg.port}"
    assert long_user == ProbeError(
        "db_unreachable",
        f"{where} refused the password for user {'u' * 61}...; check the database password "
        "in the bridge's config.yaml.",
    )
    assert long_db == ProbeError(
        "db_unreachable", f"{where} has no database named {'d' * 61}...; is the bridge set up?"
    )
    assert isinstance(refused_role, ProbeError) and refused_role.code == "db_role_refused"
    assert refused_role.message.startswith(f"{where}: ")
    assert no_login == ProbeError(
        "db_unreachable",
        f"{where} refused the connection: InvalidAuthorizationSpecificationError.",
    )
    assert unreadable == ProbeError(
        "db_unreachable",
        f"reading {pg_target(pg, broken).location} failed (UndefinedColumnError).",
    )
    from bridgedoctor.facts import DbFacts

    assert isinstance(facts, DbFacts) and facts.kind == "postgres"


def test_a_server_that_never_answers_or_refuses_ssl_is_given_up(pg: PgServer) -> None:
    """A port that accepts and then says nothing: the connection gives up at CONNECT_TIMEOUT.
    A target that requires TLS does not fall back to plain text (the test server has none)."""
    import socket

    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        started = time.monotonic()
        got = asyncio.run(database.probe(PgTarget(user="u", password="pw", host="127.0.0.1",
                                                  port=port, database="x")))  # fmt: skip
    assert got == ProbeError(
        "db_unreachable",
        f"cannot reach PostgreSQL at 127.0.0.1:{port} (timed out). Is PostgreSQL running, and "
        "is --db-host right?",
    )
    # Given up at CONNECT_TIMEOUT (5 s), not at the driver's own default (60 s).
    assert time.monotonic() - started < 30
    role = asyncio.run(_role(pg))
    tls = PgTarget(user=role, password="pw", host=pg.host, port=pg.port, database=role, ssl=True)
    got = asyncio.run(database.probe(tls))
    assert isinstance(got, ProbeError) and got.code == "db_unreachable"
