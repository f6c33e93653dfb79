"""'A check never writes' (README), made observable.

PostgreSQL: the bridge database itself refuses to be read outside a read-only transaction. A
row-level-security policy on every table calls a function that raises unless
`transaction_read_only` is on, so a check that opened a writable session could not read a row.
SQLite: the kernel says how the reader opened the database file. An audit hook on
`sqlite3.connect/handle` (fired once SQLite has opened the file) reads the access mode of every
descriptor of that file from /proc/self/fdinfo.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
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

# The check reads a SQLite store in a child process (probes/sqlite_read.py runs
# probes/sqlite_child.py). The same child is run here (`python -I ... BASE PATH facts`), with an
# audit hook added first: at `sqlite3.connect/handle` SQLite has opened the file, and the kernel
# says how (the access mode in /proc/self/fdinfo). The modes go to stderr, the report to stdout.
CHILD = """
import os, runpy, sys
WATCHED = os.path.realpath(sys.argv[2])

def hook(event, args):
    if event != "sqlite3.connect/handle":
        return
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != WATCHED:
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                flags = next(int(x.split()[1], 8) for x in info if x.startswith("flags:"))
        except (OSError, StopIteration):
            continue
        sys.stderr.write(f"mode {flags & os.O_ACCMODE}\\n")

sys.addaudithook(hook)
runpy.run_module("bridgedoctor.probes.sqlite_child", run_name="__main__")
"""


def child_modes(base: Path, db: Path) -> tuple[list[int], dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, "-I", "-c", CHILD, str(base), str(db), "facts"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    modes = [int(x.split()[1]) for x in r.stderr.splitlines() if x.startswith("mode ")]
    out = json.loads(r.stdout)
    return modes, out.get("result", out)


def test_sqlite_check_opens_the_database_read_only(tmp_path: Path) -> None:
    host = Host.at(tmp_path)
    host.add("signal", StoreSpec("signal", account_key=mdad_default_key("signal")),
             engine="sqlite")  # fmt: skip
    report = asyncio.run(check("signal", Options(root=host.root, systemd_dir=host.systemd)))
    assert [f.code for f in report.findings] == ["pickle_key_ok"], report.findings
    base = host.root / "mautrix-signal"
    db = next((base / "data").glob("*.db"))
    modes, answer = child_modes(base, db)
    assert "error" not in answer and answer["accounts"], answer
    assert modes, "the reader never opened the database (or the hook saw nothing)"
    assert set(modes) == {os.O_RDONLY}, modes


def test_the_sqlite_watch_sees_a_writable_open(tmp_path: Path) -> None:
    """The observation is not vacuous: the same hook reports a read-write open as such."""
    import sqlite3

    db = tmp_path / "x.db"
    sqlite3.connect(db).close()
    hook = CHILD.split("sys.addaudithook(hook)")[0]
    code = (
        hook
        + "sys.addaudithook(hook)\nimport sqlite3\n"
        + ("sqlite3.connect(f'file:{WATCHED}?mode=rw', uri=True).close()\n")
    )
    r = subprocess.run([sys.executable, "-I", "-c", code, "-", str(db)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert f"mode {os.O_RDWR}" in r.stderr.splitlines(), r.stderr
