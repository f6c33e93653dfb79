"""probes/sqlite_read.py: the store is read in a child that is killed when it takes too long, and
whose answer counts only if SQLite read the file that was checked."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgedoctor.facts import DbFacts, ProbeError
from bridgedoctor.probes import sqlite_read, sqlite_zygote
from tests.support.fleet import mdad_default_key, sqlite_store
from tests.support.store import StoreSpec, write_sqlite


@pytest.fixture(autouse=True)
def fresh_server() -> Iterator[None]:
    """Each test starts without the process's fork server and leaves none behind."""
    sqlite_read.stop()
    yield
    sqlite_read.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return sqlite_store(tmp_path / "mautrix-x" / "data" / "mautrix-x.db")


def children() -> set[int]:
    """Our SQLite reader children: the fork server, or a reader of its own (other fixtures may
    have children of their own)."""
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                parent = Path(f"/proc/{pid}/stat").read_text().split()[3]
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if parent == me and (
                sqlite_read.CHILD.encode() in cmdline or sqlite_read.ZYGOTE.encode() in cmdline
            ):
                out.add(int(pid))
    return out


def test_reads_a_store(store: Path) -> None:
    facts = asyncio.run(sqlite_read.probe(store, store.parents[1]))
    assert isinstance(facts, DbFacts) and facts.accounts and "crypto_account" in facts.tables
    assert facts.location == str(store) and facts.kind == "sqlite"
    assert facts.versions == {"version": 29, "mx_version": 11, "crypto_version": 21}
    assert facts.owner == "megabridge/mautrix-whatsapp"
    (account,) = facts.accounts
    assert (account.account_id, account.device_id) == ("", "BRIDGEDEV1")
    with contextlib.closing(sqlite3.connect(store)) as conn:
        assert account.pickle == conn.execute("SELECT account FROM crypto_account").fetchone()[0]


@pytest.mark.parametrize(
    ("out", "status", "answer"),
    [
        (b'{"result": {"x": 1}}', 0, {"x": 1}),
        (b'{"result": {"x": 1}}', None, {"x": 1}),  # a fork's: its exit status is the server's
        (b'{"error": "db_refused", "message": "m"}', 0, ProbeError("db_refused", "m")),
        (b'{"result": {"x": 1}}', 3, "exited with status 3"),
        (b'{"result": {"x": 1}}', -9, "exited with status -9"),
        (b"", 0, "ended without an answer"),
        (b"", None, "ended without an answer"),
        (b'{"result": {"x"', None, "ended without an answer"),  # cut short
        (b"[1, 2]", 0, "ended without an answer"),
        (b'{"x": 1}', 0, "ended without an answer"),
        (b"null", 0, "ended without an answer"),
    ],
)
def test_a_readers_answer_is_taken_only_whole(
    out: bytes, status: int | None, answer: object
) -> None:
    path = Path("/srv/x.db")
    got = sqlite_read._answer(path, out, status)
    if isinstance(answer, str):
        answer = ProbeError("db_unreachable", f"reading {path} failed (the reader {answer}).")
    assert got == answer


def test_a_readers_answer_is_bounded() -> None:
    """Up to MAX_OUTPUT bytes; past it, however well formed, no answer."""
    path = Path("/srv/x.db")
    head, tail = b'{"result": "', b'"}'
    fill = sqlite_read.MAX_OUTPUT - len(head) - len(tail)
    assert sqlite_read._answer(path, head + b"x" * fill + tail, 0) == "x" * fill
    assert sqlite_read._answer(path, head + b"x" * (fill + 1) + tail, 0) == ProbeError(
        "db_unreachable", f"reading {path} failed (the reader ended without an answer)."
    )


def test_text_that_is_not_utf8_is_read_replaced_not_a_failed_read(store: Path) -> None:
    """The bridge writes its database: an owner of bytes that are not UTF-8 (SQLite keeps a
    TEXT column's bytes as given) is shown replaced; the store still reads."""
    with contextlib.closing(sqlite3.connect(store)) as conn:
        conn.execute("DELETE FROM database_owner")
        conn.execute("INSERT INTO database_owner (key, owner) VALUES (0, CAST(? AS TEXT))",
                     (b"mautrix-\xffwhatsapp",))  # fmt: skip
        conn.commit()
    facts = asyncio.run(sqlite_read.probe(store, store.parents[1]))
    assert isinstance(facts, DbFacts), facts
    assert facts.owner == "mautrix-\ufffdwhatsapp" and facts.accounts


def test_a_locked_store_is_given_up_and_the_child_killed(store: Path) -> None:
    """A writer holding an exclusive lock makes the reader wait; the parent stops waiting at
    its own deadline and the child is gone, not left behind."""
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        result = asyncio.run(sqlite_read.probe(store, store.parents[1], timeout=1.0))
        assert time.monotonic() - started < 4
        assert result == ProbeError(
            "db_unreachable",
            f"reading {store} took longer than 1 s and was stopped (a FIFO or a file system "
            "that hangs?).",
        )
        (server,) = children()
        assert _reaped(server)  # killed and reaped by the server at our word
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
    assert result.code == "db_unreachable"  # SQLite's own refusal: not ours, not an attack


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


def test_a_read_leaves_no_file_behind(store: Path) -> None:
    """A read writes nothing: not in the fork server's working directory (/, where a misspelt
    in-memory database name would become a file; root may write there) nor beside the store."""
    before = (sorted(os.listdir("/")), sorted(os.listdir(store.parent)))
    assert isinstance(asyncio.run(sqlite_read.probe(store, store.parents[1])), DbFacts)
    sqlite_read.stop()
    assert (sorted(os.listdir("/")), sorted(os.listdir(store.parent))) == before


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


def _reaped(server: int) -> bool:
    """The server has no reader left but those it forks ahead, all waiting (a reap request is
    not answered: it is done soon after)."""
    deadline = time.monotonic() + 2
    while not _only_ready(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    return _only_ready(server)


def _only_ready(server: int) -> bool:
    forks = _forks_of(server)
    return len(forks) == sqlite_zygote.READY and all(_state(p) == "S" for p in forks)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _busy(server: int) -> int:
    """The server's readers at work: their stdout is our answer pipe (a reader forked ahead
    and waiting has /dev/null there)."""
    n = 0
    for pid in _forks_of(server):
        try:
            n += os.readlink(f"/proc/{pid}/fd/1").startswith("pipe:")
        except OSError:
            continue
    return n


def test_at_most_a_few_readers_at_once(store: Path) -> None:
    """At most MAX_CHILDREN read at once per event loop (each holds its own memory): with the
    store locked, every read waits until its deadline, so each wave fills every slot."""
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")

    async def go() -> int:
        sqlite_read._server()
        (server,) = children()
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, _busy(server))
                await asyncio.sleep(0.01)

        w = asyncio.create_task(watch())
        n = 2 * sqlite_read.MAX_CHILDREN
        results = await asyncio.gather(
            *(sqlite_read.probe(store, store.parents[1], timeout=0.5) for _ in range(n))
        )
        w.cancel()
        assert all(isinstance(r, ProbeError) for r in results)
        return peak

    try:
        assert asyncio.run(go()) == sqlite_read.MAX_CHILDREN
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_every_read_is_a_fork_of_one_server_kept_for_the_process(store: Path) -> None:
    """One interpreter (the fork server) for every read of the process, across event loops
    (a helper's checks), each read in a fork of its own with the same facts as a reader
    started on its own; `stop` ends the server and its forks."""
    alone = asyncio.run(sqlite_read._child(store, store.parents[1], 20.0, "facts", b""))
    assert isinstance(alone, dict)

    async def go(n: int) -> list[object]:
        return list(
            await asyncio.gather(*(sqlite_read.probe(store, store.parents[1]) for _ in range(n)))
        )

    assert children() == set()
    first = asyncio.run(go(6))
    servers = children()
    second = asyncio.run(go(2))
    assert len(servers) == 1 and children() == servers  # the same server, still there
    assert first + second == [sqlite_read._decode(alone)] * 8
    (server,) = servers
    assert _reaped(server)  # every fork
    sqlite_read.stop()
    assert children() == set() and _state(server) is None


def test_a_started_read_is_at_work_before_its_answer_is_asked_for(store: Path) -> None:
    """`start` hands the store to a reader at once (a check then parses its other files, and
    a fleet its other bridges, while the store is read); `close` gives the read up."""
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")

    async def go() -> int:
        read = await sqlite_read.start(store, store.parents[1], timeout=0.5)
        try:
            (server,) = children()
            deadline = time.monotonic() + 2
            while not _busy(server) and time.monotonic() < deadline:
                time.sleep(0.01)  # not on the loop: nothing of ours runs meanwhile
            return _busy(server)
        finally:
            read.close()

    try:
        assert asyncio.run(go()) == 1
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_reads_given_up_free_their_slots(store: Path) -> None:
    async def go() -> object:
        for _ in range(3):
            reads = [
                await sqlite_read.start(store, store.parents[1])
                for _ in range(sqlite_read.MAX_CHILDREN)
            ]
            for read in reads:
                read.close()
        return await asyncio.wait_for(sqlite_read.probe(store, store.parents[1]), 10)

    assert isinstance(asyncio.run(go()), DbFacts)


def test_in_a_fleet_a_locked_store_is_given_up_and_its_fork_killed(
    store: Path, tmp_path: Path
) -> None:
    """The deadline holds for a forked reader too: it is killed and reaped, and the next store
    is read as usual."""
    other = tmp_path / "mautrix-y" / "data" / "mautrix-y.db"
    other.parent.mkdir(parents=True)
    write_sqlite(other, StoreSpec("signal", account_key=mdad_default_key("signal")))
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")

    async def go() -> tuple[object, object, bool]:
        slow = await sqlite_read.probe(store, store.parents[1], timeout=1.0)
        fine = await sqlite_read.probe(other, other.parents[1])
        (server,) = children()
        return slow, fine, _reaped(server)

    try:
        started = time.monotonic()
        slow, fine, left = asyncio.run(go())
        assert time.monotonic() - started < 6
        assert isinstance(slow, ProbeError) and "took longer than 1 s" in slow.message
        assert isinstance(fine, DbFacts) and fine.location == str(other)
        assert left  # the killed reader was reaped, not left behind
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_fork_whose_parent_stopped_waiting_ends_at_its_alarm(store: Path) -> None:
    """A read we gave up before its pid came (a cancelled check) is not left to wait on the
    bridge's lock: its own alarm ends it shortly after its deadline, and the server reaps it
    at its next request, although we never asked."""
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")  # the reader's busy wait (5 s) outlasts the alarm
    try:
        server = sqlite_read._server()
        assert server is not None
        r, w = os.pipe()
        try:
            assert server.request(store, store.parents[1], 1.0, w)
            os.close(w)
            pid = int(os.read(r, 32).split(b"\n")[0])
        finally:
            os.close(r)  # we stop waiting, and never reap it
        time.sleep(0.3)
        assert _state(pid) in ("R", "S")  # alive, waiting on the lock
        deadline = time.monotonic() + 1.0 + sqlite_zygote._ALARM_GRACE + 0.7
        while _state(pid) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(pid) in (None, "Z"), "the abandoned reader outlived its alarm"
        assert time.monotonic() < deadline
        assert isinstance(asyncio.run(sqlite_read.probe(store, store.parents[1], 0.5)), ProbeError)
        assert _state(pid) is None  # reaped at that request
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@contextlib.contextmanager
def _reader_at_work(store: Path) -> Iterator[tuple[sqlite_read._Server, int]]:
    """A read of the store, locked so that it lasts (30 s allowed): the server, the fork's pid."""
    with _locked(store):
        server = sqlite_read._server()
        assert server is not None
        r, w = os.pipe()
        try:
            assert server.request(store, store.parents[1], 30.0, w)
            os.close(w)
            yield server, int(os.read(r, 32).split(b"\n")[0])
        finally:
            os.close(r)


def test_stopping_the_server_kills_a_reader_at_work_at_once(store: Path) -> None:
    """At end of input (the process stops its server, or exits) the server kills the readers it
    still has, then exits 0: one at work on a locked store goes at once, not at SQLite's busy
    wait (5 s) or its alarm (its deadline, 30 s here)."""
    with _reader_at_work(store) as (server, pid):
        time.sleep(0.3)
        assert _state(pid) in ("R", "S")  # alive, waiting on the lock
        sqlite_read.stop()
        deadline = time.monotonic() + 2
        while _state(pid) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(pid) in (None, "Z"), "the reader outlived its server"
        assert server.proc.returncode == 0  # its clean-up ran to its end (stderr is gone)


def test_a_reader_that_fails_at_once_touches_no_other_read(store: Path) -> None:
    """A reader whose parent gave up before it could write its pid (the pipe's read end closed)
    fails at its first write: it exits there and then, and the read another reader is at (a
    locked store, so it lasts) goes on. A fork must never run on as the server, whose list of
    readers it still holds."""
    with _reader_at_work(store) as (server, pid):
        gone_r, gone_w = os.pipe()
        os.close(gone_r)
        assert server.request(store, store.parents[1], 30.0, gone_w)
        os.close(gone_w)
        time.sleep(0.5)
        assert _state(pid) in ("R", "S"), "a failing reader ended another read"


def test_a_server_that_dies_is_replaced_and_the_read_still_answered(store: Path) -> None:
    async def go() -> tuple[object, object, set[int], set[int]]:
        first = await sqlite_read.probe(store, store.parents[1])
        old = children()
        for pid in old:
            os.kill(pid, 9)
        await asyncio.sleep(0.2)
        second = await sqlite_read.probe(store, store.parents[1])
        return first, second, old, children()

    first, second, old, new = asyncio.run(go())
    assert isinstance(first, DbFacts) and second == first
    assert len(old) == 1 and len(new) == 1 and new != old


def _kill_servers(n: int) -> None:
    """`n` servers in a row die before they fork a reader."""
    for _ in range(n):
        server = sqlite_read._server()
        assert server is not None
        server.proc.kill()
        server.proc.wait()


def test_a_server_that_keeps_failing_is_given_up_for_readers_of_their_own(store: Path) -> None:
    """After MAX_SERVER_FAILURES servers in a row died, each read starts a reader of its own,
    and answers as well."""
    _kill_servers(sqlite_read.MAX_SERVER_FAILURES)
    assert sqlite_read._server() is None
    answers = [asyncio.run(sqlite_read.probe(store, store.parents[1])) for _ in range(2)]
    assert all(isinstance(a, DbFacts) for a in answers) and answers[0] == answers[1]
    assert sqlite_read._SERVER is None and children() == set()


def test_failures_count_in_a_row(store: Path) -> None:
    """A read through a server clears the failures before it: deaths spread over a helper's
    months do not end the server for good."""
    _kill_servers(sqlite_read.MAX_SERVER_FAILURES - 1)
    assert isinstance(asyncio.run(sqlite_read.probe(store, store.parents[1])), DbFacts)
    _kill_servers(sqlite_read.MAX_SERVER_FAILURES - 1)
    assert sqlite_read._server() is not None


def test_a_reader_forked_ahead_that_died_waiting_is_passed_over(store: Path) -> None:
    """The server hands the store to the next reader, and stays the same server."""

    async def go() -> tuple[list[object], set[int], set[int]]:
        sqlite_read._server()
        servers = children()
        (server,) = servers
        while not _only_ready(server):
            await asyncio.sleep(0.01)
        dead = _forks_of(server)
        for pid in dead:
            os.kill(pid, 9)  # every reader waiting, dead (and its end of the socket closed)
        while any(_state(pid) not in (None, "Z") for pid in dead):
            await asyncio.sleep(0.01)
        answers = [await sqlite_read.probe(store, store.parents[1]) for _ in range(3)]
        return answers, servers, children()

    answers, before, after = asyncio.run(go())
    assert all(isinstance(a, DbFacts) for a in answers) and answers[0] == answers[2]
    assert after == before


def test_the_fork_server_imports_nothing_a_read_does_not_need() -> None:
    """Its start is on a fleet check's path: no event loop, no YAML, no dataclasses, no typing,
    not the facts classes (every reader is a fork of it, so they would cost every fork too)."""
    code = (
        f"import sys; sys.path[:0] = {sqlite_read._import_path()!r}; "
        f"import {sqlite_read.ZYGOTE}; print(' '.join(sorted(sys.modules)))"
    )
    r = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.split())
    assert {"sqlite3", "json", sqlite_read.ZYGOTE, sqlite_read.CHILD} <= loaded
    heavy = {"asyncio", "ruamel", "yaml", "dataclasses", "typing", "base64", "bridgedoctor.facts"}
    assert loaded & heavy == set()


def test_checks_stopped_at_their_deadline_give_their_reads_up(tmp_path: Path) -> None:
    """A fleet check whose bridges are all cut off at their deadline (their stores locked)
    leaves no read holding a slot: the next check on the same event loop (the helper's) reads
    every store."""
    from bridgedoctor.diagnose import Options, check_all
    from tests.support.fleet import Host

    host = Host.at(tmp_path)
    names = ["discord", "gvoice", "linkedin", "signal", "slack", "whatsapp"]
    for name in names:
        host.add(name, StoreSpec(name, account_key=mdad_default_key(name)), engine="sqlite")
    writers = []
    for db in host.root.glob("mautrix-*/data/*.db"):
        w = sqlite3.connect(db, isolation_level=None)
        w.execute("PRAGMA journal_mode=DELETE")
        w.execute("BEGIN EXCLUSIVE")
        writers.append(w)
    assert len(writers) == len(names) > sqlite_read.MAX_CHILDREN

    async def go() -> tuple[list[str], list[str]]:
        opts = Options(root=host.root, systemd_dir=host.systemd)
        stopped = await check_all(dataclasses.replace(opts, bridge_timeout=0.3))
        for w in writers:
            w.execute("ROLLBACK")
        after = await asyncio.wait_for(check_all(opts), 30)
        return [r.findings[0].code for r in stopped.reports], [r.status for r in after.reports]

    try:
        stopped, after = asyncio.run(go())
    finally:
        for w in writers:
            w.close()
    assert stopped == ["check_timeout"] * len(names)
    assert after == ["ok"] * len(names)


def test_a_check_stopped_before_its_read_was_awaited_gives_the_read_up(tmp_path: Path) -> None:
    """Stopped right after handing its store over (its deadline, just then): the read is given
    up with it, and its slot is free at once, not when the read would have ended."""
    from bridgedoctor import diagnose
    from bridgedoctor.knowledge import load
    from tests.support.fleet import Host

    host = Host.at(tmp_path)
    host.add(
        "signal", StoreSpec("signal", account_key=mdad_default_key("signal")), engine="sqlite"
    )
    (db,) = host.root.glob("mautrix-signal/data/*.db")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")  # the read would wait 5 s on it

    async def go() -> int:
        opts = diagnose.Options(root=host.root, systemd_dir=host.systemd)
        task = asyncio.create_task(diagnose.gather(load().bridges["signal"], opts))
        await asyncio.sleep(0)  # its first step: the config parsed, the store handed over
        assert _busy_soon()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        reads = [
            await asyncio.wait_for(sqlite_read.start(db, db.parents[1]), 1)
            for _ in range(sqlite_read.MAX_CHILDREN)
        ]
        for read in reads:
            read.close()
        return len(reads)

    try:
        assert asyncio.run(go()) == sqlite_read.MAX_CHILDREN
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def _busy_soon() -> bool:
    (server,) = children()
    deadline = time.monotonic() + 2
    while not _busy(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    return _busy(server) == 1


# ---- `--deep` on SQLite, and the reader of its own when no server serves ------------------------
def test_a_deep_scan_counts_every_row_per_table_and_key(tmp_path: Path) -> None:
    """The keys go to the child (its stdin), every pickled row comes back counted: opened under
    which key, sealed under one but not a pickle, under none, not a pickle at all."""
    from bridgedoctor.bulk_verify import Tally
    from tests.support.store import seal, session_rows

    key, other, lost = mdad_default_key("whatsapp"), "mautrix.bridge.e2ee", "nobody-kept-it"
    rows = session_rows(key, inbound=3, secrets=1, tag="a")
    rows += session_rows(other, olm_sessions=2, tag="b")
    rows += session_rows(lost, inbound=1, tag="c")
    insert = (
        "INSERT INTO crypto_olm_session (account_id, session_id, sender_key, session) "
        "VALUES (?, ?, ?, ?)"
    )
    rows += [(insert, ("", "sealed", "k" * 43, seal(b"not a session", key)))]
    rows += [(insert, ("", "corrupt", "k" * 43, b"not base64 at all!"))]
    db = tmp_path / "mautrix-x" / "data" / "x.db"
    db.parent.mkdir(parents=True)
    write_sqlite(db, StoreSpec("whatsapp", account_key=key, extra=rows))
    tallies = asyncio.run(sqlite_read.scan(db, db.parents[1], [other, key]))
    assert tallies == {
        "olm_session": Tally(rows=5, opened={0: 2, 1: 1}, bad_plaintext={1: 1}, corrupt=1),
        "megolm_inbound": Tally(rows=5, opened={1: 4}, unknown=1),
        "megolm_outbound": Tally(rows=1, opened={1: 1}),
        "secret": Tally(rows=1, opened={1: 1}),
    }
    refused = asyncio.run(sqlite_read.scan(db.with_name("nope.db"), db.parents[1], [key]))
    assert refused == ProbeError(
        "db_unreachable", f"the SQLite database {db.with_name('nope.db')} does not exist."
    )


@contextlib.contextmanager
def _locked(db: Path) -> Iterator[None]:
    """A writer holding an exclusive lock: a reader waits on it (SQLite's busy wait, 5 s)."""
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_reader_of_its_own_is_bounded_and_killed_too(store: Path) -> None:
    """Without a server (given up after its failures) the deadline holds the same way."""
    _kill_servers(sqlite_read.MAX_SERVER_FAILURES)
    with _locked(store):
        started = time.monotonic()
        result = asyncio.run(sqlite_read.probe(store, store.parents[1], timeout=1.0))
        assert time.monotonic() - started < 4
    assert result == ProbeError(
        "db_unreachable",
        f"reading {store} took longer than 1 s and was stopped (a FIFO or a file system that "
        "hangs?).",
    )
    assert children() == set()


def _first_child() -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = children()
        if found:
            return found.pop()
        time.sleep(0.01)
    raise AssertionError("no reader started")


def test_a_reader_that_dies_says_how(store: Path) -> None:
    """A reader of its own killed mid-read: its exit status; a fork of the server: no answer."""

    async def go(kill: object) -> object:
        task = asyncio.create_task(sqlite_read.probe(store, store.parents[1], timeout=10))
        await asyncio.sleep(0.3)
        kill()
        return await task

    def kill_own() -> None:
        os.kill(_first_child(), 9)

    def kill_fork() -> None:
        (server,) = children()
        deadline = time.monotonic() + 5
        while not _busy(server) and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in _forks_of(server):
            if os.readlink(f"/proc/{pid}/fd/1").startswith("pipe:"):
                os.kill(pid, 9)

    with _locked(store):
        forked = asyncio.run(go(kill_fork))
        _kill_servers(sqlite_read.MAX_SERVER_FAILURES)
        own = asyncio.run(go(kill_own))
    assert forked == ProbeError(
        "db_unreachable", f"reading {store} failed (the reader ended without an answer)."
    )
    assert own == ProbeError(
        "db_unreachable", f"reading {store} failed (the reader exited with status -9)."
    )


@pytest.mark.parametrize("servers", ["server", "own"])
def test_a_reader_runs_nothing_the_environment_plants(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: str
) -> None:
    """PYTHONPATH, PYTHONSTARTUP and a sitecustomize on them are the caller's environment, not
    the reader's: it imports only from our own directories (-I -S)."""
    planted = tmp_path / "planted"
    planted.mkdir()
    pwned = tmp_path / "pwned"
    for name in ("sitecustomize.py", "usercustomize.py", "startup.py"):
        (planted / name).write_text(f"open({str(pwned)!r}, 'a').write({name!r})\n")
    monkeypatch.setenv("PYTHONPATH", str(planted))
    monkeypatch.setenv("PYTHONSTARTUP", str(planted / "startup.py"))
    if servers == "own":
        _kill_servers(sqlite_read.MAX_SERVER_FAILURES)
    assert isinstance(asyncio.run(sqlite_read.probe(store, store.parents[1])), DbFacts)
    assert not pwned.exists()


def test_a_read_given_up_stops_its_reader_at_once(store: Path) -> None:
    """`close` (a check stopped at its deadline): the fork waiting on the lock is killed and
    reaped now, not when the lock or its own deadline lets it go."""

    async def go() -> bool:
        read = await sqlite_read.start(store, store.parents[1], timeout=20)
        (server,) = children()
        deadline = time.monotonic() + 5
        while not _busy(server) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # its pid read: the server can be told to reap it
        assert _busy(server) == 1
        read.close()
        await asyncio.sleep(0.2)
        with pytest.raises(asyncio.CancelledError):
            await read.result()
        return _reaped(server)

    with _locked(store):
        assert asyncio.run(go())


def test_a_reader_holds_no_directory_of_the_callers(store: Path) -> None:
    """Started from a bridge's data directory (the helper or the CLI may run anywhere), the
    server, its forks and a reader of its own work in /, holding nothing of it open."""
    old = os.getcwd()
    os.chdir(store.parent)

    async def go() -> list[str]:
        task = asyncio.create_task(sqlite_read.probe(store, store.parents[1], timeout=10))
        await asyncio.sleep(0.5)
        pids = set(children())
        for server in list(pids):
            pids |= _forks_of(server)
        cwds = [os.readlink(f"/proc/{pid}/cwd") for pid in sorted(pids)]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return cwds

    try:
        with _locked(store):
            forked = asyncio.run(go())
            _kill_servers(sqlite_read.MAX_SERVER_FAILURES)
            own = asyncio.run(go())
    finally:
        os.chdir(old)
    # The server and its forks (how many are forked ahead by now depends on the machine's load).
    assert len(forked) >= 2 and set(forked) == {"/"}
    assert own == ["/"]


# ---- the fork server's parts, in this process (its loop, `serve`, runs only in the server) -----
def _exit_status(pid: int, within: float = 5.0) -> int | None:
    """The exit status of our child `pid` once it ends within `within` s, else None."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    return None


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_warm_up_reads_nothing_of_a_bridges_and_leaves_nothing_open() -> None:
    before = _fds()
    sqlite_zygote._warm_up()
    assert _fds() == before


def test_readers_forked_ahead_take_requests_in_turn_and_end_at_end_of_input(
    store: Path,
) -> None:
    """Each reader holds only its own request socket: closing ours ends it, even while a later
    reader (forked with the earlier ones' sockets around) waits."""
    import json
    import socket

    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready: list[tuple[int, socket.socket]] = []
    pids = []
    try:
        for _ in range(3):
            ready.append(sqlite_zygote._fork_ahead(server, ready))
        pids = [pid for pid, _ in ready]
        r, w = os.pipe()
        msg = json.dumps([str(store.parents[1]), str(store), 5.0]).encode()
        try:
            assert sqlite_zygote._hand_over(server, ready, msg, w) == pids[0]
        finally:
            os.close(w)
        # Its pid first. Its answer is tested through the real server above: a fork of this
        # process holds pytest's descriptors, which the reader's check of what it has open
        # refuses, and writes to pytest's capture.
        with os.fdopen(r, "rb") as answer:
            first = answer.read().split(b"\n", 1)[0]
        assert int(first) == pids[0] and [p for p, _ in ready] == pids[1:]
        assert _exit_status(pids[0]) == 0
        # The second reader, whose socket the third was forked next to, ends at our end.
        pid, sock = ready.pop(0)
        sock.close()
        assert _exit_status(pid) == 0
        pid, sock = ready.pop(0)
        sock.close()
        assert _exit_status(pid) == 0
    finally:
        for pid, sock in ready:
            sock.close()
            with contextlib.suppress(ChildProcessError):
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        server.close()
        client.close()


def test_a_request_passes_over_a_dead_reader_and_forks_when_none_is_left(store: Path) -> None:
    import json
    import socket

    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready = [sqlite_zygote._fork_ahead(server, [])]
    dead = ready[0][0]
    os.kill(dead, 9)
    while _state(dead) not in ("Z", None):
        time.sleep(0.01)
    r, w = os.pipe()
    msg = json.dumps([str(store.parents[1]), str(store), 5.0]).encode()
    try:
        pid = sqlite_zygote._hand_over(server, ready, msg, w)
    finally:
        os.close(w)
        server.close()
        client.close()
    with os.fdopen(r, "rb") as answer:
        first = answer.read().split(b"\n", 1)[0]
    assert pid != dead and int(first) == pid and ready == []
    assert _state(dead) is None  # reaped as it was passed over
    assert _exit_status(pid) == 0


def test_the_server_kills_and_reaps_its_children() -> None:
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    sqlite_zygote._kill(pid)
    assert _state(pid) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_the_server_reaps_only_readers_that_ended() -> None:
    ended, waiting = os.fork(), None
    if ended == 0:
        os._exit(3)
    waiting = os.fork()
    if waiting == 0:
        time.sleep(30)
        os._exit(0)
    try:
        while _state(ended) != "Z":
            time.sleep(0.01)
        live = {ended, waiting}
        sqlite_zygote._reap_finished(live)
        assert live == {waiting} and _state(ended) is None
    finally:
        os.kill(waiting, 9)
        os.waitpid(waiting, 0)


def test_a_server_that_stops_answering_is_retired(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that takes a request and forks no reader (stopped, here) is given up within
    FORK_TIMEOUT: the read is answered by a reader of its own, the server ended, the next
    read served by a new one, and the failure counted."""
    import signal

    monkeypatch.setattr(sqlite_read, "FORK_TIMEOUT", 0.5)
    _kill_servers(1)  # one failure already: the retirement counts one more
    server = sqlite_read._server()
    assert server is not None and sqlite_read._failures == 1
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = asyncio.run(sqlite_read.probe(store, store.parents[1]))
        assert time.monotonic() - started < 8
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.proc.pid, signal.SIGCONT)
    assert isinstance(answer, DbFacts) and answer.location == str(store)
    assert server.proc.poll() is not None and sqlite_read._SERVER is None
    assert sqlite_read._failures == 2
    assert asyncio.run(sqlite_read.probe(store, store.parents[1])) == answer
    new = sqlite_read._SERVER
    assert new is not None and new is not server and new.alive()
    assert sqlite_read._failures == 0  # a fork came: the failure before no longer counts


# ---- the fork server's failures, its descriptors and its end ---------------------------------
def test_a_read_that_cannot_be_handed_over_raises_and_frees_its_slot(store: Path) -> None:
    """At its descriptor limit (no pipe for the answer) `start` says so and its slot is back:
    MAX_CHILDREN reads can then start at once."""
    import errno
    import resource

    async def go() -> list[object]:
        assert isinstance(await sqlite_read.probe(store, store.parents[1]), DbFacts)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest = os.open("/dev/null", os.O_RDONLY)  # every descriptor below it is in use
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            with pytest.raises(OSError) as e:
                await sqlite_read.start(store, store.parents[1])
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert e.value.errno == errno.EMFILE
        starts = [
            sqlite_read.start(store, store.parents[1]) for _ in range(sqlite_read.MAX_CHILDREN)
        ]
        reads = [await asyncio.wait_for(s, 10) for s in starts]
        return [await r.result() for r in reads]

    assert all(isinstance(a, DbFacts) for a in asyncio.run(go()))


def test_a_server_whose_socket_broke_is_retired_and_the_read_answered(store: Path) -> None:
    """The request cannot be sent (the server alive but its socket broken): the read is
    answered by a reader of its own, that server ended and counted as a failure, the next read
    served by a new one."""
    import socket

    server = sqlite_read._server()
    assert server is not None
    os.kill(server.proc.pid, 19)  # SIGSTOP: alive, and reading nothing
    server.sock.shutdown(socket.SHUT_WR)
    answer = asyncio.run(sqlite_read.probe(store, store.parents[1]))
    assert isinstance(answer, DbFacts) and answer.location == str(store)
    assert server.proc.poll() is not None and sqlite_read._SERVER is None
    assert sqlite_read._failures == 1
    assert asyncio.run(sqlite_read.probe(store, store.parents[1])) == answer
    assert sqlite_read._SERVER is not None and sqlite_read._SERVER is not server


def test_readers_of_their_own_give_their_slots_back(store: Path) -> None:
    """Without a server, more reads than MAX_CHILDREN one after another on one loop: each
    slot comes back when its read ends."""
    _kill_servers(sqlite_read.MAX_SERVER_FAILURES)

    async def go() -> list[object]:
        return [
            await asyncio.wait_for(sqlite_read.probe(store, store.parents[1]), 20)
            for _ in range(sqlite_read.MAX_CHILDREN + 1)
        ]

    assert all(isinstance(a, DbFacts) for a in asyncio.run(go()))


def test_a_read_given_up_before_it_began_closes_its_pipe(store: Path) -> None:
    """Given up before its task took a step: the answer pipe is closed by us, not left to
    the garbage collector (an unclosed file, and a descriptor held until then)."""
    import gc
    import warnings

    async def go() -> None:
        read = await sqlite_read.start(store, store.parents[1])
        read.close()
        await asyncio.sleep(0.05)

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(go())
        gc.collect()
    assert [str(w.message) for w in said if w.category is ResourceWarning] == []


def test_the_server_and_its_readers_hold_none_of_our_output(store: Path) -> None:
    """The server runs with /dev/null as its stdout, and so do the readers it forks ahead:
    whoever reads our stdout sees its end when we close it, not when the server ends."""
    import select

    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)
    os.close(w)
    try:
        assert isinstance(asyncio.run(sqlite_read.probe(store, store.parents[1])), DbFacts)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    try:
        assert select.select([r], [], [], 5)[0] == [r] and os.read(r, 1) == b""
    finally:
        os.close(r)
    server = sqlite_read._SERVER
    assert server is not None
    assert _reaped(server.proc.pid)  # the reader that answered is gone
    targets = [os.readlink(f"/proc/{server.proc.pid}/fd/1")]
    for pid in _forks_of(server.proc.pid):
        with contextlib.suppress(FileNotFoundError):  # one ending just now
            targets.append(os.readlink(f"/proc/{pid}/fd/1"))
    assert targets == ["/dev/null"] * len(targets) and len(targets) > 1


def test_a_stopped_server_does_not_hold_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that stopped reading (its socket's queue full): a request gives up within
    FORK_TIMEOUT rather than wait for it."""
    import threading

    monkeypatch.setattr(sqlite_read, "FORK_TIMEOUT", 0.3)
    server = sqlite_read._server()
    assert server is not None
    os.kill(server.proc.pid, 19)  # SIGSTOP
    sent: list[bool] = []

    def flood() -> None:
        while not sent or sent[-1]:
            r, w = os.pipe()
            try:
                sent.append(server.request(Path("/x.db"), Path("/"), 1.0, w))
            finally:
                os.close(r)
                os.close(w)

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    t.join(10)
    try:
        assert not t.is_alive() and sent[-1] is False and len(sent) < 100
    finally:
        server.proc.kill()  # a send still waiting then fails at once
        t.join(5)


def test_a_server_killed_while_its_reader_works_still_gives_the_answer(store: Path) -> None:
    """The reader answers after its server is gone; telling the dead server to reap it fails,
    and that failure is not the read's."""

    async def go() -> object:
        writer = sqlite3.connect(store, isolation_level=None)
        writer.execute("PRAGMA journal_mode=DELETE")
        writer.execute("BEGIN EXCLUSIVE")
        try:
            read = await sqlite_read.start(store, store.parents[1], timeout=20)
            server = sqlite_read._SERVER
            assert server is not None
            deadline = time.monotonic() + 5
            while not _busy(server.proc.pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert _busy(server.proc.pid) == 1
            server.proc.kill()
            server.proc.wait()
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        return await read.result()

    answer = asyncio.run(go())
    assert isinstance(answer, DbFacts) and answer.location == str(store)


def test_a_server_that_cannot_start_counts_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """No interpreter to start (sys.executable gone, say, after an upgrade): one failure each
    time, and only MAX_SERVER_FAILURES in a row give the server up."""
    for tries in (sqlite_read.MAX_SERVER_FAILURES - 1, sqlite_read.MAX_SERVER_FAILURES):
        sqlite_read.stop()
        monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
        for n in range(1, tries + 1):
            assert sqlite_read._server() is None and sqlite_read._failures == n
        monkeypatch.undo()
        server = sqlite_read._server()
        assert (server is None) == (tries == sqlite_read.MAX_SERVER_FAILURES)


def test_a_process_that_exits_takes_its_server_with_it(store: Path) -> None:
    """A process that read a store and exits takes its server with it: its end of input, and
    a kill after CLOSE_WAIT for a server that does not read it (stopped, here). The same
    code as ours, so first our own read (which also tells mutation testing that this test
    reaches the server's start)."""
    ours = asyncio.run(sqlite_read.probe(store, store.parents[1]))
    assert isinstance(ours, DbFacts)
    code = (
        f"import sys; sys.path[:0] = {sys.path!r}\n"
        "import asyncio, os\n"
        "from pathlib import Path\n"
        "from bridgedoctor.facts import DbFacts\n"
        "from bridgedoctor.probes import sqlite_read\n"
        "store = Path(sys.argv[1])\n"
        "assert isinstance(asyncio.run(sqlite_read.probe(store, store.parents[1])), DbFacts)\n"
        "os.kill(sqlite_read._SERVER.proc.pid, 19)\n"
        "print(sqlite_read._SERVER.proc.pid, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store)], capture_output=True, timeout=60, check=True
    )
    pid = int(out.stdout)
    assert pid not in children()  # theirs, not ours
    try:
        assert _state(pid) in (None, "Z")
    finally:
        if _state(pid) not in (None, "Z"):
            os.kill(pid, 9)
