"""'A check never writes' (README), made observable.

PostgreSQL: the bridge database itself refuses to be read outside a read-only transaction. A
row-level-security policy on every table calls a function that raises unless
`transaction_read_only` is on, so a check that opened a writable session could not read a row.
SQLite: the kernel says how the check opened the database file. An audit hook on
`sqlite3.connect/handle` (fired once SQLite has opened the file) reads the access mode of every
descriptor of that file from /proc/self/fdinfo.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bridgedoctor.diagnose import Options, check
from tests.support.fleet import DB_PASSWORD, Host, mdad_default_key
from tests.support.pg import PgServer
from tests.support.store import StoreSpec

GUARD = """
CREATE FUNCTION bd_read_only_guard() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('transaction_read_only') <> 'on' THEN
    RAISE EXCEPTION 'read in a writable session';
  END IF;
  RETURN true;
END $$;
"""


def opts(host: Host) -> Options:
    assert host.pg is not None
    return Options(root=host.root, systemd_dir=host.systemd, db_host=f"127.0.0.1:{host.pg.port}")


async def arm(pg: PgServer, db: str) -> None:
    """As the bridge's own user (the tables' owner, subject to FORCE ROW LEVEL SECURITY)."""
    conn = await asyncpg.connect(
        host=pg.host, port=pg.port, user=db, password=DB_PASSWORD, database=db
    )
    try:
        await conn.execute(GUARD)
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )]  # fmt: skip
        for t in tables:
            await conn.execute(f'ALTER TABLE "{t}" ENABLE ROW LEVEL SECURITY')
            await conn.execute(f'ALTER TABLE "{t}" FORCE ROW LEVEL SECURITY')
            await conn.execute(f'CREATE POLICY ro ON "{t}" USING (bd_read_only_guard())')
        # The trap works: a writable session cannot read the account.
        with pytest.raises(asyncpg.RaiseError, match="writable session"):
            await conn.fetch("SELECT * FROM crypto_account")
    finally:
        await conn.close()


def test_postgres_check_reads_only_in_read_only_transactions(tmp_path: Path, pg: PgServer) -> None:
    host = Host.at(tmp_path, pg)
    prefix = f"ro{os.getpid()}_"
    host.add("whatsapp", StoreSpec("whatsapp", account_key=mdad_default_key("whatsapp")),
             db_prefix=prefix)  # fmt: skip
    asyncio.run(arm(pg, f"{prefix}matrix_mautrix_whatsapp"))
    report = asyncio.run(check("whatsapp", opts(host)))
    assert [f.code for f in report.findings] == ["pickle_key_ok"], report.findings
    assert report.facts["schema"].startswith("crypto_version v21")


# --- SQLite ------------------------------------------------------------------------------------

_watch: dict[str, Any] = {"path": None, "modes": []}
_lock = threading.Lock()
_hooked = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "sqlite3.connect/handle" or _watch["path"] is None:
        return
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target != _watch["path"]:
                    continue
                with open(f"/proc/self/fdinfo/{fd}") as info:
                    flags = next(int(x.split()[1], 8) for x in info if x.startswith("flags:"))
            except (OSError, StopIteration):
                continue
            with _lock:
                _watch["modes"].append(flags & os.O_ACCMODE)
    except Exception:  # noqa: BLE001 - an audit hook must never raise
        with _lock:
            _watch["modes"].append(-1)


def watch(path: Path) -> list[int]:
    global _hooked
    if not _hooked:
        sys.addaudithook(_hook)
        _hooked = True
    with _lock:
        _watch["path"], _watch["modes"] = str(path.resolve()), []
        return _watch["modes"]


def test_sqlite_check_opens_the_database_read_only(tmp_path: Path) -> None:
    host = Host.at(tmp_path)
    host.add("signal", StoreSpec("signal", account_key=mdad_default_key("signal")),
             engine="sqlite")  # fmt: skip
    db = next((host.root / "mautrix-signal" / "data").glob("*.db"))
    modes = watch(db)
    try:
        report = asyncio.run(check("signal", Options(root=host.root, systemd_dir=host.systemd)))
    finally:
        _watch["path"] = None
    assert [f.code for f in report.findings] == ["pickle_key_ok"], report.findings
    assert modes, "the check never opened the database (or the hook saw nothing)"
    assert set(modes) == {os.O_RDONLY}, modes


def test_the_sqlite_watch_sees_a_writable_open(tmp_path: Path) -> None:
    """The recorder is not vacuous: a read-write connection shows up as such."""
    import sqlite3

    db = tmp_path / "x.db"
    sqlite3.connect(db).close()
    modes = watch(db)
    try:
        sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True).close()
    finally:
        _watch["path"] = None
    assert os.O_RDWR in modes
