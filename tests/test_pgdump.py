"""Full resets of PostgreSQL bridges when the host has no pg_dump as new as the server (MDAD runs
PostgreSQL 18 in `matrix-postgres`; Debian and Ubuntu ship no such client): the dump goes
through the container, with the fake docker at the process boundary running a real pg_dump."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import asyncpg
import pytest

from bridgedoctor.reset import pgdump
from tests.support.cli import run
from tests.support.fleet import DB_PASSWORD, Host
from tests.support.nspawn import FAKE_DOCKER, fake_postgres_conf
from tests.support.pg import PgServer, bindir
from tests.support.reset_env import RESET_BRIDGE, Systemd, state
from tests.test_reset import backup_args, deploy


@pytest.fixture
def pg_host(tmp_path: Path, pg: PgServer) -> Host:
    return deploy(tmp_path, pg, "postgres")


def only_path(monkeypatch: pytest.MonkeyPatch, *dirs: Path) -> None:
    """PATH holds only these directories (and the few tools the fakes use), and no
    /usr/lib/postgresql/*/bin is searched: a host whose only PostgreSQL client is MDAD's."""
    tools = dirs[0].parent / "tools"
    tools.mkdir(exist_ok=True)
    for tool in ("cat", "rm"):
        if not (tools / tool).exists():
            (tools / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    monkeypatch.setenv("PATH", os.pathsep.join(str(d) for d in (*dirs, tools)))
    monkeypatch.setattr(pgdump, "PG_BIN_GLOB", "/nonexistent/*/bin/pg_dump")


def fake_docker(tmp: Path, monkeypatch: pytest.MonkeyPatch, pg: PgServer) -> Path:
    d = tmp / "dockerbin"
    d.mkdir()
    shutil.copy(FAKE_DOCKER, d / "docker")
    conf, runtime = tmp / "fake-docker-conf", tmp / "fake-docker-run"
    conf.mkdir()
    (conf / "matrix-postgres.json").write_text(
        fake_postgres_conf(
            bindir=str(bindir()), host=pg.host, port=pg.port, socket_dir="/nonexistent", ip="-"
        )
    )
    monkeypatch.setenv("FAKE_DOCKER_CONF", str(conf))
    monkeypatch.setenv("FAKE_DOCKER_RUN", str(runtime))
    return d


def test_full_reset_dumps_inside_matrix_postgres_without_a_host_pg_dump(
    pg_host: Host, pg: PgServer, systemd: Systemd, tmp_path: Path, monkeypatch, capsys
) -> None:
    docker = fake_docker(tmp_path, monkeypatch, pg)
    only_path(monkeypatch, systemd.bin, docker)
    before = state(pg_host, RESET_BRIDGE)
    args = [*pg_host.args(), *backup_args(tmp_path)]
    code, text = run(capsys, "reset", RESET_BRIDGE, "--mode", "full", "--yes", *args)
    assert code == 0, text
    calls = [json.loads(line) for line in (tmp_path / "fake-docker-run" / "calls.log").open()]
    dumps = [c for c in calls if c[:1] == ["exec"]]
    assert len(dumps) == 2  # pre-data and post-data
    for c in dumps:
        # The bridge's own user and its own view of the server; the password only via -e.
        assert c[:6] == ["exec", "-e", "PGPASSWORD", "-e", "PGSSLMODE", "matrix-postgres"]
        assert c[6] == "pg_dump" and c[7:9] == ["-h", "matrix-postgres"]
        assert not any(DB_PASSWORD in a for a in c)
    (backup,) = (p.parent for p in (tmp_path / "backups" / RESET_BRIDGE).glob("*/manifest.json"))
    assert "CREATE TABLE" in (backup / "schema-pre.sql").read_text()
    assert state(pg_host, RESET_BRIDGE)["tables"] == {}
    ident = backup.name
    code, text = run(capsys, "restore", RESET_BRIDGE, ident, "--yes", *args)
    assert code == 0, text
    assert state(pg_host, RESET_BRIDGE) == before


async def _server_major(pg: PgServer) -> int:
    conn = await asyncpg.connect(pg.dsn("postgres"))
    try:
        return int((await conn.fetchval("SELECT version()")).split()[1].split(".")[0])
    finally:
        await conn.close()


def test_no_pg_dump_and_no_container_refuses_with_nothing_changed(
    pg_host: Host, pg: PgServer, systemd: Systemd, tmp_path: Path, monkeypatch, capsys
) -> None:
    only_path(monkeypatch, systemd.bin)
    before = state(pg_host, RESET_BRIDGE)
    code, text = run(
        capsys, "reset", RESET_BRIDGE, "--mode", "full", "--yes", *pg_host.args(),
        *backup_args(tmp_path),
    )  # fmt: skip
    assert code == 1
    major = asyncio.run(_server_major(pg))  # asked here, not taken from our code
    assert f"no pg_dump for PostgreSQL {major} on this host" in text
    assert f"install postgresql-client-{major}. Nothing was changed." in text
    assert state(pg_host, RESET_BRIDGE) == before
    unit = f"matrix-mautrix-{RESET_BRIDGE}.service"
    assert systemd.get(unit) == "active"
    assert f"stop {unit}" not in systemd.calls()  # told by the plan, before any stop


def test_a_host_pg_dump_is_asked_its_version(tmp_path: Path, monkeypatch) -> None:
    """Debian's /usr/bin/pg_dump is a wrapper with no version in its path: an older client must
    not be taken for a match (pg_dump refuses newer servers)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 15.14'\n")
    (bin_dir / "pg_dump").chmod(0o755)
    only_path(monkeypatch, bin_dir)
    assert pgdump.host_pg_dump(18) is None
    assert pgdump.host_pg_dump(15) == str(bin_dir / "pg_dump")


@pytest.mark.parametrize(
    ("num", "major"), [(180001, 18), (150018, 15), (150002, 15), (170000, 17), (90624, 9)]
)
def test_the_servers_major_is_its_version_number_over_ten_thousand(num: int, major: int) -> None:
    """MDAD's PostgreSQL 18.1 is 180001: an early minor must not read as the major before."""
    assert pgdump.major_of(num) == major
