"""`db_host: auto` finds MDAD's Postgres by itself: its socket directory on hosts from March 2026
on, else the matrix-postgres container's address (hosts set up before have no socket directory)."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import sys
import time
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


def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: object, code: int = 0,
                delay: float = 0.0) -> Path:  # fmt: skip
    """A `docker` on PATH (the process boundary) that prints `answer` as `docker inspect`
    would, after `delay` seconds, and records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "answer.json").write_text(json.dumps(answer))
    args = tmp_path / "docker-args"
    (bin_dir / "docker").write_text(
        f"#!{sys.executable}\nimport sys, time\n"
        f"open({str(args)!r}, 'w').write(' '.join(sys.argv[1:]))\n"
        f"time.sleep({delay})\n"
        f"sys.stdout.write(open({str(tmp_path / 'answer.json')!r}).read())\n"
        f"sys.exit({code})\n"
    )
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return args


def container(*networks: object, running: object = True) -> dict[str, object]:
    nets = {f"net{i}": n for i, n in enumerate(networks)}
    return {"State": {"Running": running}, "NetworkSettings": {"Networks": nets}}


@pytest.mark.parametrize(
    ("answer", "address", "network"),
    [
        (
            [container({"IPAddress": "172.18.0.2", "IPPrefixLen": 16})],
            "172.18.0.2",
            "172.18.0.0/16",
        ),
        # No prefix length, or one outside 8..32 (a bool is an int too): the address alone.
        ([container({"IPAddress": "172.18.0.2"})], "172.18.0.2", "172.18.0.2/32"),
        ([container({"IPAddress": "10.1.2.3", "IPPrefixLen": 8})], "10.1.2.3", "10.0.0.0/8"),
        ([container({"IPAddress": "10.1.2.3", "IPPrefixLen": 32})], "10.1.2.3", "10.1.2.3/32"),
        ([container({"IPAddress": "10.1.2.3", "IPPrefixLen": 7})], "10.1.2.3", "10.1.2.3/32"),
        ([container({"IPAddress": "10.1.2.3", "IPPrefixLen": 33})], "10.1.2.3", "10.1.2.3/32"),
        ([container({"IPAddress": "10.1.2.3", "IPPrefixLen": True})], "10.1.2.3", "10.1.2.3/32"),
        ([container({"IPAddress": "10.1.2.3", "IPPrefixLen": "24"})], "10.1.2.3", "10.1.2.3/32"),
        # A network with no usable IPv4 address is passed over for the next one.
        (
            [
                container(
                    {"IPAddress": ""},
                    {"IPAddress": "fd00::2"},
                    "x",
                    {"IPAddress": 5},
                    {"IPAddress": "1.2.3"},
                    {"IPAddress": "1.2.3.4.5"},
                    {"IPAddress": "a.b.c.d"},
                    {"IPAddress": "999.1.1.1", "IPPrefixLen": 24},
                    {"IPAddress": "172.20.0.9", "IPPrefixLen": 24},
                )
            ],
            "172.20.0.9",
            "172.20.0.0/24",
        ),  # fmt: skip
        # A stopped container (listed first) is passed over, not the end of the list.
        (
            [
                container({"IPAddress": "172.18.0.2"}, running=False),
                "not a container",
                container({"IPAddress": "172.19.0.3", "IPPrefixLen": 16}),
            ],
            "172.19.0.3",
            "172.19.0.0/16",
        ),  # fmt: skip
        ([container({"IPAddress": "172.18.0.2"}, running=False)], None, None),
        ([{"NetworkSettings": {"Networks": {"n": {"IPAddress": "172.18.0.2"}}}}], None, None),
        ([{"State": None, "NetworkSettings": None}], None, None),
        (
            [{"State": {"Running": True}, "NetworkSettings": {"Networks": ["172.18.0.2"]}}],
            None,
            None,
        ),
        ([{"State": {"Running": True}, "NetworkSettings": {"Networks": None}}], None, None),
        ({"State": {"Running": True}}, None, None),
        (5, None, None),
        ("172.18.0.2", None, None),
        ([], None, None),
    ],
)
def test_the_container_address_is_read_from_docker_inspect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: object, address: str | None,
    network: str | None,
) -> None:  # fmt: skip
    args = fake_docker(tmp_path, monkeypatch, answer)
    assert postgres.container_address() == address
    assert postgres.container_network() == network
    assert args.read_text() == "inspect matrix-postgres"


def test_docker_failing_or_missing_or_slow_is_no_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = [container({"IPAddress": "172.18.0.2", "IPPrefixLen": 16})]
    fake_docker(tmp_path, monkeypatch, running, code=1)  # e.g. no such container
    assert postgres.container_address() is None
    fake_docker(tmp_path, monkeypatch, running, code=0)
    assert postgres.container_address() == "172.18.0.2"
    (tmp_path / "answer.json").write_text("not json")
    assert postgres.container_address() is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert postgres.container_address() is None
    # A docker that does not answer within INSPECT_TIMEOUT is given up on (it would answer).
    monkeypatch.setattr(postgres, "INSPECT_TIMEOUT", 0.5)
    fake_docker(tmp_path, monkeypatch, running, delay=3)
    started = time.monotonic()
    assert postgres.container_address() is None
    assert time.monotonic() - started < 2.5


def test_the_socket_directory_is_found_and_discovery_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no docker
    run_dir = tmp_path / "postgres" / "run"
    run_dir.mkdir(parents=True)
    assert postgres.socket_dir(tmp_path) is None
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(run_dir / ".s.PGSQL.5432"))
        assert postgres.socket_dir(tmp_path) == run_dir
        assert postgres.discover(tmp_path) == str(run_dir)
        assert postgres.effective("auto", "matrix-postgres", tmp_path) == str(run_dir)
        assert postgres.effective("auto", "db.example.org", tmp_path) is None  # its own host
    (run_dir / ".s.PGSQL.5432").unlink()
    # Within CACHE_SECONDS the first answer stands (one discovery per `check all`) ...
    assert postgres.discover(tmp_path) == str(run_dir)
    # ... and another root is discovered on its own; then the answer ages out.
    assert postgres.discover(tmp_path / "postgres") is None
    fake_docker(tmp_path, monkeypatch, [container({"IPAddress": "172.18.0.2"})])
    assert postgres.discover(tmp_path / "postgres") is None
    monkeypatch.setattr(postgres, "CACHE_SECONDS", 0.0)
    assert postgres.discover(tmp_path) == "172.18.0.2"
    assert postgres._cache[tmp_path][1] == "172.18.0.2"
