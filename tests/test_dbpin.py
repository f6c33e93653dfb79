"""dbpin.py: which database and role are a bridge's own, and what the server says we are."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import asyncpg
import pytest

from bridgedoctor.dbpin import (
    DbPin,
    IdentityRefused,
    judge,
    parse_pin,
    parse_pins,
    verify,
    who_and,
)
from bridgedoctor.helper.config import ConfigError, parse
from bridgedoctor.knowledge import load
from bridgedoctor.probes.collect import PG_TABLES_JSON, PG_TABLES_SQL
from tests.support.cli import run
from tests.support.pg import PgServer

KB = load()
_n = itertools.count()


def spec(name: str):  # noqa: ANN201 - a BridgeSpec
    return KB.bridges[name]


@pytest.mark.parametrize(
    "value,pin",
    [
        ("custom", DbPin("custom", "custom")),
        ("custom:role_1", DbPin("custom", "role_1")),
        (
            {"database": "d", "user": "u", "host": "db.example.org"},
            DbPin("d", "u", "db.example.org"),
        ),
        ({"database": "d"}, DbPin("d", "d")),
    ],
)
def test_parse_pin(value: object, pin: DbPin) -> None:
    assert parse_pin(value, "slack") == pin


@pytest.mark.parametrize(
    "value",
    ["", "dbname=x host=y", "a b", "postgres://u@h/d", {"db": "x"}, ["x"], "x" * 64,
     {"database": "d", "host": "evil host; rm"}],
)  # fmt: skip
def test_parse_pin_refuses_what_libpq_could_read_as_a_connection_string(value: object) -> None:
    with pytest.raises(ValueError) as e:
        parse_pin(value, "slack")
    assert str(e.value).endswith(".") and "slack" in str(e.value)


def test_parse_pins_from_cli_and_yaml() -> None:
    assert parse_pins(["slack=s:r", "gmessages=g"], "--db-name") == {
        "slack": DbPin("s", "r"),
        "gmessages": DbPin("g", "g"),
    }
    assert parse_pins({"slack": "s"}, "databases") == {"slack": DbPin("s", "s")}
    for bad in (["slack"], ["../etc=x"], {"Slack": "s"}, "slack=s"):
        with pytest.raises(ValueError):
            parse_pins(bad, "databases")


def test_judge_mdad_names() -> None:
    own = judge(spec("gmessages"), "matrix_mautrix_gmessages", "matrix_mautrix_gmessages", KB, {})
    assert own.verdict == "own" and own.pin == DbPin(
        "matrix_mautrix_gmessages", "matrix_mautrix_gmessages"
    )
    for db, user in (
        ("matrix_mautrix_whatsapp", "matrix_mautrix_whatsapp"),
        ("matrix_mautrix_gmessages", "matrix_mautrix_whatsapp"),
        ("matrix_mautrix_whatsapp", "matrix_mautrix_gmessages"),
    ):
        j = judge(spec("gmessages"), db, user, KB, {})
        assert (j.verdict, j.other, j.pin) == ("foreign", "whatsapp", None)
        assert "belongs to the whatsapp bridge" in j.refusal("gmessages", db, user)
    j = judge(spec("gmessages"), "synapse", "synapse", KB, {})
    assert (j.verdict, j.pin) == ("unpinned", None)
    assert "--db-name gmessages=synapse:synapse" in j.refusal("gmessages", "synapse", "synapse")


def test_judge_meta_messenger_in_facebook_mode() -> None:
    name = "matrix_mautrix_meta_facebook"
    assert judge(spec("meta-messenger"), name, name, KB, {}).verdict == "own"
    assert judge(spec("meta-instagram"), name, name, KB, {}).other == "meta-messenger"


def test_judge_with_an_allowlist() -> None:
    pins = {"gmessages": DbPin("gm", "gm_role"), "whatsapp": DbPin("wa", "wa")}
    assert judge(spec("gmessages"), "gm", "gm_role", KB, pins).verdict == "own"
    # The entry replaces MDAD's name for that bridge...
    assert judge(spec("gmessages"), "matrix_mautrix_gmessages", "matrix_mautrix_gmessages", KB,
                 pins).verdict == "unpinned"  # fmt: skip
    # ...and another bridge's entry is foreign to it.
    assert judge(spec("gmessages"), "wa", "wa", KB, pins).other == "whatsapp"


async def _role(pg: PgServer, *sql: str) -> str:
    name = f"pin_{next(_n)}"
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw'")
        await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
        for s in sql:
            await admin.execute(s.format(role=name))
    finally:
        await admin.close()
    return name


async def _verify(pg: PgServer, name: str, pin: DbPin | None) -> None:
    """Both forms of the identity query judge alike (check's asks the table list with it)."""
    c = await asyncpg.connect(host=pg.host, port=pg.port, user=name, password="pw", database=name)
    try:
        await verify(c, pin)
        await verify(c, pin, who_and(PG_TABLES_JSON))
    finally:
        await c.close()


def test_verify_against_a_real_server(pg: PgServer) -> None:
    async def go() -> None:
        plain = await _role(pg)
        await _verify(pg, plain, DbPin(plain, plain))
        await _verify(pg, plain, None)
        with pytest.raises(IdentityRefused, match="not the bridge's own"):
            await _verify(pg, plain, DbPin(plain, "someone_else"))
        for grant, word in (
            ("ALTER ROLE {role} SUPERUSER", "superuser"),
            ("ALTER ROLE {role} CREATEROLE", "CREATEROLE"),
            ("ALTER ROLE {role} BYPASSRLS", "BYPASSRLS"),
            ("GRANT pg_read_server_files TO {role}", "pg_read_server_files"),
            ("GRANT pg_execute_server_program TO {role}", "pg_execute_server_program"),
        ):
            powerful = await _role(pg, grant)
            with pytest.raises(IdentityRefused, match=word):
                await _verify(pg, powerful, DbPin(powerful, powerful))

    asyncio.run(go())


def test_helper_config_databases(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x" * 32)
    token.chmod(0o600)
    base = {"token_file": str(token), "root": str(tmp_path)}
    cfg = parse({**base, "databases": {"slack": "s:r"}}, tmp_path / "h.yaml")
    assert cfg.databases == {"slack": DbPin("s", "r")}
    with pytest.raises(ConfigError) as e:
        parse({**base, "databases": {"slack": "dbname=x host=y"}}, tmp_path / "h.yaml")
    assert "plain identifier" in str(e.value)


def test_cli_db_name_is_checked(tmp_path: Path, capsys) -> None:
    code, out = run(capsys, "check", "slack", "--root", str(tmp_path), "--db-name", "slack")
    assert code == 2 and "BRIDGE=DATABASE[:ROLE]" in out


def test_the_table_list_comes_with_the_identity(pg: PgServer) -> None:
    """The same names as the plain table list, whatever the bridge called its tables, and the
    role's own search_path and functions change nothing (every name is qualified)."""

    async def go() -> tuple[list[str], list[str]]:
        name = await _role(pg)
        c = await asyncpg.connect(
            host=pg.host, port=pg.port, user=name, password="pw", database=name
        )
        try:
            for table in ("crypto_account", 'odd, "name"', "x]"):
                await c.execute(f"CREATE TABLE {quote_ident(table)} (a int)")
            await c.execute(
                "CREATE FUNCTION public.json_agg(anyelement) RETURNS json LANGUAGE sql "
                "AS $$ SELECT '[\"crypto_olm_session\"]'::json $$"
            )
            await c.execute(f"ALTER ROLE {name} SET search_path = public, pg_catalog")
        finally:
            await c.close()
        c = await asyncpg.connect(
            host=pg.host, port=pg.port, user=name, password="pw", database=name
        )
        try:
            listed = await verify(c, DbPin(name, name), who_and(PG_TABLES_JSON))
            plain = [r[0] for r in await c.fetch(PG_TABLES_SQL)]
        finally:
            await c.close()
        return sorted(json.loads(listed)), sorted(plain)

    listed, plain = asyncio.run(go())
    assert listed == plain == sorted(["crypto_account", 'odd, "name"', "x]"])


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
