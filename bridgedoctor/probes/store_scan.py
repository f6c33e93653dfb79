"""`check --deep`: stream every pickled row of a crypto store through the bulk verifier.

Memory stays bounded whatever the store's size: PostgreSQL rows come through a server-side cursor
FETCH_ROWS at a time (the next batch is requested before the current one is verified, so the
server produces it meanwhile), SQLite rows through `fetchmany` in the killable child process of
probes/sqlite_read.py (the bridge can swap its store for a FIFO). Read-only, like every probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path

from ..bulk_verify import Tally
from ..dbpin import IdentityRefused
from ..facts import ProbeError, StoreScan, TableScan
from ..proof import Candidate
from . import sqlite_read
from .collect import PG_TABLES_SQL, PICKLED
from .database import PgTarget, SqliteTarget, _reason
from .scan_worker import Spread

FETCH_ROWS = 2000  # ~1 MB of pickles per batch
_first = itemgetter(0)


def _sql(table: str, col: str) -> str:
    # Names come from the PICKLED constants, never from the store.
    return f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL"


async def scan(
    target: PgTarget | SqliteTarget, candidates: Sequence[Candidate], base: Path | None = None
) -> StoreScan | ProbeError:
    """`base`: the bridge directory a SQLite store must lie in (default: the store's own)."""
    started = time.monotonic()
    keys = [c.key for c in candidates]
    if isinstance(target, SqliteTarget):
        # In the killable child, as every read of a store the running bridge can swap.
        tallies = await sqlite_read.scan(target.path, base or target.path.parent, keys)
    else:
        tallies = await _scan_pg(target, Spread(keys))
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


async def _scan_pg(t: PgTarget, spread: Spread) -> dict[str, Tally] | ProbeError:
    import asyncpg

    try:
        conn = await t.connect(read_only=True, application_name="bridgedoctor-deep")
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, IdentityRefused) as e:
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
                    await spread.feed(kind, list(map(_first, rows)), tally)
                pending.cancel()
        await spread.finish()
        return out
    except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as e:
        return ProbeError("db_unreachable", f"reading {t.location} failed ({_reason(e)}).")
    finally:
        await spread.finish()
        await conn.close()
