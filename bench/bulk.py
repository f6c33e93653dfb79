"""Many crypto-store rows, fast: a few genuine libolm pickles replicated, loaded with COPY.

python-olm needs ~0.2 ms to make and pickle one inbound Megolm session and ~1.6 ms for an Olm
session, so a million genuine sessions would take minutes. The verifier reads only the pickle
bytes, and identical bytes verify identically, so a pool of genuine pickles is made with
python-olm and its bytes are repeated under distinct session ids. The bench says so in its output.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import asyncpg
import olm

POOL = 1000  # genuine pickles per kind; rows repeat them round-robin
ROOM = "!portal1:example.com"
SENDER = "A" * 43


def session_id(kind: str, i: int) -> str:
    """A unique 43-character id, shaped like a real (unpadded base64 of 32 bytes) one."""
    raw = kind.encode()[:8].ljust(8, b"\0") + i.to_bytes(24, "big")
    return base64.b64encode(raw).decode().rstrip("=")


def inbound_pool(key: str, n: int = POOL) -> list[bytes]:
    out = []
    for _ in range(n):
        group = olm.OutboundGroupSession()
        out.append(olm.InboundGroupSession(group.session_key).pickle(key))
    return out


def olm_pool(key: str, n: int = POOL) -> list[bytes]:
    acct, peer = olm.Account(), olm.Account()
    out: list[bytes] = []
    while len(out) < n:
        peer.generate_one_time_keys(min(100, n - len(out)))
        for otk in peer.one_time_keys["curve25519"].values():
            sess = olm.OutboundSession(acct, peer.identity_keys["curve25519"], otk)
            out.append(sess.pickle(key))
        peer.mark_keys_as_published()
    return out


def inbound_rows(pool: list[bytes], count: int, start: int = 0) -> Iterator[tuple]:
    """Rows of mautrix-go's crypto_megolm_inbound_session."""
    for i in range(start, start + count):
        sid = session_id("megolm", i)
        yield ("", sid, SENDER, SENDER, ROOM, pool[i % len(pool)], None, None)


def olm_rows(pool: list[bytes], count: int, start: int = 0) -> Iterator[tuple]:
    """Rows of mautrix-go's crypto_olm_session."""
    for i in range(start, start + count):
        yield ("", session_id("olm", i), SENDER, pool[i % len(pool)], None, None, None)


INBOUND_COLS = (
    "account_id",
    "session_id",
    "sender_key",
    "signing_key",
    "room_id",
    "session",
    "forwarding_chains",
    "withheld_code",
)
OLM_COLS = ("account_id", "session_id", "sender_key", "session")
BATCH = 50_000


async def fill_pg(conn: asyncpg.Connection, inbound: int, olm_sessions: int, key: str) -> None:
    """Add `inbound` Megolm and `olm_sessions` Olm session rows under `key` (COPY)."""
    ipool, opool = inbound_pool(key), olm_pool(key, min(POOL, max(olm_sessions, 1)))
    await _copy(conn, "crypto_megolm_inbound_session", INBOUND_COLS, inbound_rows(ipool, inbound))
    rows = (r[:4] for r in olm_rows(opool, olm_sessions))
    await _copy(conn, "crypto_olm_session", OLM_COLS, rows)
    await conn.execute("ANALYZE")


async def _copy(conn: asyncpg.Connection, table: str, cols: tuple, rows: Iterator[tuple]) -> None:
    batch: list[tuple] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= BATCH:
            await conn.copy_records_to_table(table, records=batch, columns=cols)
            batch = []
    if batch:
        await conn.copy_records_to_table(table, records=batch, columns=cols)
