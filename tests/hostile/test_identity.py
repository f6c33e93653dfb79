"""The compromised bridge names another bridge's database, a superuser, another server: a check
never connects there, a reset never touches it, and the helper's first query cannot be hijacked."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from tests.fixtures import mdad
from tests.hostile.world import EVIL, SECRET, World

WHATSAPP_DB = mdad.db_name("whatsapp")
OWN_DB = mdad.db_name(EVIL)


def uri(user: str, database: str, extra: str = "") -> str:
    return f"postgres://{user}:whatever@matrix-postgres:5432/{database}{extra}"


def evil_config(w: World, db_uri: str) -> None:
    w.write_config(mdad.render_config(EVIL, db_uri=db_uri))


def codes(report: dict) -> list[str]:
    return [f["code"] for f in report["findings"]]


def test_healthy_bridges_check_and_reset_as_before(world: Callable[..., World]) -> None:
    """The world itself: nothing hostile yet, every bridge checks ok and a full reset of the
    PostgreSQL bridge runs and is undone (the baseline every attack is measured against)."""
    w = world("postgres")
    outside = w.outside()
    assert w.check()["status"] == "ok"
    done = w.reset("full")
    assert done["ok"], done
    assert w.restore(done["result"]["id"])["ok"]
    assert w.check()["status"] == "ok"
    assert w.outside() == outside
    w.alive()


def test_another_bridges_database_is_never_touched(world: Callable[..., World]) -> None:
    w = world("postgres")
    evil_config(w, uri(WHATSAPP_DB, WHATSAPP_DB))
    outside = w.outside()
    report = w.check()
    assert report["status"] == "broken" and codes(report) == ["db_foreign"]
    summary = report["findings"][0]["summary"]
    assert "belongs to the whatsapp bridge" in summary and "did not connect" in summary
    for mode in ("crypto", "full"):
        refused = w.reset(mode)
        assert (
            not refused["ok"] and "belongs to the whatsapp bridge" in refused["error"]["message"]
        )
    assert [c for c in w.sd.calls() if c.startswith("stop")] == []
    assert w.outside() == outside
    w.alive()


def test_another_bridges_role_alone_is_foreign_too(world: Callable[..., World]) -> None:
    """Its own database name, but logging in as whatsapp's role (trusted over the socket)."""
    w = world("postgres")
    evil_config(w, uri(WHATSAPP_DB, OWN_DB))
    outside = w.outside()
    assert codes(w.check()) == ["db_foreign"]
    assert not w.reset("full")["ok"]
    assert w.outside() == outside
    w.alive()


def test_superuser_role_runs_no_query_and_no_trap(world: Callable[..., World]) -> None:
    """The config names the cluster's superuser for its own database, where the attacker has
    set traps: a database-wide search_path putting its own schema first, with functions and an
    operator shadowing what a naive identity query would call. Were any of them run by a
    superuser session, it would write a file with COPY ... TO (superusers only)."""
    w = world("postgres")
    pwned = Path(w.pg.socket_dir or "/nonexistent") / "pwned"  # the server may write there
    pwned.unlink(missing_ok=True)
    trap = (
        f"LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'COPY (SELECT 1) TO ''{pwned}'''; RETURN $1; END $$"
    )
    w.evil_sql(
        "CREATE SCHEMA evil",
        "CREATE FUNCTION evil.eq(name, name) RETURNS boolean "
        + trap.replace("RETURN $1", "RETURN $1 OPERATOR(pg_catalog.=) $2"),
        "CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = evil.eq)",
        f"CREATE FUNCTION evil.current_database() RETURNS name "
        f"LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'COPY (SELECT 1) TO ''{pwned}'''; "
        "RETURN 'x'; END $$",
        f"ALTER DATABASE {OWN_DB} SET search_path = evil, pg_catalog, public",
    )
    evil_config(w, uri(w.pg.user, OWN_DB))
    outside = w.outside()
    report = w.check()
    assert codes(report) == ["db_role_refused"], report
    assert "superuser" in report["findings"][0]["summary"]
    assert not w.reset("crypto")["ok"]
    assert not pwned.exists()
    assert w.outside() == outside
    w.alive()


def test_host_and_user_in_the_query_string_go_nowhere(world: Callable[..., World]) -> None:
    """libpq would honour ?host=&user=&options= in a URI; the helper reads the host from its
    own db_host and the names from the URI's path and user only. A listening socket where the
    query string points sees no connection, and the bridge still checks and resets."""
    w = world("postgres")
    trap_dir = w.root / "evil-pg"
    trap_dir.mkdir()
    trap = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    trap.bind(str(trap_dir / ".s.PGSQL.5432"))
    trap.listen(4)
    trap.settimeout(0.5)
    extra = f"?host={trap_dir}&port=5432&user={WHATSAPP_DB}&options=-csearch_path%3Devil"
    evil_config(w, uri(OWN_DB, OWN_DB, extra))
    outside = w.outside()
    assert w.check()["status"] == "ok"
    done = w.reset("crypto")
    assert done["ok"], done
    try:
        trap.accept()
        raise AssertionError("something connected to the socket the query string named")
    except TimeoutError:
        pass
    finally:
        trap.close()
    assert w.outside() == outside
    w.alive()


def test_connection_string_in_the_database_name_is_refused(world: Callable[..., World]) -> None:
    """A database "name" that libpq tools (pg_dump -d) would read as a connection string."""
    w = world("postgres")
    evil_config(w, uri(OWN_DB, f"dbname%3D{WHATSAPP_DB}%20host%3D{w.pg.socket_dir}"))
    outside = w.outside()
    refused = w.reset("full")
    assert not refused["ok"] and "not gmessages's own database" in refused["error"]["message"]
    assert w.outside() == outside
    w.alive()


def test_root_only_file_fragments_never_reach_the_room(world: Callable[..., World]) -> None:
    """config.yaml linked to root-only files: one holds a database URI with a secret, one
    is an ssh key. Nothing of either appears in any answer or log line."""
    w = world("postgres")
    for target in ("service.yaml", "authorized_keys"):
        w.attack(f"""
            import os
            os.unlink('config/config.yaml')
            os.symlink({str(w.secrets / target)!r}, 'config/config.yaml')
        """)
        for answer in (w.ask("check", bridge=EVIL), w.ask("check_all"), w.reset("full")):
            assert SECRET not in str(answer), answer
        assert codes(w.check()) == ["config_refused"]
    assert SECRET not in w.log()
    w.alive()
