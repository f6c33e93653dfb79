"""The reset's own guards, each made to fire: a lock held by a live process is respected (a room
reset and a CLI reset of one bridge never run together), and a full backup whose files lost rows
on the way to disk is refused before anything is removed. Real PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgedoctor.reset import full, lock
from bridgedoctor.reset.dbio import open_db
from bridgedoctor.reset.errors import ResetError
from bridgedoctor.reset.target import resolve
from tests.support.cli import run
from tests.support.fleet import Host
from tests.support.reset_env import Systemd, options, state
from tests.test_reset import BRIDGE, engine, host

HOLD = (
    "import fcntl, os, sys, time; "
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(300)"
)
BUSY = "another reset or restore of this bridge is running"


def hold(bridge_dir: Path) -> subprocess.Popen[str]:
    """Another process (the 'other' reset) holding the bridge's lock until it is killed."""
    bridge_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(bridge_dir / lock.NAME)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Path]:
    """The bridge directory of a backup root, its lock held by a live process."""
    bridge_dir = tmp_path / "backups" / BRIDGE
    proc = hold(bridge_dir)
    yield bridge_dir
    proc.kill()
    proc.wait()


def test_lock_held_by_a_live_process_is_respected(holder: Path) -> None:
    with pytest.raises(ResetError, match=BUSY), lock.held(holder):
        pytest.fail("entered a lock another live process holds")
    assert lock.is_held(holder)  # still theirs


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    """SIGKILL, as a crash or a reboot would: the kernel releases the lock with the process.
    The PID left in the file names a live process here (after a reboot PIDs are reused): it
    must not matter."""
    bridge_dir = tmp_path / "gmessages"
    proc = hold(bridge_dir)
    proc.kill()
    proc.wait()
    (bridge_dir / lock.NAME).write_text(str(os.getpid()))  # a live, unrelated PID
    assert not lock.is_held(bridge_dir)
    with lock.held(bridge_dir):
        assert lock.is_held(bridge_dir)
        with pytest.raises(ResetError, match=BUSY), lock.held(bridge_dir):
            pytest.fail("a second holder in the same process")
    assert not lock.is_held(bridge_dir)


def test_cli_reset_while_another_holds_the_lock_touches_nothing(
    host: Host, systemd: Systemd, holder: Path, capsys
) -> None:
    before = state(host, BRIDGE)
    argv = ["reset", BRIDGE, "--yes", *host.args(), "--backup-dir", str(holder.parent)]
    code, out = run(capsys, *argv)
    assert code == 1 and BUSY in out
    assert not [c for c in systemd.calls() if c.startswith(("stop", "start"))]
    assert state(host, BRIDGE) == before


def test_full_backup_missing_rows_on_disk_is_refused(tmp_path: Path, host: Host) -> None:
    """The full reset's verify step, like the crypto one (tests/test_reset_integrity.py): a
    table file that lost a row between the dump and the read-back is refused."""

    async def go() -> None:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            files = {}
            for t in await db.tables():
                rows = await db.dump(t, tmp_path / f"table.{t}.copy")
                files[t] = {"table": t, "where": "", "file": f"table.{t}.copy", "rows": rows}
            await full.verify_db(db, tmp_path, {"files": files})  # as written: accepted
            assert files["crypto_secrets"]["rows"] == 1
            assert len(files["crypto_secrets"]["sha256"]) == 64
            (tmp_path / files["crypto_secrets"]["file"]).write_bytes(b"")
            with pytest.raises(
                ResetError, match="crypto_secrets has 0 rows on disk, the dump sent 1"
            ):
                await full.verify_db(db, tmp_path, {"files": files})
        finally:
            await db.close()

    before = state(host, BRIDGE)
    asyncio.run(go())
    assert state(host, BRIDGE) == before


def test_a_lock_nobody_holds_is_free(tmp_path: Path) -> None:
    bridge_dir = tmp_path / "backups" / BRIDGE
    assert not lock.is_held(bridge_dir)  # no lock file yet
    with lock.held(bridge_dir):
        pass
    assert (bridge_dir / lock.NAME).exists() and not lock.is_held(bridge_dir)


def test_a_lock_file_that_is_a_link_is_never_followed(tmp_path: Path) -> None:
    """Only root can write the backup directory, but a link there is still never followed: a
    lock taken through it would lock some other file."""
    bridge_dir = tmp_path / "backups" / BRIDGE
    bridge_dir.mkdir(parents=True, mode=0o700)
    proc = hold(tmp_path / "elsewhere")  # a live process holds the file the link points to
    try:
        (bridge_dir / lock.NAME).symlink_to(tmp_path / "elsewhere" / lock.NAME)
        with pytest.raises(OSError) as e:
            lock.is_held(bridge_dir)
        assert e.value.errno == errno.ELOOP
        with pytest.raises(OSError) as e, lock.held(bridge_dir):
            pytest.fail("locked through a link")
        assert e.value.errno == errno.ELOOP
    finally:
        proc.kill()
        proc.wait()


def test_a_backup_needs_twice_its_size_free_and_a_margin(tmp_path: Path) -> None:
    """COPY text of bytea is larger than the table's pages: a backup is refused before anything
    is touched unless twice its estimated size (and a MiB) is free."""
    from bridgedoctor.reset.backup import SPACE_FACTOR, SPACE_MARGIN, ensure_space

    assert (SPACE_FACTOR, SPACE_MARGIN) == (2.0, 1 << 20)
    half = (shutil.disk_usage(tmp_path).free - SPACE_MARGIN) // 2
    slack = 64 << 20  # other writers on this disk may move the free space a little meanwhile
    ensure_space(tmp_path, half - slack)
    before = shutil.disk_usage(tmp_path).free
    with pytest.raises(ResetError) as e:
        ensure_space(tmp_path, half + slack)
    after = shutil.disk_usage(tmp_path).free
    want = (half + slack) * 2 + SPACE_MARGIN
    said = re.fullmatch(
        rf"not enough space for the backup in {re.escape(str(tmp_path))}: about (\d+) KiB "
        r"needed, (\d+) KiB free; nothing was changed \(use --backup-dir\)\.",
        str(e.value),
    )
    assert said is not None, str(e.value)
    assert int(said[1]) == want // 1024
    low, high = sorted((before, after))
    assert low // 1024 - 1024 <= int(said[2]) <= high // 1024 + 1024  # within a MiB of a read
