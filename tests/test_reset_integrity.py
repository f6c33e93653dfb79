"""What makes a fast reset safe: the dump's own row count, the read-back, the checked restore,
and the DELETE fallback when TRUNCATE is refused (real PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridgedoctor.reset import crypto
from bridgedoctor.reset.dbio import open_db
from bridgedoctor.reset.errors import ResetError
from bridgedoctor.reset.target import resolve
from tests.support.cli import run
from tests.support.fleet import Host
from tests.support.reset_env import Systemd, options, state
from tests.test_reset import BRIDGE, CRYPTO_GONE, _exec, backup_args, engine, host, only_backup

__all__ = ["engine", "host"]  # fixtures used by name below


def test_backup_missing_rows_on_disk_is_refused(host: Host, tmp_path: Path) -> None:
    """The verify step compares each file read back from disk with the row count the dump
    itself reported; a file that lost a row is refused before anything is removed."""
    dest = tmp_path / "dump"
    dest.mkdir()

    async def go() -> None:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            recorded = await crypto.backup(db, dest)
            assert recorded["crypto_account"]["rows"] == 1
            assert recorded["crypto_megolm_inbound_session"]["rows"] == 1
            f = dest / recorded["crypto_megolm_inbound_session"]["file"]
            f.write_bytes(b"")  # the row never reached the disk
            with pytest.raises(ResetError, match="0 rows on disk, the dump sent 1"):
                await crypto.verify(db, dest, recorded)
        finally:
            await db.close()

    before = state(host, BRIDGE)
    asyncio.run(go())
    assert state(host, BRIDGE) == before


def test_damaged_backup_restores_nothing(
    host: Host, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """A backup file changed after it was verified (same line count, other bytes) is caught while
    it streams in: the restore's transaction is rolled back, the reset state stays."""
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 0, text
    after_reset = state(host, BRIDGE)["tables"]
    item = only_backup(capsys, host, tmp_path)
    (account,) = Path(item["location"]).glob("crypto_account.*")
    account.write_bytes(account.read_bytes().replace(b"BRIDGEDEV1", b"BRIDGEDEV2"))
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 1
    # Refused, not failed: nothing was written (ResetError.touched is False).
    assert f"restore refused (backup file {account.name} is damaged; nothing restored" in text
    assert state(host, BRIDGE)["tables"] == after_reset


@pytest.mark.parametrize("engine", ["postgres"])
def test_truncate_refused_falls_back_to_delete(
    host: Host, systemd: Systemd, tmp_path: Path, capsys
) -> None:
    """A table outside the reset set references crypto_account: PostgreSQL refuses to TRUNCATE,
    and the reset deletes the same rows instead (as before TRUNCATE was used)."""
    _exec(
        host,
        "CREATE TABLE extra_ref (account_id TEXT REFERENCES crypto_account(account_id))",
        "CREATE TABLE extra_note (note TEXT)",
    )
    before = state(host, BRIDGE)
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 0, text
    tables = state(host, BRIDGE)["tables"]
    assert all(tables[t][0] == 0 for t in CRYPTO_GONE)
    assert tables["crypto_device"] == before["tables"]["crypto_device"]
    item = only_backup(capsys, host, tmp_path)
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 0, text
    assert state(host, BRIDGE)["tables"] == before["tables"]
