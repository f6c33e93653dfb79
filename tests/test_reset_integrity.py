"""What makes a fast reset safe: the dump's own row count, the read-back, the checked restore,
and the DELETE fallback when TRUNCATE is refused (real PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from pathlib import Path

import asyncpg
import pytest

from bridgedoctor.probes.database import SqliteTarget
from bridgedoctor.reset import crypto, full
from bridgedoctor.reset.dbio import (
    FENCE,
    MissingDatabase,
    PgDb,
    SqliteDb,
    TableSum,
    UnreadableStore,
    file_sum,
    open_db,
)
from bridgedoctor.reset.errors import ResetError
from bridgedoctor.reset.target import resolve
from tests.support.cli import run
from tests.support.fleet import Host
from tests.support.pg import PgServer
from tests.support.reset_env import Systemd, options, state
from tests.test_reset import (
    BRIDGE,
    CRYPTO_GONE,
    _exec,
    backup_args,
    deploy,
    engine,
    host,
    only_backup,
    run_sql,
)

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


@pytest.mark.parametrize(
    "damage",
    [b"BRIDGEDEV2", b'BRIDGE"\tDEV'],  # other bytes; bytes neither COPY nor JSON can read
    ids=["readable", "unreadable"],
)
def test_damaged_backup_restores_nothing(
    host: Host, systemd: Systemd, tmp_path: Path, capsys, damage: bytes
) -> None:
    """A backup file changed after it was verified (same line count, other bytes) is caught while
    it streams in: the restore's transaction is rolled back, the reset state stays. A change
    the database or the parser stops at is named the same way, not by their error."""
    code, text = run(capsys, "reset", BRIDGE, "--yes", *host.args(), *backup_args(tmp_path))
    assert code == 0, text
    after_reset = state(host, BRIDGE)["tables"]
    item = only_backup(capsys, host, tmp_path)
    (account,) = Path(item["location"]).glob("crypto_account.*")
    account.write_bytes(account.read_bytes().replace(b"BRIDGEDEV1", damage))
    code, text = run(capsys, "restore", BRIDGE, item["id"], "--yes", *host.args(),
                     *backup_args(tmp_path))  # fmt: skip
    assert code == 1
    # Refused, not failed: nothing was written (ResetError.touched is False).
    assert f"restore refused (backup file {account.name} is damaged; nothing restored" in text
    assert state(host, BRIDGE)["tables"] == after_reset
    assert not fence_left(host)  # the refused load's fence is dropped with it


def fence_left(host: Host) -> bool:
    """Whether the bridge's database still holds a fence table (state() leaves it out, as
    backups do)."""

    async def go() -> bool:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            if isinstance(db, PgDb):
                return await db.conn.fetchval("SELECT to_regclass($1)", FENCE) is not None
            sql = "SELECT 1 FROM sqlite_master WHERE name = ?"
            return db.conn.execute(sql, (FENCE,)).fetchone() is not None
        finally:
            await db.close()

    return asyncio.run(go())


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


def test_dump_sum_is_what_dump_would_write_now(host: Host, tmp_path: Path) -> None:
    """Recovery asks whether the rows are still exactly the backed-up ones without writing a
    file: its lines and sha256 must be the dump's, for the rows the WHERE picks, read live."""
    table = "crypto_megolm_inbound_session"
    empty = (0, hashlib.sha256(b"").hexdigest())

    async def go() -> None:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            rows = await db.dump(table, tmp_path / "all.copy")
            assert rows == 1
            assert await db.dump_sum(table) == file_sum(tmp_path / "all.copy")
            assert await db.dump_sum(table, "1 = 1") == (rows, file_sum(tmp_path / "all.copy")[1])
            assert await db.dump_sum(table, "1 = 0") == empty
            assert await db.dump(table, tmp_path / "none.copy", "1 = 0") == 0
            assert file_sum(tmp_path / "none.copy") == empty
            assert await db.dump_sum("crypto_account") != await db.dump_sum(table)
            await db.delete(table, "1 = 0")  # a WHERE that picks nothing deletes nothing
            assert await db.dump_sum(table) == file_sum(tmp_path / "all.copy")
            await db.delete(table)
            assert await db.dump_sum(table) == empty
        finally:
            await db.close()

    asyncio.run(go())


def test_the_row_estimate_is_the_planners_or_none(host: Host) -> None:
    """Progress's total for a backup: PostgreSQL's estimate once the table was analyzed (0 for
    an analyzed empty table), none before, none for a table that is not there, none in SQLite."""
    table = "crypto_megolm_inbound_session"

    async def go() -> list[int | None]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            seen = [await db.estimate(table), await db.estimate("no_such_table")]
            if isinstance(db, PgDb):
                await db.conn.execute(f"ANALYZE {table}")
            seen.append(await db.estimate(table))
            await db.delete(table)
            if isinstance(db, PgDb):
                await db.conn.execute(f"VACUUM ANALYZE {table}")
            seen.append(await db.estimate(table))
            return seen
        finally:
            await db.close()

    got = asyncio.run(go())
    assert got == ([None, None, 1, 0] if host.pg is not None else [None] * 4)


def test_the_fence_is_only_ours_while_set(host: Host) -> None:
    """Recovery reads a step as done when the database holds that step's fence token: a store
    without one, or with another token, must not count."""

    async def go() -> list[bool]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            seen = [await db.has_fence("op-1:apply")]
            await db.set_fence("op-1:apply")
            seen += [await db.has_fence("op-1:apply"), await db.has_fence("op-2:apply")]
            await db.drop_fence()
            seen.append(await db.has_fence("op-1:apply"))
            return seen
        finally:
            await db.close()

    assert asyncio.run(go()) == [False, True, False, False]


def test_a_load_reports_what_it_streams(host: Host, tmp_path: Path) -> None:
    """The restore's progress counts the lines that stream in: every chunk handed on is bytes of
    the file, together the whole file."""
    table = "crypto_megolm_inbound_session"
    path = tmp_path / "rows.copy"

    async def go() -> list[bytes]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        seen: list[bytes] = []
        try:
            await db.dump(table, path)
            rows, sha = file_sum(path)
            assert rows == 1
            async with db.transaction():
                await db.delete(table)
                await db.load(table, path, rows, sha, await db.schema(), seen.append)
            assert await db.dump_sum(table) == (rows, sha)
        finally:
            await db.close()
        return seen

    assert b"".join(asyncio.run(go())) == path.read_bytes()


def test_a_full_reset_of_sqlite_removes_the_store_and_its_sidecars(tmp_path: Path) -> None:
    store = tmp_path / "bridge.db"
    names = ["bridge.db", "bridge.db-wal", "bridge.db-shm", "bridge.db-journal", "other.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    full.clear_sqlite(SqliteTarget(path=store))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_clear_removes_only_the_rows_its_where_picks(host: Host) -> None:
    """An old backup recorded kv_store's recovery key by a WHERE: restoring it clears that row,
    never the bridge's other settings (a TRUNCATE of the whole table would)."""

    async def go() -> tuple[int, int, int]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            await run_sql(db, "INSERT INTO kv_store VALUES ('', 'other', 'kept')")
            async with db.transaction():
                await db.clear([("crypto_account", ""), ("kv_store", crypto.RECOVERY_WHERE)])
            kept = await db.dump_sum("kv_store", "key = 'other'")
            return (
                (await db.dump_sum("crypto_account"))[0],
                (await db.dump_sum("kv_store"))[0],
                kept[0],
            )
        finally:
            await db.close()

    assert asyncio.run(go()) == (0, 1, 1)


def test_a_failed_transaction_keeps_every_row(host: Host) -> None:
    """A step's transaction that fails rolls back, also one nested in the fence's (a savepoint
    in SQLite, as asyncpg nests): the outer part still commits."""
    table = "crypto_megolm_inbound_session"

    async def go() -> tuple[tuple[int, str], tuple[int, str], tuple[int, str]]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            before = await db.dump_sum(table)
            with pytest.raises(RuntimeError):
                async with db.transaction():
                    await db.delete(table)
                    raise RuntimeError("the step failed")
            after_failure = await db.dump_sum(table)
            async with db.transaction():
                await db.delete("crypto_account")
                with pytest.raises(RuntimeError):
                    async with db.transaction():
                        await db.delete(table)
                        raise RuntimeError("the inner part failed")
            return before, after_failure, await db.dump_sum(table)
        finally:
            await db.close()

    before, after_failure, after_nested = asyncio.run(go())
    assert before[0] == 1 and after_failure == before and after_nested == before
    assert state(host, BRIDGE)["tables"]["crypto_account"][0] == 0  # the outer part committed


def test_a_digest_is_the_rows_in_order_whatever_order_they_were_written(host: Host) -> None:
    """A full reset compares whole tables by digest: every row, sorted by all columns in turn,
    in the dump's own encoding."""

    async def go(rows: list[str]) -> tuple[object, int, str]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            await run_sql(db, "DROP TABLE IF EXISTS ordered")
            await run_sql(db, "CREATE TABLE ordered (a INTEGER, b TEXT)")
            for row in rows:
                await run_sql(db, f"INSERT INTO ordered VALUES {row}")
            n = await db.dump("ordered", host.root / "ordered.copy")
            return await db.digest("ordered"), n, file_sum(host.root / "ordered.copy")[1]
        finally:
            await db.close()

    # Sorted by a, then b; by b alone the order would be the other one.
    digest, n, as_dumped = asyncio.run(go(["(1, 'z')", "(2, 'a')", "(2, 'b')"]))
    assert (digest.rows, digest.sha256, n) == (3, as_dumped, 3)
    again, _, _ = asyncio.run(go(["(2, 'b')", "(2, 'a')", "(1, 'z')"]))
    assert again == digest


def test_a_sqlite_store_busy_for_a_moment_is_waited_for(tmp_path: Path) -> None:
    """Another program holding the store's write lock for a few seconds (sqlite3's `.backup`
    from a cron job) delays a reset step; SQLite's default of 5 s would fail it."""
    host = deploy(tmp_path, None, "sqlite")
    path = resolve(BRIDGE, options(host)).db.path
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(6.0, other.execute, ("COMMIT",))
    timer.start()

    async def go() -> tuple[int, str]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            async with db.transaction():
                await db.delete("crypto_account")
            return await db.dump_sum("crypto_account")
        finally:
            await db.close()

    try:
        assert asyncio.run(go())[0] == 0
    finally:
        timer.join()
        other.close()


def test_a_sqlite_plan_lists_the_bridges_tables_not_sqlites_own(tmp_path: Path) -> None:
    host = deploy(tmp_path, None, "sqlite")
    target = resolve(BRIDGE, options(host)).db
    with sqlite3.connect(target.path) as conn:
        conn.execute("CREATE TABLE counted (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)")
        conn.execute("INSERT INTO counted (v) VALUES ('x')")  # SQLite adds sqlite_sequence

    async def go() -> list[str]:
        db = await open_db(target, read_only=True)
        try:
            return await db.tables()
        finally:
            await db.close()

    tables = asyncio.run(go())
    assert "counted" in tables and "crypto_account" in tables
    assert not [t for t in tables if t.startswith("sqlite_")]


def test_a_sqlite_store_that_is_not_one_is_a_sentence(tmp_path: Path) -> None:
    host = deploy(tmp_path, None, "sqlite")
    target = resolve(BRIDGE, options(host)).db
    target.path.write_bytes(b"not a database, " * 512)
    with pytest.raises(UnreadableStore) as e:
        asyncio.run(open_db(target, read_only=True))
    assert str(e.value) == f"reading {target.path} failed (file is not a database)."


def test_a_sqlite_backup_line_is_one_compact_json_array(tmp_path: Path) -> None:
    """docs/reset.md's format: one JSON array a row, bytes as {"b64": ...}; a backup file
    written today reads back in any later version."""
    host = deploy(tmp_path, None, "sqlite")
    target = resolve(BRIDGE, options(host)).db
    with sqlite3.connect(target.path) as conn:
        conn.execute("CREATE TABLE mixed (t TEXT, i INTEGER, n BLOB, b BLOB)")
        conn.execute("INSERT INTO mixed VALUES ('é \"q\"', 7, NULL, ?)", (b"\x00\x01\xff",))

    async def go() -> None:
        db = await open_db(target)
        try:
            await db.dump("mixed", tmp_path / "mixed.jsonl")
        finally:
            await db.close()

    asyncio.run(go())
    line = '["\\u00e9 \\"q\\"",7,null,{"b64":"AAH/"}]\n'
    assert (tmp_path / "mixed.jsonl").read_bytes() == line.encode("ascii")


def test_a_full_backup_file_short_of_rows_is_refused(tmp_path: Path) -> None:
    (tmp_path / "table.portal.copy").write_bytes(b"1\tone\n")
    files = {"portal": {"table": "portal", "file": "table.portal.copy", "rows": 2}}
    with pytest.raises(ResetError) as e:
        asyncio.run(full.verify_db(None, tmp_path, {"files": files}))  # type: ignore[arg-type]
    assert str(e.value) == "backup of portal has 1 rows on disk, the dump sent 2; aborted."
    assert "sha256" not in files["portal"]  # nothing recorded for a file refused


def test_a_file_sum_counts_every_chunks_lines(tmp_path: Path) -> None:
    """The verification reads a backup file back in 1 MiB chunks: lines and sha256 are the whole
    file's, also where a file is several chunks long and a line crosses a chunk's end."""
    line = b"x" * 999 + b"\n"
    data = line * 3000 + b"no newline at the end"  # about 3 MiB: three chunks and a bit
    path = tmp_path / "big.copy"
    path.write_bytes(data)
    assert file_sum(path) == (3000, hashlib.sha256(data).hexdigest())
    (tmp_path / "empty.copy").write_bytes(b"")
    assert file_sum(tmp_path / "empty.copy") == (0, hashlib.sha256(b"").hexdigest())


def test_a_table_whose_name_has_a_quote_is_read_whole(host: Host) -> None:
    """Table names come from the store's catalog, which the bridge's container can write: one
    with a double quote in it is quoted, not cut short or read as other SQL."""
    name = 'we"ird'

    async def go() -> tuple[int, tuple[int, str], TableSum, int | None]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            await run_sql(db, 'CREATE TABLE "we""ird" (a INTEGER)')
            await run_sql(db, 'INSERT INTO "we""ird" VALUES (1), (2)')
            tables = await db.tables()
            assert name in tables
            size = await db.size([name]) if isinstance(db, PgDb) else None
            got = (await db.dump(name, host.root / "weird.copy"), await db.dump_sum(name))
            digest = await db.digest(name)
            await db.delete(name)
            return got[0], got[1], digest, size
        finally:
            await db.close()

    rows, summed, digest, size = asyncio.run(go())
    assert rows == 2 and summed == file_sum(host.root / "weird.copy")
    assert (digest.rows, digest.sha256) == summed
    assert size is None or size > 0
    assert state(host, BRIDGE)["tables"][name][0] == 0


def test_a_postgres_digest_of_many_rows_is_the_dumps(pg: PgServer, tmp_path: Path) -> None:
    """A table of many rows reaches the digest in many pieces: every piece's lines count."""
    host = deploy(tmp_path, pg, "postgres")

    async def go() -> tuple[TableSum, tuple[int, str]]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            await run_sql(db, "CREATE TABLE many (a INTEGER, b TEXT)")
            await run_sql(
                db, "INSERT INTO many SELECT i, repeat('y', 200) FROM generate_series(1, 20000) i"
            )
            await db.dump("many", tmp_path / "many.copy")
            return await db.digest("many"), file_sum(tmp_path / "many.copy")
        finally:
            await db.close()

    digest, dumped = asyncio.run(go())
    assert (digest.rows, digest.sha256) == dumped and dumped[0] == 20000


def test_a_postgres_size_is_the_servers_figure(pg: PgServer, tmp_path: Path) -> None:
    """The disk check's estimate: the whole database's size, or the sum of the tables' own
    (indexes and TOAST included), as PostgreSQL reports them."""
    host = deploy(tmp_path, pg, "postgres")
    tables = ["crypto_account", "crypto_megolm_inbound_session"]

    async def go() -> tuple[list[int], int, list[int], int]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        assert isinstance(db, PgDb)
        try:
            c = db.conn
            # The server may add a page (a late free-space map) between two reads, even after
            # a vacuum, so each of ours is read before and after the one it is compared with.
            await c.execute("VACUUM")

            async def whole() -> int:
                return int(await c.fetchval("SELECT pg_database_size(current_database())"))

            async def two() -> int:
                q = "SELECT pg_total_relation_size($1)"
                return sum([int(await c.fetchval(q, t)) for t in tables])

            w0, size_all, w1 = await whole(), await db.size(None), await whole()
            t0, size_two, t1 = await two(), await db.size(tables), await two()
            return [w0, w1], size_all, [t0, t1], size_two
        finally:
            await db.close()

    whole, size_all, two, size_two = asyncio.run(go())
    assert whole[0] <= size_all <= whole[1] and two[0] <= size_two <= two[1]
    assert 0 < two[0] < whole[0]


def test_a_postgres_resets_connection_is_named_and_a_plans_cannot_write(
    pg: PgServer, tmp_path: Path
) -> None:
    """pg_stat_activity shows which connection is a reset's and which a plan's; a plan reads
    a live bridge's database and must not be able to write to it."""
    host = deploy(tmp_path, pg, "postgres")
    target = resolve(BRIDGE, options(host)).db

    async def go(read_only: bool | None) -> tuple[str, str]:
        if read_only is None:
            db = await PgDb.open(target)  # a reset's, unless a plan's is asked for
        else:
            db = await PgDb.open(target, read_only=read_only)
        try:
            return (
                await db.conn.fetchval("SELECT current_setting('application_name')"),
                await db.conn.fetchval("SELECT current_setting('transaction_read_only')"),
            )
        finally:
            await db.close()

    assert asyncio.run(go(False)) == ("bridgedoctor-reset", "off")
    assert asyncio.run(go(True)) == ("bridgedoctor-plan", "on")
    assert asyncio.run(go(None)) == ("bridgedoctor-reset", "off")


def one_row_store(path: Path, value: int) -> None:
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE t (a INTEGER)")
        con.execute("INSERT INTO t VALUES (?)", (value,))
    con.close()


def test_a_sqlite_store_whose_path_reads_as_a_uri_is_opened_itself(tmp_path: Path) -> None:
    """The store's path is the bridge's to choose: '?', '#' and '%' in it are part of the file
    name, not a URI's query or fragment (which would open, or create, another file)."""
    odd = tmp_path / "a?b#c%41"
    odd.mkdir()
    path = odd / "bridge.db"
    one_row_store(path, 7)
    before = sorted(p.name for p in tmp_path.rglob("*"))

    async def go() -> list[str]:
        db = await SqliteDb.open(SqliteTarget(path=path))
        try:
            async with db.transaction():
                await db.delete("t")
            return await db.tables()
        finally:
            await db.close()

    assert asyncio.run(go()) == ["t"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_sqlite_steps_transaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE, not a deferred BEGIN (or a bare SAVEPOINT, which is one): no other
    writer can change the store between a step's first read and its write."""
    path = tmp_path / "bridge.db"
    con = sqlite3.connect(path, isolation_level=None, timeout=0)
    con.execute("CREATE TABLE t (a INTEGER)")

    async def go() -> str:
        db = await SqliteDb.open(SqliteTarget(path=path))
        try:
            async with db.transaction():
                with pytest.raises(sqlite3.OperationalError) as locked:
                    con.execute("INSERT INTO t VALUES (1)")
                await db.delete("t")
            return str(locked.value)
        finally:
            await db.close()

    assert asyncio.run(go()) == "database is locked"
    con.execute("INSERT INTO t VALUES (2)")  # and it lets go at the end
    assert con.execute("SELECT a FROM t").fetchall() == [(2,)]
    con.close()


def test_a_sqlite_statement_outside_a_transaction_is_committed_at_once(tmp_path: Path) -> None:
    """The connection is in autocommit (isolation_level None): a statement outside a step's
    transaction is not held in an implicit one that closing the connection would throw away."""
    path = tmp_path / "bridge.db"
    one_row_store(path, 1)

    async def go() -> None:
        db = await SqliteDb.open(SqliteTarget(path=path))
        try:
            await db.delete("t")
        finally:
            await db.close()

    asyncio.run(go())
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_sqlite_store_gone_before_a_step_is_named_and_not_made(tmp_path: Path) -> None:
    """A store removed between the plan and a step: the step says which file is missing and
    creates no empty root-owned one in its place."""
    path = tmp_path / "bridge.db"
    with pytest.raises(MissingDatabase) as gone:
        asyncio.run(SqliteDb.open(SqliteTarget(path=path)))
    assert str(gone.value) == f"the database {path} does not exist"
    assert not path.exists()


def test_a_whole_file_the_database_refuses_fails_with_the_databases_error(
    host: Host, tmp_path: Path
) -> None:
    """Only a file changed since its backup is called damaged: a load of a whole file that the
    database refuses part-way (here: its rows are there already) fails with the database's own
    error, which says what is wrong."""
    path = tmp_path / "keyed.copy"

    async def go() -> BaseException:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            await run_sql(db, "CREATE TABLE keyed (a INTEGER PRIMARY KEY, b TEXT)")
            await run_sql(db, "INSERT INTO keyed VALUES (1, 'one'), (2, 'two')")
            await db.dump("keyed", path)
            rows, sha = file_sum(path)
            assert rows == 2
            with pytest.raises(Exception) as e:
                async with db.transaction():
                    await db.load("keyed", path, rows, sha, await db.schema())
            return e.value
        finally:
            await db.close()

    refused = asyncio.run(go())
    assert isinstance(refused, (asyncpg.UniqueViolationError, sqlite3.IntegrityError)), refused


def test_a_postgres_table_of_many_rows_is_summed_and_loaded_whole(
    pg: PgServer, tmp_path: Path
) -> None:
    """A table of several MiB reaches `dump_sum` in many pieces and is loaded back in 1 MiB
    chunks: every piece's lines count, or a whole backup would be called damaged."""
    host = deploy(tmp_path, pg, "postgres")
    path = tmp_path / "many.copy"

    async def go() -> tuple[tuple[int, str], tuple[int, str]]:
        db = await open_db(resolve(BRIDGE, options(host)).db)
        try:
            await run_sql(db, "CREATE TABLE many (a INTEGER, b TEXT)")
            await run_sql(
                db, "INSERT INTO many SELECT i, repeat('y', 200) FROM generate_series(1, 20000) i"
            )
            await db.dump("many", path)
            before = await db.dump_sum("many")
            async with db.transaction():
                await db.delete("many")
                await db.load("many", path, *file_sum(path), await db.schema())
            return before, await db.dump_sum("many")
        finally:
            await db.close()

    before, after = asyncio.run(go())
    assert path.stat().st_size > 3 << 20
    assert before == file_sum(path) == after and before[0] == 20000
