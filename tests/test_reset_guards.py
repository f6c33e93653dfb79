"""The reset's own guards, each made to fire: a lock held by a live process is respected (a room
reset and a CLI reset of one bridge never run together), and a backup whose row count does not
match its table is refused before anything is removed. Real PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from bridgedoctor.reset import backup, crypto, full
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


async def _backup_then_add_a_row(on: Host, dest: Path, kind: str) -> None:
    """Back up (crypto tables, or everything), then a row appears in crypto_device /
    crypto_secrets before verification: the files no longer match the tables."""
    db = await open_db(resolve(BRIDGE, options(on)).db)
    try:
        if kind == "crypto":
            recorded = await crypto.backup(db, dest)
        else:
            recorded = {}
            for t in await db.tables():
                await db.dump(t, dest / f"table.{t}.copy")
                recorded[t] = {"table": t, "where": "", "file": f"table.{t}.copy"}
        assert "crypto_secrets" in recorded
        await _insert_secret(db)
        with pytest.raises(ResetError) as e:
            if kind == "crypto":
                await crypto.verify(db, dest, recorded)
            else:
                await full.verify_db(db, dest, {"files": recorded})
        assert "crypto_secrets has 1 rows" in str(e.value) and "aborted" in str(e.value)
    finally:
        await db.close()


async def _insert_secret(db: object) -> None:
    sql = (
        "INSERT INTO crypto_secrets (account_id, name, secret) VALUES "
        "('', 'late.secret', " + ("'\\x00'::bytea" if db.kind == "postgres" else "x'00'") + ")"
    )
    result = db.conn.execute(sql)  # type: ignore[attr-defined]
    if asyncio.iscoroutine(result):
        await result


@pytest.mark.parametrize("kind", ["crypto", "full"])
def test_backup_that_does_not_match_its_table_is_refused(
    tmp_path: Path, host: Host, kind: str
) -> None:
    dest = tmp_path / "backup"
    dest.mkdir()
    asyncio.run(_backup_then_add_a_row(host, dest, kind))


@pytest.mark.parametrize("kind", ["crypto", "full"])
def test_backup_that_matches_is_accepted_with_its_counts(
    tmp_path: Path, host: Host, kind: str
) -> None:
    async def go() -> dict:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            if kind == "crypto":
                recorded = await crypto.backup(db, tmp_path)
                await crypto.verify(db, tmp_path, recorded)
                return recorded
            info = {"files": {"crypto_secrets": {"table": "crypto_secrets", "where": "",
                                                 "file": "s.copy"}}}  # fmt: skip
            await db.dump("crypto_secrets", tmp_path / "s.copy")
            await full.verify_db(db, tmp_path, info)
            return info["files"]
        finally:
            await db.close()

    recorded = asyncio.run(go())
    assert recorded["crypto_secrets"]["rows"] == 1
    assert len(recorded["crypto_secrets"]["sha256"]) == 64
