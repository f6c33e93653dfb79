from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.support.nspawn import Machine, MachineError, require
from tests.support.pg import PgServer, TempCluster, from_env
from tests.support.reset_env import RESET_UNIT, Systemd, fake_systemd, harness_processes

# No example database, ever: every run (local, CI, mutation testing) finds its failing examples
# from scratch, so a property test cannot look stronger than it is thanks to examples that an
# earlier failing run saved in .hypothesis/.
settings.register_profile("bridgedoctor", database=None)
settings.load_profile("bridgedoctor")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No SQLite fork server outlives a test session: it is a child of this process, kept for
    the process's life, and a runner that forks workers from this process after the session
    (mutmut) and then waits for any child would reap it as one of its own."""
    from bridgedoctor.probes import sqlite_read

    sqlite_read.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test with real Synapse and maubot")


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """A real PostgreSQL: BRIDGEDOCTOR_TEST_PG if set, else a throwaway cluster we start."""
    server = from_env()
    if server is not None:
        yield server
        return
    cluster = TempCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session", autouse=True)
def no_bridge_left_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The session fails if a unit's process (a stand-in bridge) started under its temporary
    directory outlives it: a harness that forgot to stop one is a bug, not noise."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    left = harness_processes(base, exact=False, units_only=True)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    assert not left, f"stand-in bridges left running by the tests: {left}"


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Systemd]:
    """A fake systemctl first on PATH (systemd cannot run here), the reset tests' unit running.
    Afterwards every process started under it is killed (stand-in bridges of units left
    active, CLIs a test gave up on); one that survives fails the test."""
    sd = fake_systemd(tmp_path)
    for k, v in sd.env().items():
        monkeypatch.setenv(k, v)
    sd.set(RESET_UNIT, "active")
    yield sd
    sd.kill()


@pytest.fixture
def nspawn(tmp_path: Path) -> Iterator[Callable[..., Machine]]:
    """Make real-systemd containers (tests/support/nspawn.py); all are shut down afterwards."""
    require()
    made: list[Machine] = []

    def make(tag: str = "test", **kw: Any) -> Machine:
        m = Machine(tmp_path / f"machine-{len(made)}", tag=tag, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        try:
            m.shutdown()
        except MachineError:
            m.power_cut()
