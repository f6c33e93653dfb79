from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.hostile.world import World, make_root, supported
from tests.support.pg import PgServer, TempCluster


@pytest.fixture(scope="package")
def cluster() -> Iterator[PgServer]:
    """A PostgreSQL of the suite's own: MDAD's exact database and role names, reached through
    its socket directory with trust authentication, as MDAD's postgres image allows locally."""
    reason = supported()
    if reason:
        pytest.skip(reason)
    c = TempCluster()
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture
def world(cluster: PgServer) -> Iterator[Callable[..., World]]:
    """`world(engine)`: a fresh host (gmessages compromised, its store on `engine`), with the
    helper running; stopped and removed afterwards."""
    made: list[World] = []

    def make(engine: str = "postgres", start: bool = True) -> World:
        w = World(make_root(), cluster, engine)
        made.append(w)
        w.deploy()
        if start:
            w.start()
        return w

    yield make
    for w in made:
        if w.proc is not None and w.proc.poll() is None:
            w.stop()
        # rm, not shutil.rmtree: the attacker may have nested directories past Python's
        # recursion limit.
        subprocess.run(["rm", "-rf", "--one-file-system", str(w.root)], check=False)
