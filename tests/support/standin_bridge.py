"""A stand-in bridge process, run by tests/support/fake_systemctl as the unit's process.

While its unit is active it does what a running mautrix bridge does to its crypto store: it keeps
storing new olm sessions, one row every STANDIN_INTERVAL seconds, and after each commit appends
the row's session_id to STANDIN_LOG (fsynced). So a test can ask, for every row the "bridge" ever
wrote, where it went: still in the database, in a backup, or lost. It never creates a database or
a table (a fresh bridge would, but these rows are only about loss): with the store missing or
emptied it waits. SIGTERM ends it at once, as `docker stop` ends a bridge.

Environment: STANDIN_DSN (postgres://...) or STANDIN_SQLITE (a path), STANDIN_LOG, and
optionally STANDIN_INTERVAL (default 0.02).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys

TAG = "~standin-"  # never in base64, so never in a real session id
INSERT = (
    "INSERT INTO crypto_olm_session (account_id, session_id, sender_key, session) "
    "VALUES ('', {p1}, 'standin', {p2})"
)


def log_row(path: str, sid: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (sid + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def run_pg(dsn: str, log: str, interval: float) -> None:
    import asyncpg

    n, conn = 0, None
    while True:
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(dsn, timeout=5)
            sid = f"{TAG}{os.getpid()}-{n}"
            await conn.execute(INSERT.format(p1="$1", p2="$2"), sid, sid.encode())
            log_row(log, sid)
            n += 1
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            conn = None
        await asyncio.sleep(interval)


async def run_sqlite(path: str, log: str, interval: float) -> None:
    n = 0
    while True:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
            try:
                sid = f"{TAG}{os.getpid()}-{n}"
                with conn:
                    conn.execute(INSERT.format(p1="?", p2="?"), (sid, sid.encode()))
                log_row(log, sid)
                n += 1
            finally:
                conn.close()
        except sqlite3.Error:
            pass
        await asyncio.sleep(interval)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    log = os.environ["STANDIN_LOG"]
    interval = float(os.environ.get("STANDIN_INTERVAL", "0.02"))
    if os.environ.get("STANDIN_DSN"):
        asyncio.run(run_pg(os.environ["STANDIN_DSN"], log, interval))
    elif os.environ.get("STANDIN_SQLITE"):
        asyncio.run(run_sqlite(os.environ["STANDIN_SQLITE"], log, interval))
    else:
        sys.exit("STANDIN_DSN or STANDIN_SQLITE is required")


if __name__ == "__main__":
    main()
