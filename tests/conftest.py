from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pg import PgServer, TempCluster, from_env


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
