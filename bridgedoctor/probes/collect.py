"""What a check reads from a bridge database, the same SQL for PostgreSQL and SQLite.

Two round trips whatever the store's size: the table list, then one batched query for the
version tables, database_owner, the crypto_account rows and a few pickled rows per kind. Nothing
is counted: a store with a million sessions costs what an empty one does.

Every row count, length and value is bounded in the SQL itself, because the bridge writes its
own database: a million crypto accounts, a gigabyte pickle, a version column turned into text or
a table name with a right-to-left override must cost the check nothing and reach no output raw.

Standard library only: the SQLite read runs in a child process (probes/sqlite_read.py) that
imports this and little else.
"""

from __future__ import annotations

from ..render.neutral import one_line

# Not typing's TYPE_CHECKING: the SQLite reader's fork server imports this module, and
# importing typing is a tenth of its start.
TYPE_CHECKING = False
if TYPE_CHECKING:  # the SQLite reader's child sends `parts_of` and never builds these classes
    from typing import Any

    from ..facts import DbFacts

SAMPLE = 5
MAX_TABLES = 2000
MAX_ACCOUNTS = 4
MAX_PICKLE = 64 * 1024  # a libolm account pickle is about 1 KiB
MAX_TEXT = 200  # account ids, device ids, database_owner, table names
VERSION_TABLES = ("version", "mx_version", "crypto_version")
# Pickled rows per kind: (table, column). A few of each are sampled by `check`.
PICKLED = {
    "olm_session": ("crypto_olm_session", "session"),
    "megolm_inbound": ("crypto_megolm_inbound_session", "session"),
    "megolm_outbound": ("crypto_megolm_outbound_session", "session"),
    "secret": ("crypto_secrets", "secret"),
}
PG_TABLES_SQL = (
    f"SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LIMIT {MAX_TABLES}"
)
# The same list as one JSON text, a column of the identity query (dbpin.who_and): every name
# qualified, as it runs before the role is judged.
PG_TABLES_JSON = (
    "(SELECT pg_catalog.json_agg(t.tablename)::pg_catalog.text FROM (SELECT p.tablename "
    "FROM pg_catalog.pg_tables p WHERE p.schemaname OPERATOR(pg_catalog.=) "
    f"pg_catalog.current_schema() LIMIT {MAX_TABLES}) t)"
)
SQLITE_TABLES_SQL = f"SELECT name FROM sqlite_master WHERE type = 'table' LIMIT {MAX_TABLES}"


def table_names(rows: Any) -> frozenset[str]:
    """The table list as it may be shown: one line each, bounded."""
    return frozenset(one_line(str(r[0]), MAX_TEXT) for r in rows)


def batch_sql(tables: frozenset[str], blob: str) -> str | None:
    """Everything `check` reads after the table list, as one query (one round trip): rows of
    (what, text, text, pickle). Only tables that exist are named. `blob` is the dialect's binary
    type; every column is cast, because PostgreSQL types a UNION pairwise from the left and an
    untyped NULL would become text. Table and column names are constants here."""
    none, nob = "CAST(NULL AS TEXT)", f"CAST(NULL AS {blob})"

    def text(expr: str) -> str:
        return f"substr(CAST({expr} AS TEXT), 1, {MAX_TEXT})"

    parts = [
        f"SELECT '{vt}', {text('version')}, {none}, {nob} "
        f"FROM (SELECT version FROM {vt} LIMIT 1) AS v"
        for vt in VERSION_TABLES
        if vt in tables
    ]
    if "database_owner" in tables:
        parts.append(
            f"SELECT 'owner', {text('owner')}, {none}, {nob} "
            "FROM (SELECT owner FROM database_owner LIMIT 1) AS o"
        )
    if "crypto_account" in tables:
        parts.append(
            f"SELECT 'account', {text('account_id')}, {text('device_id')}, "
            f"CAST(account AS {blob}) FROM (SELECT account_id, device_id, account "
            f"FROM crypto_account WHERE length(account) <= {MAX_PICKLE} "
            f"LIMIT {MAX_ACCOUNTS}) AS a"
        )
    for kind, (table, col) in PICKLED.items():
        if table in tables:
            parts.append(
                f"SELECT '{kind}', {none}, {none}, CAST({col} AS {blob}) FROM "
                f"(SELECT {col} FROM {table} WHERE {col} IS NOT NULL "
                f"AND length({col}) <= {MAX_PICKLE} LIMIT {SAMPLE}) AS s"
            )
    return "\nUNION ALL\n".join(parts) or None


Parts = tuple[dict[str, int], "str | None", list[tuple[str, str, bytes]], dict[str, list[bytes]]]


def parts_of(tables: frozenset[str], rows: list[tuple[Any, ...]]) -> Parts:
    """The batched query's rows as (versions, owner, accounts, samples), bounded and plain."""
    versions: dict[str, int] = {}
    owner = None
    accounts: list[tuple[str, str, bytes]] = []
    samples: dict[str, list[bytes]] = {k: [] for k, (t, _) in PICKLED.items() if t in tables}
    for what, a, b, blob in rows:
        if what in VERSION_TABLES:
            version = _int(a)
            if version is not None:
                versions[what] = version
        elif what == "owner":
            owner = None if a is None else _text(a)
        elif what == "account":
            accounts.append((_text(a), _text(b), as_bytes(blob)))
        elif what in samples:
            samples[what].append(as_bytes(blob))
    return versions, owner, accounts, samples


def facts_of(
    kind: str, location: str, tables: frozenset[str], rows: list[tuple[Any, ...]]
) -> DbFacts:
    from ..facts import DbFacts, StoredAccount

    versions, owner, accounts, samples = parts_of(tables, rows)
    return DbFacts(
        kind=kind,  # type: ignore[arg-type]
        location=location,
        tables=tables,
        versions=versions,
        owner=owner,
        accounts=tuple(StoredAccount(*a) for a in accounts),
        samples={k: tuple(v) for k, v in samples.items()},
    )


def as_bytes(v: object) -> bytes:
    """A pickle column as bytes. Anything but bytes or text (a column the bridge retyped) is
    empty: never `bytes(n)`, which would allocate n zero bytes."""
    if isinstance(v, memoryview):
        return v.tobytes()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("ascii", "replace")
    return b""


def _int(v: object) -> int | None:
    text = str(v).strip() if v is not None else ""
    # One sign at most: "--1" is no number (int() would raise, and the whole read fail).
    digits = text[1:] if text.startswith("-") else text
    return int(text) if text.isascii() and digits.isdigit() and len(text) < 19 else None


def _text(v: object) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        v = bytes(v).decode("utf-8", "replace")
    return "" if v is None else one_line(str(v), MAX_TEXT)
