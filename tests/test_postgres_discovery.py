"""`db_host: auto` finds MDAD's Postgres by itself: its socket directory on hosts from March 2026
on, else the matrix-postgres container's address (hosts set up before have no socket directory)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from bridgedoctor.probes import postgres
from tests.support.cli import run_json
from tests.support.fleet import Host
from tests.support.nspawn import FAKE_DOCKER, fake_postgres_conf
from tests.support.pg import PgServer
from tests.support.store import StoreSpec

_counter = itertools.count()


@pytest.fixture(autouse=True)
def fresh_discovery() -> None:
    postgres._cache.clear()


@pytest.fixture
def host(tmp_path: Path, pg: PgServer) -> Host:
    if not pg.socket_dir:
        pytest.skip("external PostgreSQL (BRIDGEDOCTOR_TEST_PG): no socket directory known")
    h = Host.at(tmp_path, pg)
    # StoreSpec's default key is MDAD's gvoice default: this bridge checks "ok" when reached.
    h.add("gvoice", StoreSpec("gvoice"), db_prefix=f"disc{next(_counter)}_")
    return h


def no_db_host(host: Host) -> list[str]:
    """The CLI arguments an admin types: no --db-host at all."""
    return ["--root", str(host.root), "--systemd-dir", str(host.systemd)]


def test_socket_directory_under_root(host: Host, pg: PgServer, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no docker: only the socket directory can work
    run_dir = host.root / "postgres" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / ".s.PGSQL.5432").symlink_to(Path(pg.socket_dir or "") / f".s.PGSQL.{pg.port}")
    code, report = run_json(capsys, "check", "gvoice", *no_db_host(host))
    assert (code, report["status"]) == (0, "ok"), report
    assert postgres.discover(host.root) == str(run_dir)


def test_container_address_on_older_hosts(
    host: Host, pg: PgServer, tmp_path: Path, monkeypatch, capsys
) -> None:
    # No <root>/postgres/run: ask docker where matrix-postgres is (fake docker, real server).
    bin_dir, conf = tmp_path / "bin", tmp_path / "fake-docker"
    bin_dir.mkdir()
    conf.mkdir()
    shutil.copy(FAKE_DOCKER, bin_dir / "docker")
    (conf / "matrix-postgres.json").write_text(
        fake_postgres_conf(bindir="-", host="-", socket_dir="-", ip=pg.host)
    )
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_DOCKER_CONF", str(conf))
    monkeypatch.setenv("FAKE_DOCKER_RUN", str(tmp_path / "fake-docker-run"))
    # The test server is not on 5432: the config names its port, as the container's would.
    config = host.root / "mautrix-gvoice" / "config" / "config.yaml"
    config.write_text(
        config.read_text().replace("@matrix-postgres:5432/", f"@matrix-postgres:{pg.port}/")
    )
    code, report = run_json(capsys, "check", "gvoice", *no_db_host(host))
    assert (code, report["status"]) == (0, "ok"), report
    assert postgres.discover(host.root) == pg.host


def test_only_matrix_postgres_is_redirected(tmp_path: Path) -> None:
    (tmp_path / "postgres" / "run").mkdir(parents=True)
    assert postgres.effective("auto", "db.example.org", tmp_path) is None
    assert postgres.effective("10.0.0.5:5433", "matrix-postgres", tmp_path) == "10.0.0.5:5433"
    assert postgres.effective(None, "matrix-postgres", tmp_path) is None


def test_a_stopped_container_or_no_socket_is_not_an_address(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        '#!/bin/sh\necho \'[{"State": {"Running": false}, "NetworkSettings": '
        '{"Networks": {"matrix-postgres": {"IPAddress": "172.18.0.2"}}}}]\'\n'
    )
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    (tmp_path / "postgres" / "run").mkdir(parents=True)
    (tmp_path / "postgres" / "run" / ".s.PGSQL.5432").write_text("not a socket")
    assert postgres.discover(tmp_path) is None
