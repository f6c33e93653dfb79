from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg import PgServer, TempCluster, from_env
from tests.support.reset_env import RESET_UNIT, Systemd, fake_systemd


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


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Systemd:
    """A fake systemctl first on PATH (systemd cannot run here), the reset tests' unit running."""
    sd = fake_systemd(tmp_path)
    for k, v in sd.env().items():
        monkeypatch.setenv(k, v)
    sd.set(RESET_UNIT, "active")
    return sd
