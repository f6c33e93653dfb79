"""The failure catalogue (data/failures.yaml): every code named by the line upstream prints.

Each line below is what the upstream bridge writes to MDAD's journal for that failure, copied from
the source named next to it (mautrix-go bdb58f2e, its removed `bridge` package for legacy Go,
mautrix-python a0283cf, go.mau.fi/util dbutil). A code without a line here fails the first test.
"""
# ruff: noqa: E501 - the upstream lines are quoted whole

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridgedoctor import catalogue, logline
from bridgedoctor.facts import LogLine
from tests.support import facts as F

GO = "2026-08-22T10:00:00.123Z "
PY = "[2026-08-22 10:00:00,123] "

# (code, bridge, lines as printed, exit status or None while it keeps running)
UPSTREAM: list[tuple[str, str, tuple[str, ...], int | None]] = [
    # bridgev2/bridge.go StartConnectors + mxmain/main.go Start
    (
        "pickle_key_mismatch",
        "gmessages",
        (
            GO
            + 'FTL Failed to start bridge error="failed to start Matrix connector: the supplied account key is invalid"',
        ),
        1,
    ),
    # mautrix-python: the crypto store's OlmAccount.from_pickle raises in startup
    (
        "pickle_key_mismatch",
        "googlechat",
        (
            PY + "[CRITICAL@mau.init] Unexpected error in initialization",
            "Traceback (most recent call last):",
            '  File "/usr/lib/python3.11/site-packages/mautrix/crypto/store/asyncpg/store.py", line 139, in get_account',
            "olm.account.OlmAccountError: BAD_ACCOUNT_KEY",
        ),
        1,
    ),
    # bridgev2/matrix/crypto.go CryptoHelper.Init: a Go panic on stderr, exit 2
    (
        "pickle_key_empty",
        "whatsapp",
        ("panic: CryptoPickleKey not set", "", "goroutine 1 [running]:", "main.main()"),
        2,
    ),
    (
        "pickle_unsupported",
        "whatsapp",
        (
            GO
            + 'FTL Failed to start bridge error="failed to start Matrix connector: the pickled object is too new"',
        ),
        1,
    ),
    # bridgev2/matrix/crypto.go doSelfSign -> ExitError{34}
    (
        "self_sign_recovery_key_missing",
        "signal",
        (
            GO
            + "FTL Server already has cross-signing keys, but no key in database. Add `recovery_key` to `kv_store`, or set it to `overwrite` to generate new keys.",
        ),
        34,
    ),
    (
        "self_sign_recovery_key_stale",
        "signal",
        (
            GO
            + "FTL No keys on server, but database already has recovery key. Delete `recovery_key` from `kv_store` manually to continue.",
        ),
        34,
    ),
    # bridgev2/matrix/connector.go logInitialRequestError; legacy bridge/bridge.go; python bridge.py
    (
        "as_token_rejected",
        "whatsapp",
        (
            GO
            + "FTL The as_token was not accepted. Is the registration file installed in your homeserver correctly?",
        ),
        16,
    ),
    (
        "as_token_rejected",
        "discord",
        (
            GO
            + "FTL The as_token was not accepted. Is the registration file installed in your homeserver correctly?",
        ),
        16,
    ),
    (
        "as_token_rejected",
        "googlechat",
        (
            PY
            + "[CRITICAL@mau.init] The as_token was not accepted. Is the registration file installed in your homeserver correctly?",
        ),
        16,
    ),
    (
        "as_register_rejected",
        "whatsapp",
        (
            GO
            + "FTL The as_token was accepted, but the /register request was not. Are the homeserver domain, bot username and username template in the config correct, and do they match the values in the registration?",
        ),
        16,
    ),
    (
        "whoami_unexpected_user",
        "whatsapp",
        (
            GO
            + "FTL Unexpected user ID in whoami call expected_user_id=@whatsappbot:example.com got_user_id=@other:example.com",
        ),
        17,
    ),
    # appservice/ping.go EnsureAppserviceConnection (6 retries, then fatal), exit 13
    (
        "appservice_unreachable",
        "slack",
        (
            GO
            + 'ERR Homeserver -> appservice connection is not working, retrying in 5 seconds... error="M_UNKNOWN: connection refused" txn_id=1',
            GO
            + 'FTL Homeserver -> appservice connection is not working error="M_UNKNOWN: connection refused" txn_id=7',
        ),
        13,
    ),
    (
        "appservice_unreachable",
        "discord",
        (GO + 'FTL Homeserver -> bridge connection is not working error="M_UNKNOWN"',),
        13,
    ),
    (
        "appservice_unreachable",
        "googlechat",
        (
            PY + "[ERROR@mau.init] Error checking homeserver -> bridge connection",
            "Traceback (most recent call last):",
            "mautrix.errors.request.MUnknown: connection refused",
        ),
        16,
    ),
    # connector.go ensureConnection: retried every 10 s in the same run, never fatal
    (
        "homeserver_unreachable",
        "whatsapp",
        (
            GO
            + 'ERR Failed to connect to homeserver, retrying in 10 seconds... error="failed to GET /_matrix/client/versions: HTTP 404"',
        ),
        None,
    ),
    (
        "homeserver_unreachable",
        "googlechat",
        (PY + "[ERROR@mau.matrix] Connection to homeserver failed, retrying in 10 seconds",),
        None,
    ),
    (
        "homeserver_outdated",
        "whatsapp",
        (
            GO
            + "FTL The homeserver is outdated (supported spec versions are below minimum required by bridge) bridge_requires=v1.4 server_supports=v1.2",
        ),
        18,
    ),
    # bridgev2/matrix/crypto.go loginBot; python bridge/e2ee.py (exit 30)
    (
        "msc4190_required",
        "whatsapp",
        (
            GO
            + 'FTL Failed to start bridge error="failed to start Matrix connector: failed to get supported login flows: M_UNRECOGNIZED (HTTP 404): Unrecognized request"',
        ),
        1,
    ),
    (
        "msc4190_required",
        "googlechat",
        (
            PY
            + "[CRITICAL@mau.e2ee] Encryption enabled in config, but homeserver does not support appservice login",
        ),
        30,
    ),
    # mautrix/imessage#230
    (
        "msc4190_mismatch",
        "whatsapp",
        (
            GO
            + 'FTL Failed to start bridge error="failed to start Matrix connector: failed to log in as bridge bot: IO.ELEMENT.MSC4190.M_APPSERVICE_LOGIN_UNSUPPORTED (HTTP 400): This appservice has MSC4190 enabled, so appservice login cannot be used."',
        ),
        1,
    ),
    # mxmain/main.go validateConfig (exit 11); python util/program.py check_config
    (
        "config_field_unconfigured",
        "whatsapp",
        (GO + 'FTL Configuration error error="homeserver.address not configured"',),
        11,
    ),
    (
        "config_field_unconfigured",
        "googlechat",
        (PY + "[CRITICAL@mau.init] Configuration error: appservice.as_token not configured",),
        11,
    ),
    # bridgev2/bridgeconfig/legacymigrate.go: printed on stderr before the logger exists
    (
        "config_layout_unexpected",
        "slack",
        ("Legacy bridge config detected, but hacky network config migrator is not set",),
        1,
    ),
    # bridgev2/user.go: logged while the bridge runs
    (
        "double_puppet_shared_secret",
        "signal",
        (
            GO
            + 'ERR Failed to create new user intent error="failed to GET /_matrix/client/v3/account/whoami: M_UNKNOWN_TOKEN (HTTP 401): Unknown access token" action="setup double puppet"',
        ),
        None,
    ),
    # dbutil ErrUnsupportedDatabaseVersion via mxmain/dberror.go (exit 15); python (exit 25)
    (
        "schema_too_new",
        "whatsapp",
        (
            GO
            + 'FTL Failed to initialize database error="unsupported database schema version: currently on v23 (compatible down to v20), latest known: v21" db_section=main',
        ),
        15,
    ),
    (
        "schema_too_new",
        "googlechat",
        (
            PY + "[CRITICAL@mau.init] Failed to initialize database",
            "Traceback (most recent call last):",
            '  File "/usr/lib/python3.11/site-packages/mautrix/util/async_db/upgrade.py", line 160, in upgrade',
            "mautrix.util.async_db.errors.UnsupportedDatabaseVersion: Unsupported main schema version v12 (latest known is v10)",
        ),
        25,
    ),
    # mxmain/legacymigrate.go
    (
        "legacy_migration_failed",
        "whatsapp",
        (
            GO
            + 'FTL Failed to migrate legacy database error="pq: column \\"completed_at\\" does not exist" db_section=main',
        ),
        15,
    ),
    (
        "legacy_migration_failed",
        "whatsapp",
        (
            GO
            + 'FTL Unsupported database version. Please upgrade to mautrix-whatsapp v0.10.9 or higher before upgrading to v0.11.0. action="migrate legacy db" expected_version=57 version=40',
        ),
        1,
    ),
    # dbutil NotOwnedError with the bridge's own name: the pre-megabridge owner
    (
        "legacy_db_unmigratable",
        "whatsapp",
        (
            GO
            + 'FTL Failed to initialize database error="the database is owned by mautrix-whatsapp" db_section=main',
        ),
        15,
    ),
    # dbutil ErrForeignTables / NotOwnedError of another program; python ForeignTablesFound
    (
        "foreign_tables",
        "whatsapp",
        (
            GO
            + 'FTL Failed to initialize database error="the database contains foreign tables (found state_groups_state, likely belonging to Synapse)" db_section=main',
        ),
        15,
    ),
    (
        "foreign_tables",
        "signal",
        (
            GO
            + 'FTL Failed to initialize database error="the database is owned by megabridge/mautrix-whatsapp" db_section=main',
        ),
        15,
    ),
    (
        "foreign_tables",
        "googlechat",
        (
            PY + "[CRITICAL@mau.init] Failed to initialize database",
            "Traceback (most recent call last):",
            "mautrix.util.async_db.errors.ForeignTablesFound: The database contains foreign tables (found state_groups_state likely belonging to Synapse)",
        ),
        25,
    ),
    (
        "database_type_sqlite3",
        "whatsapp",
        (GO + "FTL Invalid database type sqlite3. Use sqlite3-fk-wal instead.",),
        14,
    ),
    (
        "database_connection_failed",
        "whatsapp",
        (
            GO
            + 'FTL Failed to initialize database connection error="dial tcp: lookup matrix-postgres: no such host"',
        ),
        14,
    ),
]


def test_every_code_has_an_upstream_line() -> None:
    cat = catalogue.load()
    assert set(cat.entries) == {code for code, *_ in UPSTREAM}


def test_the_table_is_consistent() -> None:
    cat = catalogue.load()
    known = (
        set(cat.entries)
        | set(cat.explains)
        | {
            "service_crash_loop",
            "service_failed",
            "service_stopped",
            "db_pre_megabridge",
            "pickle_key_unknown",
            "pickle_key_generate",
            "pickle_corrupt",
        }
    )
    for e in cat.entries.values():
        assert e.lines and e.summary and e.source, e.code
        for pattern in e.lines:  # compiled only when a line is matched: each must compile
            assert re.compile(pattern).groupindex is not None, (e.code, pattern)
        assert set(e.explains) <= known and set(e.corroborates) <= known, e.code
    for code, effects in cat.explains.items():
        assert effects <= known, code
    # An exit status names a failure alone only if it is one of its exits, with a meaning, and
    # no two codes claim the same status alone.
    claimed: dict[tuple[str, int], str] = {}
    for e in cat.entries.values():
        for fw, statuses in e.exit_alone.items():
            for x in statuses:
                assert x in e.exit and cat.meaning(x, fw), (e.code, fw, x)
                assert (fw, x) not in claimed, (e.code, claimed[(fw, x)])
                claimed[(fw, x)] = e.code
    assert claimed[("bridgev2", 16)] == "as_token_rejected"
    assert claimed[("bridgev2", 13)] == "appservice_unreachable"


def test_docs_list_every_code() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "json.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9_]+)`", text, re.MULTILINE))
    for code in catalogue.load().entries:
        assert code in listed, f"docs/json.md does not list {code}"
    for code in (
        "service_crash_loop",
        "service_failed",
        "service_stopped",
        "registration_token_mismatch",
        "registration_not_loaded",
        "msc4190_mismatch",
        "double_puppet_shared_secret",
        "foreign_tables",
    ):
        assert code in listed, code


def _lines(raw: tuple[str, ...]) -> tuple[LogLine, ...]:
    return tuple(logline.group(logline.parse(x) for x in raw))


@pytest.mark.parametrize(
    ("code", "bridge", "raw", "status"), UPSTREAM, ids=[f"{c}-{b}" for c, b, *_ in UPSTREAM]
)
def test_the_upstream_line_names_its_code(
    code: str, bridge: str, raw: tuple[str, ...], status: int | None
) -> None:
    cat = catalogue.load()
    fw = F.facts(bridge).spec.framework
    hits = [m for line in _lines(raw) if (m := cat.match(line, fw)) is not None]
    assert hits and hits[-1][0].code == code
    if status is not None and cat.entries[code].exit:
        assert status in cat.entries[code].exit


@pytest.mark.parametrize(
    ("code", "bridge", "raw", "status"), UPSTREAM, ids=[f"{c}-{b}" for c, b, *_ in UPSTREAM]
)
def test_the_check_leads_with_it(
    code: str, bridge: str, raw: tuple[str, ...], status: int | None
) -> None:
    """Under a unit in a crash loop (or running, for a retried error), the verdict is the code,
    and the crash loop is folded into it."""
    if status is None:
        svc = F.service(bridge, "running", age=30.0)
    else:
        svc = F.service(bridge, "crash_loop", exit_status=status)
    # The configs are healthy: only the bridge's own words can name the failure.
    r = F.report(bridge, svc=svc, lines=F.journal(*raw, bridge=bridge))
    lead = r.findings[0]
    assert lead.code == code, [(f.code, f.summary) for f in r.findings]
    assert any(e.startswith("journal (current run): ") for e in lead.evidence)
    if status is not None:
        assert "keeps restarting: 7 automatic restarts" in lead.summary
        loop = next(f for f in r.findings if f.code == "service_crash_loop")
        assert loop.explained_by == code


def test_named_groups_fill_the_verdict() -> None:
    r = F.report(
        svc=F.service(state="crash_loop", exit_status=11),
        lines=F.journal(GO + 'FTL Configuration error error="bridge.permissions not configured"'),
    )
    assert "(bridge.permissions not configured, exit 11)" in r.findings[0].summary
    r = F.report(
        svc=F.service(state="crash_loop", exit_status=11),
        lines=F.journal(GO + "FTL Configuration error"),
    )
    assert "(? not configured, exit 11)" in r.findings[0].summary  # unknown, never guessed


def test_a_stale_retried_error_is_history() -> None:
    line = GO + 'ERR Failed to connect to homeserver, retrying in 10 seconds... error="HTTP 404"'
    running = F.service(state="running", age=600.0)
    fresh = F.report(svc=running, lines=F.journal(line, ago=15))
    assert F.codes(fresh) == ["homeserver_unreachable"]
    stale = F.report(svc=running, lines=F.journal(line, ago=300))
    assert "homeserver_unreachable" not in F.codes(stale)
    assert stale.status == "ok"
