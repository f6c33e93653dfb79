"""`check --deep`: stream every pickled row of a crypto store through the bulk verifier.

Memory stays bounded whatever the store's size: PostgreSQL rows come through a server-side cursor
FETCH_ROWS at a time (the next batch is requested before the current one is verified, so the
server produces it meanwhile), SQLite rows through `fetchmany` in one worker thread. Read-only,
like every probe.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence

from ..bulk_verify import BulkVerifier, Tally
from ..facts import ProbeError, StoreScan, TableScan
from ..proof import Candidate
from .collect import PG_TABLES_SQL, PICKLED, SQLITE_TABLES_SQL
from .database import QUERY_TIMEOUT, PgTarget, SqliteTarget, _reason

FETCH_ROWS = 2000  # ~1 MB of pickles per batch


def _sql(table: str, col: str) -> str:
    # Names come from the PICKLED constants, never from the store.
    return f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL"


async def scan(
    target: PgTarget | SqliteTarget, candidates: Sequence[Candidate]
) -> StoreScan | ProbeError:
    started = time.monotonic()
    verifier = BulkVerifier([c.key for c in candidates])
    if isinstance(target, SqliteTarget):
        tallies = await asyncio.to_thread(_scan_sqlite, target, verifier)
    else:
        tallies = await _scan_pg(target, verifier)
    if isinstance(tallies, ProbeError):
        return tallies
    return StoreScan(
        candidates=tuple(candidates),
        tables=tuple(
            TableScan(
                table=PICKLED[kind][0],
                kind=kind,
                rows=t.rows,
                opened=dict(t.opened),
                bad_plaintext=dict(t.bad_plaintext),
                unknown=t.unknown,
                corrupt=t.corrupt,
            )
            for kind, t in tallies.items()
        ),
        seconds=time.monotonic() - started,
    )


async def _scan_pg(t: PgTarget, verifier: BulkVerifier) -> dict[str, Tally] | ProbeError:
    import asyncpg

    try:
        conn = await t.connect(read_only=True, application_name="bridgedoctor-deep")
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as e:
        return ProbeError("db_unreachable", f"cannot reach {t.location} ({_reason(e)}).")
    try:
        tables = {str(r[0]) for r in await conn.fetch(PG_TABLES_SQL)}
        out: dict[str, Tally] = {}
        for kind, (table, col) in PICKLED.items():
            if table not in tables:
                continue
            tally = out[kind] = Tally()
            async with conn.transaction():  # a cursor lives in a (read-only) transaction
                cur = await conn.cursor(_sql(table, col))
                pending = asyncio.ensure_future(cur.fetch(FETCH_ROWS))
                while rows := await pending:
                    pending = asyncio.ensure_future(cur.fetch(FETCH_ROWS))
                    await asyncio.sleep(0)  # let the next FETCH go out before verifying this one
                    verifier.feed(kind, [r[0] for r in rows], tally)
                pending.cancel()
        return out
    except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as e:
        return ProbeError("db_unreachable", f"reading {t.location} failed ({_reason(e)}).")
    finally:
        await conn.close()


def _scan_sqlite(t: SqliteTarget, verifier: BulkVerifier) -> dict[str, Tally] | ProbeError:
    if not t.path.is_file():
        return ProbeError("db_unreachable", f"the SQLite database {t.path} does not exist.")
    try:
        conn = sqlite3.connect(f"{t.path.as_uri()}?mode=ro", uri=True, timeout=QUERY_TIMEOUT)
    except sqlite3.Error as e:
        return ProbeError("db_unreachable", f"cannot open {t.path} read-only ({e}).")
    try:
        tables = {str(r[0]) for r in conn.execute(SQLITE_TABLES_SQL)}
        out: dict[str, Tally] = {}
        for kind, (table, col) in PICKLED.items():
            if table in tables:
                tally = out[kind] = Tally()
                cur = conn.execute(_sql(table, col))
                while rows := cur.fetchmany(FETCH_ROWS):
                    verifier.feed(kind, [r[0] for r in rows], tally)
        return out
    except sqlite3.DatabaseError as e:
        return ProbeError("db_unreachable", f"reading {t.path} failed ({e}).")
    finally:
        conn.close()
