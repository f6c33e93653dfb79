"""Full reset: the whole bridge database and data directory, backed up, then emptied.

PostgreSQL: we connect with the bridge's own credentials (MDAD makes that user the database
owner). The schema comes from `pg_dump --section=pre-data/post-data` (run with the same
credentials, password via PGPASSWORD, never argv; the host's pg_dump if it is new enough, else
the one in MDAD's matrix-postgres container, see pgdump.py); rows are dumped per table with COPY, exactly
like the crypto backup, and sequences with their values. Only the bridge schema's own objects are
dumped and restored, so the bridge's foreign-tables check never sees anything else. Emptying is
`DROP OWNED BY CURRENT_USER` in one transaction: a fresh database owned by the same user.
SQLite: the database file sits in the data directory, so the data directory tar holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..probes.database import SqliteTarget
from . import pgdump
from .dbio import Db, PgDb, file_sum, qi
from .errors import ResetError

# A SQLite store kept outside the data directory is backed up as this copy (inside, data.tar
# holds it).
SQLITE_COPY = "database.sqlite"


async def backup_db(db: Db, dest: Path) -> dict[str, Any]:
    """Returns what the manifest needs to restore: files and sequence values."""
    if not isinstance(db, PgDb):
        return {}
    conn = db.conn
    await check_owner(db)
    dumper = await dumper_for(db)
    schema = await db.schema()
    pgdump.dump(dumper, db.target, "pre-data", schema, dest / "schema-pre.sql")
    pgdump.dump(dumper, db.target, "post-data", schema, dest / "schema-post.sql")
    tables = {}
    for t in await db.tables():
        f = f"table.{t}.copy"
        tables[t] = {"table": t, "file": f, "rows": await db.dump(t, dest / f)}
    seqs = await conn.fetch(
        "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = current_schema()"
    )
    return {
        "schema": schema,
        "files": tables,
        "sequences": {r[0]: r[1] for r in seqs},
        "sql": {n: file_sum(dest / n)[1] for n in ("schema-pre.sql", "schema-post.sql")},
    }


async def dumper_for(db: PgDb) -> pgdump.Dumper:
    """The pg_dump for this server (a plan asks too, so that a host without one is told before
    its bridge is stopped); a refusal naming the client to install otherwise."""
    num = int(await db.conn.fetchval("SHOW server_version_num"))
    return pgdump.choose(db.target, pgdump.major_of(num))


async def check_owner(db: PgDb) -> None:
    """DROP OWNED is only safe in a database that is the bridge's own (MDAD's shape)."""
    ok = await db.conn.fetchval(
        "SELECT NOT r.rolsuper AND d.datdba = r.oid FROM pg_roles r, pg_database d "
        "WHERE r.rolname = current_user AND d.datname = current_database()"
    )
    if not ok:
        raise ResetError(
            "the bridge's database user does not own its database (or is a superuser); a full "
            "reset would touch more than the bridge. Nothing was changed.",
        )


async def verify_db(db: Db, dest: Path, info: dict[str, Any]) -> None:
    for rec in info["files"].values():
        rows, sha = file_sum(dest / rec["file"])
        if rows != rec["rows"]:
            raise ResetError(
                f"backup of {rec['table']} has {rows} rows on disk, the dump sent {rec['rows']}; "
                "aborted."
            )
        rec["sha256"] = sha


async def clear_db(db: Db) -> None:
    if isinstance(db, PgDb):
        schema = await db.schema()
        async with db.transaction():
            await db.conn.execute("DROP OWNED BY CURRENT_USER")
            await db.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {qi(schema)}")


def clear_sqlite(t: SqliteTarget) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{t.path}{suffix}").unlink(missing_ok=True)


def _damaged_sql(src: Path, sums: dict[str, str]) -> str | None:
    """The first schema file that no longer reads back with its recorded sha256."""
    return next((n for n, sha in sums.items() if file_sum(src / n)[1] != sha), None)


def check_files(src: Path, info: dict[str, Any]) -> None:
    """Before a full restore writes anything (its data directory goes back first): every file
    the database will be rebuilt from must still be as verified, or the restore would stop
    half-way with the data directory already replaced."""
    damaged = _damaged_sql(src, info.get("sql", {}))
    if damaged:
        raise ResetError(f"backup file {damaged} is damaged")
    for rec in info["files"].values():
        if file_sum(src / rec["file"]) != (rec["rows"], rec["sha256"]):
            raise ResetError(f"backup file {rec['file']} is damaged")
    sqlite_sha = info.get("sqlite_sha256")  # recorded since 2026-11-30; older copies unchecked
    copy = src / SQLITE_COPY
    if sqlite_sha is not None and (not copy.is_file() or file_sum(copy)[1] != sqlite_sha):
        raise ResetError(f"backup file {SQLITE_COPY} is damaged")


async def restore_db(db: Db, src: Path, info: dict[str, Any]) -> None:
    if not isinstance(db, PgDb):
        return
    damaged = _damaged_sql(src, info["sql"])
    if damaged:  # checked before the data directory went back; this is only a race
        raise ResetError(f"backup file {damaged} is damaged; nothing restored.")
    schema = info["schema"]
    conn = db.conn
    async with db.transaction():
        await conn.execute("DROP OWNED BY CURRENT_USER")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {qi(schema)}")
        await conn.execute(_sql(src / "schema-pre.sql"))
        for rec in info["files"].values():
            await db.load(rec["table"], src / rec["file"], rec["rows"], rec["sha256"], schema)
        for seq, value in info["sequences"].items():
            if value is not None:
                await conn.execute("SELECT setval($1, $2, true)", f"{qi(schema)}.{qi(seq)}", value)
        await conn.execute(_sql(src / "schema-post.sql"))
        await conn.execute("RESET search_path")


def _sql(path: Path) -> str:
    # pg_dump ≥ 15.14/17.6 writes psql meta-commands (\restrict); they are not SQL.
    # The schema may still exist after DROP OWNED (PG 15+: owned by pg_database_owner).
    lines = path.read_text("utf-8").splitlines()
    out = [
        "CREATE SCHEMA IF NOT EXISTS " + line[len("CREATE SCHEMA ") :]
        if line.startswith("CREATE SCHEMA ")
        else line
        for line in lines
        if not line.startswith("\\")
    ]
    return "\n".join(out)
