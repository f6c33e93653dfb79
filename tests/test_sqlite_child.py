"""probes/sqlite_child.py, its parts in this process: which files a read holds and checks (the
store and its -wal/-shm), the read-only connection, the wire form, the reasons. What SQLite may
have open besides them (`_opened_only`) can only be judged in a process with no other file open,
and the limits only in a process that may keep them: both are checked here in a process of
their own; `main` is tests/test_sqlite_read.py's (and tests/hostile's)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgedoctor.probes import bridgefile, sqlite_child
from bridgedoctor.probes.collect import parts_of
from tests.support.fleet import sqlite_store

OTHER_UID = 64_999


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return sqlite_store(tmp_path / "mautrix-x" / "data" / "mautrix-x.db")


@pytest.fixture(autouse=True)
def no_leaked_descriptors(tmp_path: Path) -> Iterator[None]:
    """_held keeps what it checked open until the child exits; here the test is the child, so
    what it left open below tmp_path is closed after each test."""
    yield
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(f"{tmp_path}/"):
                os.close(int(fd))


def refused(fn, code: str = "refused") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(bridgefile.Refused) as e:
        fn()
    assert e.value.code == code
    return e.value.message


def test_the_store_and_its_wal_and_shm_are_held(store: Path) -> None:
    base = store.parents[1]
    held = sqlite_child._held(store, base)
    assert list(held) == [str(store)]  # no -wal or -shm: none is required
    assert (held[str(store)].st_ino, held[str(store)].st_dev) == (
        store.stat().st_ino, store.stat().st_dev
    )  # fmt: skip
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").write_bytes(b"")
    held = sqlite_child._held(store, base)
    assert list(held) == [str(store), f"{store}-wal", f"{store}-shm"]
    assert held[f"{store}-shm"].st_ino == Path(f"{store}-shm").stat().st_ino


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_link_or_a_foreign_owner_among_them_is_refused(
    store: Path, tmp_path: Path, suffix: str
) -> None:
    base = store.parents[1]
    name = Path(f"{store}{suffix}")
    if suffix:
        name.write_bytes(b"")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(name.read_bytes())
    name.unlink()
    name.symlink_to(elsewhere)
    message = refused(lambda: sqlite_child._held(store, base))
    assert message.startswith(f"{name} is a symbolic link;")  # the file's own name
    name.unlink()
    os.link(elsewhere, name)
    assert "hard links" in refused(lambda: sqlite_child._held(store, base))
    name.unlink()
    elsewhere.rename(name)
    os.chown(name, OTHER_UID, OTHER_UID)
    message = refused(lambda: sqlite_child._held(store, base))
    assert f"is owned by uid {OTHER_UID}" in message and str(name) in message
    # Owned by the data directory's owner: fine, whoever that is.
    os.chown(store.parent, OTHER_UID, OTHER_UID)
    assert str(name) in sqlite_child._held(store, base)


def test_a_missing_store_is_missing_and_a_store_outside_is_refused(
    store: Path, tmp_path: Path
) -> None:
    base = store.parents[1]
    none = store.parent / "none.db"
    message = refused(lambda: sqlite_child._held(none, base), "missing")
    assert message == f"{none} does not exist."
    gone = base / "gone" / "x.db"
    assert refused(lambda: sqlite_child._held(gone, base), "missing") == f"{gone} does not exist."
    refused(lambda: sqlite_child._held(tmp_path / "x.db", base))


def test_a_store_directly_in_the_bridge_directory_or_deeper(store: Path, tmp_path: Path) -> None:
    assert list(sqlite_child._held(store, store.parent)) == [str(store)]
    deeper = store.parents[1] / "data" / "sub" / "x.db"
    deeper.parent.mkdir()
    os.link(store, deeper)
    store.unlink()
    assert list(sqlite_child._held(deeper, store.parents[1])) == [str(deeper)]


def test_a_fifo_as_the_wal_is_refused_without_blocking(store: Path) -> None:
    os.mkfifo(f"{store}-wal")
    done: list[str] = []

    def read() -> None:
        done.append(refused(lambda: sqlite_child._held(store, store.parents[1])))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "opening the -wal FIFO blocked"
    assert done == [f"{store}-wal is a FIFO, not a regular file; it was not read."]


def test_the_store_is_opened_read_only_even_with_odd_characters(tmp_path: Path) -> None:
    path = tmp_path / "a b?c#d%.db"
    sqlite3.connect(path).close()
    conn = sqlite_child._connect(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("CREATE TABLE t (x)")
    finally:
        conn.close()
    assert sorted(os.listdir(tmp_path)) == ["a b?c#d%.db"]  # no other file made


def test_the_wire_form() -> None:
    parts = parts_of(
        frozenset({"version", "database_owner", "crypto_account", "crypto_olm_session"}),
        [
            ("version", "5", None, None),
            ("owner", "mautrix-x", None, None),
            ("account", "@bot:ex.org", "DEV", b"\x00\xffpickle"),
            ("olm_session", None, None, b"s1"),
        ],
    )
    assert sqlite_child.encode(Path("/d/x.db"), frozenset({"b", "a"}), parts) == {
        "location": "/d/x.db",
        "tables": ["a", "b"],
        "versions": {"version": 5},
        "owner": "mautrix-x",
        "accounts": [{"account_id": "@bot:ex.org", "device_id": "DEV", "pickle": "AP9waWNrbGU="}],
        "samples": {"olm_session": ["czE="]},
    }


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (sqlite3.DatabaseError("file is not a database."), "file is not a database"),
        (sqlite3.OperationalError("no such table: X"), "no such table: X"),
        (sqlite3.OperationalError("bad\nline\u202e" + "x" * 200), None),
        (ValueError("secret detail"), "ValueError"),
        (MemoryError(), "MemoryError"),
    ],
)
def test_the_reason_of_a_failed_read_is_one_bounded_line(
    error: Exception, why: str | None
) -> None:
    got = sqlite_child._why(error)
    if why is not None:
        assert got == why
    else:
        assert got == ("bad\\nline\\u202e" + "x" * 200)[:120]
    assert got.isascii() and "\n" not in got and len(got) <= 120


@pytest.mark.parametrize("cpu", [30, 900])
def test_a_read_runs_under_its_limits_soft_and_hard(cpu: int) -> None:
    """Address space 1 GiB, the job's CPU seconds, 64 descriptors, no core dump: each both soft
    and hard, so the read cannot raise them again. In a process of its own, as a read runs."""
    code = (
        "import sys; from bridgedoctor.probes import sqlite_child; "
        f"sqlite_child._limit({cpu}); sys.stdout.write(open('/proc/self/limits').read())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    limits = {line[:26].strip(): line[26:].split()[:2] for line in r.stdout.splitlines()[1:]}
    assert limits["Max address space"] == [str(1024 * 1024 * 1024)] * 2
    assert limits["Max cpu time"] == [str(cpu)] * 2
    assert limits["Max open files"] == ["64", "64"]
    assert limits["Max core file size"] == ["0", "0"]


OPENED_ONLY = """
import os, sys
from pathlib import Path
from bridgedoctor.probes import bridgefile, sqlite_child
store = Path(sys.argv[1])
held = {str(store): os.stat(store)}
kept = []
for what in sys.argv[2:]:  # opened in this order, after stdin, stdout and stderr (pipes)
    if what == "pipe":
        kept += os.pipe()
    else:
        kept.append(os.open(what, os.O_RDONLY))
try:
    sqlite_child._opened_only(held, store)
    print("ok")
except bridgefile.Refused as r:
    print(r.code, r.message)
"""


def opened_only(store: Path, *opened: str) -> str:
    """_opened_only's judgement in a process of its own, with only `opened` open beside
    its pipes (in a test process pytest's own files would be judged too)."""
    r = subprocess.run(
        [sys.executable, "-c", OPENED_ONLY, str(store), *opened],
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout.strip()


def test_a_read_may_hold_only_the_store_and_its_own_wal_and_shm(store: Path) -> None:
    changed = f"refused {store} changed while it was read; nothing is reported."
    other = store.with_name("other.db")
    other.write_bytes(b"x")
    wal, shm = Path(f"{store}-wal"), Path(f"{store}-shm")
    wal.write_bytes(b"w")
    shm.write_bytes(b"s")
    assert opened_only(store, str(store)) == "ok"
    assert opened_only(store, "pipe", str(store), str(wal), str(shm)) == "ok"
    # Another regular file, after the store, after a pipe, after the -wal: each is seen.
    assert opened_only(store, str(store), str(other)) == changed
    assert opened_only(store, "pipe", str(store), str(other)) == changed
    assert opened_only(store, str(store), str(wal), str(other)) == changed
    # The store itself not among the open files (what SQLite opened is some other file).
    assert opened_only(store) == changed
    assert opened_only(store, str(other)) == changed
    # A -wal that is a hard link to something else is not the store's own.
    wal.unlink()
    os.link(other, wal)
    assert opened_only(store, str(store), str(wal)) == changed
