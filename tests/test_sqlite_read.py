"""probes/sqlite_read.py: the store is read in a child that is killed when it takes too long, and
whose answer counts only if SQLite read the file that was checked."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from bridgedoctor.facts import DbFacts, ProbeError
from bridgedoctor.probes import sqlite_read
from tests.support.fleet import mdad_default_key
from tests.support.store import StoreSpec, write_sqlite


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "mautrix-x" / "data" / "mautrix-x.db"
    path.parent.mkdir(parents=True)
    write_sqlite(path, StoreSpec("whatsapp", account_key=mdad_default_key("whatsapp")))
    return path


def children() -> set[int]:
    """Our SQLite reader children (other fixtures may have children of their own)."""
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                parent = Path(f"/proc/{pid}/stat").read_text().split()[3]
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if parent == me and sqlite_read.CHILD.encode() in cmdline:
                out.add(int(pid))
    return out


def test_reads_a_store(store: Path) -> None:
    facts = asyncio.run(sqlite_read.probe(store, store.parents[1]))
    assert isinstance(facts, DbFacts) and facts.accounts and "crypto_account" in facts.tables
    assert facts.location == str(store)


def test_a_locked_store_is_given_up_and_the_child_killed(store: Path) -> None:
    """A writer holding an exclusive lock makes the reader wait; the parent stops waiting at
    its own deadline and the child is gone, not left behind."""
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")
    try:
        before = children()
        started = time.monotonic()
        result = asyncio.run(sqlite_read.probe(store, store.parents[1], timeout=1.0))
        assert time.monotonic() - started < 4
        assert isinstance(result, ProbeError) and "took longer than 1 s" in result.message
        assert children() == before
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_refusals_come_back_as_one_sentence(store: Path, tmp_path: Path) -> None:
    link = store.with_name("link.db")
    link.symlink_to(store)
    result = asyncio.run(sqlite_read.probe(link, store.parents[1]))
    assert isinstance(result, ProbeError) and result.code == "db_refused"
    assert "symbolic link" in result.message
    result = asyncio.run(sqlite_read.probe(store.with_name("nope.db"), store.parents[1]))
    assert isinstance(result, ProbeError) and result.message.endswith("does not exist.")
    garbage = store.with_name("garbage.db")
    garbage.write_bytes(b"not a database" * 100)
    result = asyncio.run(sqlite_read.probe(garbage, store.parents[1]))
    assert isinstance(result, ProbeError) and "file is not a database" in result.message


def test_the_child_ignores_the_current_directory(store: Path, tmp_path: Path) -> None:
    """A `bridgedoctor` package planted where the helper or the CLI happens to run (a bridge's
    data directory, say) is not what the child imports."""
    planted = tmp_path / "cwd" / "bridgedoctor"
    planted.mkdir(parents=True)
    pwned = tmp_path / "pwned"
    (planted / "__init__.py").write_text(f"open({str(pwned)!r}, 'w').write('x')\n")
    old = os.getcwd()
    os.chdir(planted.parent)
    try:
        assert isinstance(asyncio.run(sqlite_read.probe(store, store.parents[1])), DbFacts)
    finally:
        os.chdir(old)
    assert not pwned.exists()


def test_at_most_a_few_children_at_once(store: Path) -> None:
    async def go() -> int:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(children()))
                await asyncio.sleep(0.005)

        w = asyncio.create_task(watch())
        results = await asyncio.gather(
            *(sqlite_read.probe(store, store.parents[1]) for _ in range(12))
        )
        w.cancel()
        assert all(isinstance(r, DbFacts) for r in results)
        return peak

    assert 1 <= asyncio.run(go()) <= sqlite_read.MAX_CHILDREN


def _forks_of(pid: int) -> set[int]:
    out = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(p))
            except (OSError, IndexError, ValueError):
                continue
    return out


def test_a_fleet_forks_every_reader_from_one_server(store: Path, tmp_path: Path) -> None:
    """Inside fleet(): one interpreter (the fork server) for all the stores, each read in a
    fork of its own with the same facts as a child of its own; nothing left afterwards."""
    before = children()
    alone = asyncio.run(sqlite_read.probe(store, store.parents[1]))

    async def go() -> tuple[list[object], set[int]]:
        async with sqlite_read.fleet():
            results = await asyncio.gather(
                *(sqlite_read.probe(store, store.parents[1]) for _ in range(6))
            )
            return list(results), children() - before

    results, servers = asyncio.run(go())
    assert isinstance(alone, DbFacts) and results == [alone] * 6
    assert len(servers) == 1  # started once, and still there until the fleet ends
    assert children() == before


def test_in_a_fleet_a_locked_store_is_given_up_and_its_fork_killed(
    store: Path, tmp_path: Path
) -> None:
    """The deadline holds for a forked reader too: it is killed and reaped, and the next store
    of the same fleet is read as usual."""
    other = tmp_path / "mautrix-y" / "data" / "mautrix-y.db"
    other.parent.mkdir(parents=True)
    write_sqlite(other, StoreSpec("signal", account_key=mdad_default_key("signal")))
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")
    before = children()

    async def go() -> tuple[object, object, set[int]]:
        async with sqlite_read.fleet():
            slow = await sqlite_read.probe(store, store.parents[1], timeout=1.0)
            fine = await sqlite_read.probe(other, other.parents[1])
            (server,) = children() - before
            return slow, fine, _forks_of(server)

    try:
        started = time.monotonic()
        slow, fine, left = asyncio.run(go())
        assert time.monotonic() - started < 6
        assert isinstance(slow, ProbeError) and "took longer than 1 s" in slow.message
        assert isinstance(fine, DbFacts) and fine.location == str(other)
        assert left == set()  # the killed reader was reaped, not left behind
        assert children() == before
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_fleet_whose_server_dies_reads_each_store_in_a_child_of_its_own(store: Path) -> None:
    before = children()

    async def go() -> tuple[object, object]:
        async with sqlite_read.fleet():
            first = await sqlite_read.probe(store, store.parents[1])
            for pid in children() - before:
                os.kill(pid, 9)
            await asyncio.sleep(0.2)
            return first, await sqlite_read.probe(store, store.parents[1])

    first, second = asyncio.run(go())
    assert isinstance(first, DbFacts) and second == first
    assert children() == before
