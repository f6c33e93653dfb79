"""`check NAME --deep`: every pickled row of a real crypto store (python-olm pickles, sealed
secrets) checked against the proven key, in PostgreSQL and SQLite; stores with one key and two."""

from __future__ import annotations

import gc
import itertools
import logging
from pathlib import Path

import olm
import pytest

from tests.support.cli import run, run_json
from tests.support.fleet import Host
from tests.support.pg import PgServer
from tests.support.store import StoreSpec, session_rows

WA_KEY = "maunium.net/go/mautrix-whatsapp"  # whatsapp's configured (MDAD default) key
OLD_KEY = "mautrix.bridge.e2ee"  # a known mautrix key, not the configured one
LOST_KEY = "a-random-key-nobody-kept-1f0e9c"  # no candidate: "no known key"
_counter = itertools.count()


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def host(tmp_path: Path, pg: PgServer) -> Host:
    return Host.at(tmp_path, pg)


def deploy(host: Host, engine: str, extra: list[tuple[str, tuple]]) -> None:
    spec = StoreSpec("whatsapp", account_key=WA_KEY, extra=extra)
    host.add("whatsapp", spec, engine=engine, db_prefix=f"d{next(_counter)}_")


def deep(capsys: pytest.CaptureFixture[str], host: Host) -> tuple[int, dict]:
    return run_json(capsys, "check", "whatsapp", "--deep", *host.args())


def finding(report: dict, code: str) -> dict:
    found = [f for f in report["findings"] if f["code"] == code]
    assert found, [f["code"] for f in report["findings"]]
    return found[0]


def test_one_key_every_row_verified(host: Host, engine: str, capsys) -> None:
    rows = session_rows(WA_KEY, olm_sessions=3, inbound=40, outbound=2, secrets=2)
    deploy(host, engine, rows)
    code, report = deep(capsys, host)
    assert (code, report["status"]) == (0, "ok")
    f = finding(report, "crypto_store_verified")
    # StoreSpec adds one session of each kind on its own: the counts are all rows, not samples.
    for part in ("4 Olm sessions", "41 inbound Megolm sessions", "3 outbound Megolm sessions",
                 "2 stored secrets", "50 rows checked"):  # fmt: skip
        assert part in f["summary"], f["summary"]
    assert "crypto_store_mixed_keys" not in [x["code"] for x in report["findings"]]


def test_two_keys_counted_per_table_and_key(host: Host, engine: str, capsys) -> None:
    """Beyond the sample: 40 inbound sessions under the right key, 3 under another known key
    and 2 under a lost one; one Olm session under the other key (live traffic: an error)."""
    rows = session_rows(WA_KEY, inbound=40, tag="a")
    rows += session_rows(OLD_KEY, inbound=3, olm_sessions=1, tag="b")
    rows += session_rows(LOST_KEY, inbound=2, tag="c")
    deploy(host, engine, rows)
    code, report = deep(capsys, host)
    assert (code, report["status"]) == (1, "broken")
    f = finding(report, "crypto_store_mixed_keys")
    assert f["severity"] == "error"
    assert "6 of 49 session and secret rows do not" in f["summary"]
    assert "to-device messages" in f["summary"]  # what an unreadable Olm session costs
    assert "stay unreadable" in f["summary"]  # ... and an inbound Megolm session
    inbound = next(e for e in f["evidence"] if e.startswith("crypto_megolm_inbound_session"))
    assert inbound == (
        "crypto_megolm_inbound_session (inbound Megolm sessions, 46 rows): "
        f'41 with "{WA_KEY}" (proven, opens the account); '
        f'3 with "{OLD_KEY}" (known mautrix key); 2 with no known key'
    )
    olm_line = next(e for e in f["evidence"] if e.startswith("crypto_olm_session"))
    assert f'1 with "{OLD_KEY}"' in olm_line and "2 rows" in olm_line
    assert f["evidence"][0] == (
        f'crypto_account (the account, 1 row): 1 with "{WA_KEY}" (proven, opens the account)'
    )
    assert any("bridgedoctor reset whatsapp" in s for s in f["fix"]["steps"])
    # The full count replaces the sampled finding.
    assert "sessions_other_key" not in [x["code"] for x in report["findings"]]


def test_only_inbound_rows_under_another_key_is_a_warning(host: Host, capsys) -> None:
    deploy(host, "postgres", session_rows(OLD_KEY, inbound=2, tag="b"))
    code, report = deep(capsys, host)
    assert (code, report["status"]) == (1, "warning")
    f = finding(report, "crypto_store_mixed_keys")
    assert "to-device" not in f["summary"] and "stay unreadable" in f["summary"]


def test_account_row_deleted_by_hand_leaves_a_mixed_store(host: Host, engine: str, capsys) -> None:
    """The manual "fix": the old account row deleted, the bridge started with the new key and
    made a new account and a few sessions; everything older is still under the old key."""
    new_account = olm.Account()
    rows = session_rows(OLD_KEY, olm_sessions=2, inbound=5, outbound=1, tag="old")
    rows += [
        ("DELETE FROM crypto_account", ()),
        (
            "INSERT INTO crypto_account (account_id, device_id, shared, sync_token, account) "
            "VALUES (?, ?, ?, ?, ?)",
            ("", "NEWDEVICE", True, "", new_account.pickle(WA_KEY)),
        ),
    ]
    rows += session_rows(WA_KEY, inbound=2, tag="new")
    spec = StoreSpec("whatsapp", account_key=OLD_KEY, extra=rows)  # the store as first written
    host.add("whatsapp", spec, engine=engine, db_prefix=f"d{next(_counter)}_")
    code, report = deep(capsys, host)
    assert report["status"] == "broken"
    assert finding(report, "pickle_key_ok")  # the account itself is fine ...
    f = finding(report, "crypto_store_mixed_keys")  # ... the rest of the store is not
    assert "deleted by hand" in f["summary"]
    outbound = next(e for e in f["evidence"] if e.startswith("crypto_megolm_outbound_session"))
    assert outbound.endswith(f'2 with "{OLD_KEY}" (known mautrix key)')
    assert "sending into the rooms of those outbound Megolm sessions fails" in f["summary"]


def test_damaged_rows_under_the_one_key(host: Host, engine: str, capsys) -> None:
    rows = session_rows(WA_KEY, inbound=3)
    rows.append(
        (
            "INSERT INTO crypto_megolm_inbound_session (account_id, session_id, sender_key, "
            "signing_key, room_id, session) VALUES (?, ?, ?, ?, ?, ?)",
            ("", "broken-1", "s" * 43, "g" * 43, "!x:example.com", b"not a pickle at all"),
        )
    )
    deploy(host, engine, rows)
    code, report = deep(capsys, host)
    f = finding(report, "crypto_store_damaged")
    assert f["severity"] == "warning" and "1 of 7" in f["summary"]
    assert any("1 are not libolm pickles at all" in e for e in f["evidence"])


def test_without_deep_nothing_is_scanned(host: Host, capsys) -> None:
    deploy(host, "postgres", session_rows(LOST_KEY, inbound=30, tag="c"))
    code, report = run_json(capsys, "check", "whatsapp", *host.args())
    found = [f["code"] for f in report["findings"]]
    assert "crypto_store_verified" not in found and "crypto_store_mixed_keys" not in found


def test_deep_needs_a_bridge_name(host: Host, capsys) -> None:
    deploy(host, "postgres", [])
    code, text = run(capsys, "check", "all", "--deep", *host.args())
    assert code == 2 and "bridgedoctor check NAME --deep" in text


@pytest.mark.parametrize("crash", [False, True])
def test_big_scan_shares_the_work_with_a_second_process(
    host: Host,
    capsys,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    crash: bool,
) -> None:
    """Past WORKER_AFTER rows a worker process verifies every other batch; the counts are the
    same as one process alone, and a worker that dies leaves them the same too."""
    from bridgedoctor.probes import scan_worker, store_scan

    rows = session_rows(WA_KEY, inbound=2500, tag="a") + session_rows(
        OLD_KEY, inbound=700, tag="b"
    )
    deploy(host, "postgres", rows)
    _, alone = deep(capsys, host)
    used: list[bool] = []
    real_finish = scan_worker.Spread.finish

    async def finish(self: scan_worker.Spread) -> None:
        used.append(self.used_worker)
        await real_finish(self)

    monkeypatch.setattr(scan_worker, "WORKER_AFTER", 0)
    monkeypatch.setenv(scan_worker.WORKER_ENV, "on")  # a busy test host has no idle core
    monkeypatch.setattr(store_scan, "FETCH_ROWS", 200)  # many batches, so both sides get some
    monkeypatch.setattr(scan_worker.Spread, "finish", finish)
    if crash:
        monkeypatch.setenv(scan_worker.CRASH_ENV, "1")
    gc.collect()  # what earlier tests left behind is reported now, not below
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _, shared = deep(capsys, host)
        gc.collect()  # a future whose error nobody took is reported when it is collected
    untaken = [m for r in caplog.records if "never retrieved" in (m := r.getMessage())]
    assert not [m for m in untaken if "BrokenPipeError" in m], untaken
    assert used and all(used)
    mixed = finding(shared, "crypto_store_mixed_keys")
    assert mixed["evidence"] == finding(alone, "crypto_store_mixed_keys")["evidence"]
    assert "3,201 rows" in next(e for e in mixed["evidence"] if "inbound" in e)


def test_the_deep_scan_reads_through_a_read_only_named_session(
    host: Host, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the scan's own connection says of itself, asked on it while the scan reads: read
    only, and named, so an admin looking at pg_stat_activity sees who is reading."""
    from bridgedoctor.probes import database, scan_worker

    deploy(host, "postgres", session_rows(WA_KEY, inbound=3))
    opened: list[object] = []
    seen: list[tuple[str, str]] = []
    real_connect, real_feed = database.PgTarget.connect, scan_worker.Spread.feed

    async def connect(self: database.PgTarget, **kwargs: object) -> object:
        conn = await real_connect(self, **kwargs)  # type: ignore[arg-type]
        opened.append(conn)
        return conn

    async def feed(self: scan_worker.Spread, *args: object) -> None:
        conn = opened[-1]
        if not seen:
            seen.append(
                (
                    await conn.fetchval("SHOW default_transaction_read_only"),  # type: ignore[attr-defined]
                    await conn.fetchval("SELECT current_setting('application_name')"),  # type: ignore[attr-defined]
                )
            )
        await real_feed(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(database.PgTarget, "connect", connect)
    monkeypatch.setattr(scan_worker.Spread, "feed", feed)
    code, report = deep(capsys, host)
    assert code == 0 and finding(report, "crypto_store_verified")
    assert seen == [("on", "bridgedoctor-deep")]


async def test_a_deep_scan_of_a_server_that_is_not_there_says_so() -> None:
    from bridgedoctor.facts import ProbeError
    from bridgedoctor.probes import store_scan
    from bridgedoctor.probes.database import PgTarget

    got = await store_scan.scan(
        PgTarget(user="u", password="pw", host="/nonexistent", port=5432, database="d"), []
    )
    assert got == ProbeError(
        "db_unreachable",
        "cannot reach postgres://u@/nonexistent:5432/d (No such file or directory).",
    )


def test_a_store_without_one_of_the_tables_is_scanned_in_the_others(host: Host, capsys) -> None:
    rows = session_rows(WA_KEY, inbound=4, secrets=1)
    deploy(host, "postgres", [("DROP TABLE crypto_olm_session", ()), *rows])
    _, report = deep(capsys, host)
    f = finding(report, "crypto_store_verified")
    assert "5 inbound Megolm sessions" in f["summary"] and "Olm sessions" not in f["summary"]


def test_a_row_that_opens_but_holds_no_session_is_damaged(host: Host, capsys) -> None:
    """Its MAC is right under the key, its content no inbound Megolm session (version 7)."""
    from tests.support.store import seal

    rows = session_rows(WA_KEY, inbound=3)
    rows.append(
        (
            "INSERT INTO crypto_megolm_inbound_session (account_id, session_id, sender_key, "
            "signing_key, room_id, session) VALUES (?, ?, ?, ?, ?, ?)",
            ("", "bad-1", "s" * 43, "g" * 43, "!x:example.com",
             seal(b"\x00\x00\x00\x07" + b"r" * 200, WA_KEY)),
        )
    )  # fmt: skip
    deploy(host, "postgres", rows)
    _, report = deep(capsys, host)
    f = finding(report, "crypto_store_damaged")
    assert "1 of 7" in f["summary"], f["summary"]


def test_a_store_that_fails_half_way_through_the_scan_says_where(
    host: Host, pg: PgServer, capsys
) -> None:
    """The server refuses a read the deep scan has begun (here a row policy that raises for the
    scan's own session on the megolm table, read after the account and the Olm sessions): one
    sentence naming the store and the kind of error, not a traceback, not a partial verdict."""
    deploy(host, "postgres", session_rows(WA_KEY, olm_sessions=2, inbound=3))
    (name,) = host.databases.values()
    pg.as_superuser(
        name,
        "CREATE FUNCTION half_way() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
        "IF current_setting('application_name') = 'bridgedoctor-deep' THEN "
        "RAISE EXCEPTION 'disk read error'; END IF; RETURN true; END $$; "
        "ALTER TABLE crypto_megolm_inbound_session ENABLE ROW LEVEL SECURITY; "
        "ALTER TABLE crypto_megolm_inbound_session FORCE ROW LEVEL SECURITY; "
        "CREATE POLICY half_way ON crypto_megolm_inbound_session USING (half_way())",
    )
    _, report = deep(capsys, host)
    at = f"{pg.host}:{pg.port}"
    assert finding(report, "crypto_store_unverified")["summary"] == (
        f"The whole-store check of whatsapp could not finish: reading postgres://{name}@{at}/"
        f"{name} failed (RaiseError)."  # the server's own words may be the bridge's: not shown
    )
    assert "crypto_store_verified" not in [f["code"] for f in report["findings"]]
