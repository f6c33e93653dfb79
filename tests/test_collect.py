"""probes/collect.py: what a check reads from a bridge database, bounded in the SQL and in the
values, against a real SQLite store the bridge could have written anything into (PostgreSQL
runs the same SQL: tests/test_dbpin.py, tests/test_check.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridgedoctor.facts import DbFacts, StoredAccount
from bridgedoctor.probes import collect, sqlite_child
from bridgedoctor.probes.collect import (
    MAX_PICKLE,
    SQLITE_TABLES_SQL,
    as_bytes,
    batch_sql,
    facts_of,
    parts_of,
    table_names,
)


def read(conn: sqlite3.Connection) -> tuple[frozenset[str], list[tuple]]:
    tables = table_names(conn.execute(SQLITE_TABLES_SQL))
    sql = batch_sql(tables, "BLOB")
    return tables, conn.execute(sql).fetchall() if sql else []


def store(tmp_path: Path, *tables: str) -> sqlite3.Connection:
    """A store to write into; read it with `read(sqlite_child._connect(path))`, the SQLite
    reader's own connection."""
    conn = sqlite3.connect(tmp_path / "x.db")
    for t in tables:
        conn.execute(t)
    conn.commit()
    return conn


def test_an_empty_database_reads_as_nothing(tmp_path: Path) -> None:
    store(tmp_path)
    assert read(sqlite_child._connect(tmp_path / "x.db")) == (frozenset(), [])
    assert batch_sql(frozenset(), "BLOB") is None
    assert batch_sql(frozenset({"unrelated"}), "BLOB") is None
    facts = facts_of("sqlite", "x.db", frozenset(), [])
    assert facts == DbFacts(kind="sqlite", location="x.db", tables=frozenset(), versions={},
                            owner=None, accounts=(), samples={})  # fmt: skip


def test_what_a_bridge_wrote_is_read_bounded(tmp_path: Path) -> None:
    conn = store(
        tmp_path,
        "CREATE TABLE version (version)",
        "CREATE TABLE mx_version (version)",
        "CREATE TABLE crypto_version (version)",
        "CREATE TABLE database_owner (owner)",
        "CREATE TABLE crypto_account (account_id, device_id, account)",
        "CREATE TABLE crypto_olm_session (session)",
        "CREATE TABLE crypto_megolm_inbound_session (session)",
        "CREATE TABLE crypto_megolm_outbound_session (session)",
        "CREATE TABLE crypto_secrets (secret)",
        'CREATE TABLE "evil\u202etable\nname" (x)',
    )
    conn.execute("INSERT INTO version VALUES (' 17 ')")  # text around a number
    conn.execute("INSERT INTO mx_version VALUES ('-3')")
    conn.execute("INSERT INTO crypto_version VALUES ('1e5')")  # not an integer: not a version
    conn.execute("INSERT INTO database_owner VALUES (?)", (b"own\xffer\n" + b"x" * 300,))
    accounts = [
        ("@bot:ex.org", "DEV1", b"pickle-1"),
        (b"@b\xffyte:ex.org", 12, "text-pickle"),  # retyped columns
        ("@big:ex.org", "DEV3", b"x" * (MAX_PICKLE + 1)),  # too big: never read
        ("@int:ex.org", None, 123),
        ("@five:ex.org", "DEV5", b"p5"),
        ("@six:ex.org", "DEV6", b"p6"),  # past MAX_ACCOUNTS
    ]
    conn.executemany("INSERT INTO crypto_account VALUES (?, ?, ?)", accounts)
    conn.executemany(
        "INSERT INTO crypto_olm_session VALUES (?)",
        [(None,), (b"x" * (MAX_PICKLE + 1),), *[(b"olm%d" % i,) for i in range(8)]],
    )
    conn.execute("INSERT INTO crypto_megolm_inbound_session VALUES (?)", (b"x" * MAX_PICKLE,))
    conn.execute("INSERT INTO crypto_secrets VALUES ('s\u00e9cret')")
    conn.commit()
    tables, rows = read(sqlite_child._connect(tmp_path / "x.db"))
    assert "evil\\u202etable\\x0aname" in tables and len(tables) == 10
    versions, owner, got_accounts, samples = parts_of(tables, rows)
    assert versions == {"version": 17, "mx_version": -3}
    assert owner == "own\ufffder\\x0a" + "x" * 187 + "..."
    assert got_accounts == [
        ("@bot:ex.org", "DEV1", b"pickle-1"),
        ("@b\ufffdyte:ex.org", "12", b"text-pickle"),
        ("@int:ex.org", "", b"123"),  # CAST(123 AS BLOB)
        ("@five:ex.org", "DEV5", b"p5"),
    ]
    assert samples == {
        "olm_session": [b"olm%d" % i for i in range(5)],
        "megolm_inbound": [b"x" * MAX_PICKLE],
        "megolm_outbound": [],
        "secret": ["s\u00e9cret".encode()],  # CAST(text AS BLOB): its UTF-8
    }
    facts = facts_of("sqlite", "x.db", tables, rows)
    assert facts.accounts[0] == StoredAccount("@bot:ex.org", "DEV1", b"pickle-1")
    assert facts.samples["olm_session"] == tuple(samples["olm_session"])
    assert (facts.kind, facts.location, facts.owner, facts.versions) == (
        "sqlite", "x.db", owner, versions
    )  # fmt: skip
    # Only the tables that exist are asked for: no version table, no owner, no samples.
    assert parts_of(frozenset({"crypto_account"}), rows[-1:]) == ({}, None, [], {})


@pytest.mark.parametrize(
    ("value", "version"),
    [
        (17, 17), ("17", 17), (" 17\n", 17), ("-1", -1), ("0", 0), ("", None), (None, None),
        ("1.5", None), ("٣", None), ("--1", None), ("1-", None), ("9" * 18, int("9" * 18)),
        ("9" * 19, None), ("-" + "9" * 17, -int("9" * 17)), ("-" + "9" * 18, None), (b"7", None),
    ],
)  # fmt: skip
def test_a_version_is_a_bounded_integer_or_nothing(value: object, version: int | None) -> None:
    rows = [("version", value, None, None)]
    assert parts_of(frozenset({"version"}), rows)[0] == (
        {} if version is None else {"version": version}
    )


@pytest.mark.parametrize(
    ("value", "out"),
    [
        (b"abc", b"abc"), (bytearray(b"abc"), b"abc"), (memoryview(b"abc"), b"abc"),
        ("abc", b"abc"), ("\u00e9", b"?"), (5, b""), (None, b""), (1.5, b""),
    ],
)  # fmt: skip
def test_a_pickle_column_is_bytes_whatever_it_holds(value: object, out: bytes) -> None:
    assert as_bytes(value) == out
    assert type(as_bytes(value)) is bytes


def test_an_owner_column_of_null_is_no_owner_and_texts_are_bounded() -> None:
    tables = frozenset({"database_owner", "crypto_account"})
    rows = [("owner", None, None, None)]
    assert parts_of(tables, rows)[1] is None
    rows = [("account", memoryview(b"\xe2\x80\xae@x"), bytearray(b"\xffD"), b"")]
    assert parts_of(tables, rows)[2] == [("\\u202e@x", "\ufffdD", b"")]
    long = "a" * 250
    assert parts_of(tables, [("owner", long, None, None)])[1] == "a" * 197 + "..."
    assert table_names([(long,), (5,)]) == frozenset({"a" * 197 + "...", "5"})


def test_the_batched_query_names_only_constants(tmp_path: Path) -> None:
    """Every table and column in the query comes from collect's constants, every limit is in it."""
    everything = frozenset(
        {*collect.VERSION_TABLES, "database_owner", "crypto_account",
         *(t for t, _ in collect.PICKLED.values())}
    )  # fmt: skip
    sql = batch_sql(everything, "bytea")
    assert sql is not None
    assert sql.count("UNION ALL") == 3 + 1 + 1 + 4 - 1
    assert f"LIMIT {collect.MAX_ACCOUNTS}" in sql and f"LIMIT {collect.SAMPLE}" in sql
    assert f"<= {MAX_PICKLE}" in sql and f"1, {collect.MAX_TEXT})" in sql
    assert "CAST(NULL AS bytea)" in sql and "BLOB" not in sql
