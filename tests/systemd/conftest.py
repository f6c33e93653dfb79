"""Session fixtures of the real-systemd tier: the Debian-Python venv, MDAD's PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.nspawn import Machine, MachineError, require
from tests.support.pg import PgServer

from .mdad_host import MdadHost, build_venv, make_host, start_pg


@pytest.fixture(scope="session")
def debian_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """/opt/bridgedoctor made as docs/helper.md says, with Debian's /usr/bin/python3."""
    require()
    work = tmp_path_factory.mktemp("debian-venv")
    made: list[Machine] = []

    def make(tag: str, **kw: object) -> Machine:
        m = Machine(work / f"machine-{tag}", tag=tag, **kw)  # type: ignore[arg-type]
        made.append(m)
        return m

    try:
        yield build_venv(make, work)
    finally:
        for m in made:
            try:
                m.shutdown()
            except MachineError:
                m.power_cut()


@pytest.fixture
def mdad_pg() -> Iterator[PgServer]:
    """PostgreSQL at 127.0.0.N:5432 with its own socket directory, where MDAD's would be; one
    per test, so the bridges' databases have MDAD's exact names (dbpin.py accepts no other)."""
    require()
    cluster, server = start_pg()
    try:
        yield server
    finally:
        cluster.stop()


@pytest.fixture
def mdad_host(
    nspawn: Callable[..., Machine], debian_venv: Path, mdad_pg: PgServer, tmp_path: Path
) -> MdadHost:
    return make_host(nspawn, tmp_path, debian_venv, mdad_pg)


@pytest.fixture
def old_mdad_host(
    nspawn: Callable[..., Machine], debian_venv: Path, mdad_pg: PgServer, tmp_path: Path
) -> MdadHost:
    """A host set up before March 2026: no /matrix/postgres/run."""
    return make_host(nspawn, tmp_path, debian_venv, mdad_pg, socket_dir=False)
