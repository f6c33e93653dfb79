"""The reset's own guards, each made to fire: a lock held by a live process is respected (a room
reset and a CLI reset of one bridge never run together), and a full backup whose files lost rows
on the way to disk is refused before anything is removed. Real PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from bridgedoctor.reset import backup, full
from bridgedoctor.reset.dbio import open_db
from bridgedoctor.reset.errors import ResetError
from bridgedoctor.reset.target import resolve
from tests.support.cli import run
from tests.support.fleet import Host
from tests.support.reset_env import Systemd, options, state
from tests.test_reset import BRIDGE, engine, host


@pytest.fixture
def live_pid() -> int:
    """A process that is alive for the whole test (the 'other' reset holding the lock)."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_lock_held_by_a_live_process_is_respected(tmp_path: Path, live_pid: int) -> None:
    bridge_dir = tmp_path / "gmessages"
    bridge_dir.mkdir()
    lock = bridge_dir / backup.LOCK
    lock.write_text(str(live_pid))
    busy = "another reset or restore of this bridge is running"
    with pytest.raises(ResetError, match=busy), backup.lock(bridge_dir):
        pytest.fail("entered a lock another live process holds")
    assert lock.read_text() == str(live_pid)  # not broken, not removed


def test_lock_left_by_a_dead_process_is_broken(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its pid names no process now
    bridge_dir = tmp_path / "gmessages"
    bridge_dir.mkdir()
    (bridge_dir / backup.LOCK).write_text(str(proc.pid))
    with backup.lock(bridge_dir):
        assert (bridge_dir / backup.LOCK).read_text() != str(proc.pid)
    assert not (bridge_dir / backup.LOCK).exists()


def test_cli_reset_while_another_holds_the_lock_touches_nothing(
    tmp_path: Path, host: Host, systemd: Systemd, live_pid: int, capsys
) -> None:
    backups = tmp_path / "backups"
    (backups / BRIDGE).mkdir(parents=True)
    (backups / BRIDGE / backup.LOCK).write_text(str(live_pid))
    before = state(host, BRIDGE)
    code, out = run(capsys, "reset", BRIDGE, "--yes", *host.args(), "--backup-dir", str(backups))
    assert code == 1 and "another reset or restore of this bridge is running" in out
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
