"""Whole reports of the rule families, byte for byte, for facts built in memory: every finding
(code, severity, summary, evidence, fix, what explains it) and every fact the rules add, for the
service, config, registration and database families and their verdict. The expected reports are
in tests/fixtures/rules_reports.json; they were read one by one when written down, and a change
shows as a diff to read (the key rules, which need real pickles, are in test_verdicts.py and
test_prevention.py)."""
# ruff: noqa: E501 - upstream log lines are quoted whole

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bridgedoctor.facts import DbFacts, JournalFacts, ProbeError, UnitFacts
from bridgedoctor.findings import BridgeReport
from bridgedoctor.rules import evaluate
from tests.support import facts as F

EXPECTED = Path(__file__).parent / "fixtures" / "rules_reports.json"


GO = "2026-08-22T10:00:00.123Z "
AS_TOKEN_LINE = (
    GO
    + "FTL The as_token was not accepted. Is the registration file installed in your homeserver correctly?"
)
UNKNOWN_LINE = GO + 'FTL Nobody has seen this error="boom"'


def db(
    *tables: str,
    owner: str | None = "megabridge/mautrix-whatsapp",
    versions: dict[str, int] | None = None,
) -> DbFacts:
    return DbFacts(
        kind="postgres",
        location="matrix-postgres/matrix_mautrix_whatsapp",
        tables=frozenset(tables),
        versions=versions or {},
        owner=owner,
        accounts=(),
        samples={},
    )


def with_facts(
    bridge: str = "whatsapp", unit: UnitFacts | None = None, **kw: object
) -> BridgeReport:
    return evaluate(replace(F.facts(bridge, **kw), unit=unit), F.ctx())  # type: ignore[arg-type]


UNIT = UnitFacts(
    path=Path("/etc/systemd/system/matrix-mautrix-whatsapp.service"),
    image="dock.mau.dev/mautrix/whatsapp",
    tag="v0.2608.0",
)
CRYPTO = ("crypto_account", "crypto_olm_session", "portal")

ELSEWHERE = F.config(path=Path("/srv/matrix/mautrix-whatsapp/config/config.yaml"))
LOGIN_LINE = (
    GO + 'FTL Failed to start bridge error="failed to get supported login flows: M_UNRECOGNIZED"'
)
UNREACHABLE_LINE = GO + "ERR Failed to connect to homeserver, retrying in 10 seconds"


def at_mono_zero(*lines: str) -> JournalFacts:
    """A journal whose lines carry no timestamp (mono 0): their age is unknown."""
    j = F.journal(*lines)
    return replace(j, lines=tuple(replace(x, mono=0) for x in j.lines))


def in_naming(naming: str, **kw: object) -> BridgeReport:
    return evaluate(F.facts(**kw), F.ctx(naming))  # type: ignore[arg-type]


SCENARIOS: dict[str, Callable[[], BridgeReport]] = {
    "healthy_running": lambda: F.report(svc=F.service(state="running"), lines=F.journal()),
    "running_restarted_days": lambda: F.report(
        svc=F.service(state="running", age=200_000.0, restarts=2)
    ),
    "running_minutes": lambda: F.report(svc=F.service(state="running", age=125.0)),
    "running_seconds": lambda: F.report(svc=F.service(state="running", age=42.0)),
    "crash_loop_unknown_line": lambda: F.report(
        svc=F.service(state="crash_loop"), lines=F.journal(UNKNOWN_LINE)
    ),
    "start_pre_previous_run": lambda: F.report(
        svc=F.service(state="start_pre"),
        lines=F.journal(previous=(AS_TOKEN_LINE,), last_exit=("exited", 16)),
    ),
    "failed_no_journal": lambda: F.report(svc=F.service(state="failed")),
    "failed_killed": lambda: F.report(
        svc=F.service(state="failed", exit_code="killed", exit_status=9), lines=F.journal()
    ),
    "stopped": lambda: F.report(
        svc=F.service(state="stopped", exit_code="exited", exit_status=0), lines=F.journal()
    ),
    "journal_unreadable": lambda: F.report(
        svc=F.service(state="crash_loop"), lines=ProbeError("journal_unknown", "no access")
    ),
    "service_unknown": lambda: F.report(svc=ProbeError("service_unknown", "no answer")),
    "unit_missing_and_image": lambda: with_facts(unit=None),
    "unit_image": lambda: with_facts(unit=UNIT),
    "token_mismatch_both": lambda: F.report(
        reg=F.registration(appservice=F.appservice(as_token="a-1", hs_token="h-2")),
        hs=F.homeserver(),
    ),
    "token_mismatch_hs_only": lambda: F.report(
        reg=F.registration(appservice=F.appservice(hs_token="h-2"))
    ),
    "not_listed": lambda: F.report(reg=F.registration(), hs=F.homeserver(bridges=("signal",))),
    "changed_after_start": lambda: F.report(
        reg=F.registration(mtime=2_001.5), hs=F.homeserver(started_at=2_000.0)
    ),
    "changed_within_a_second": lambda: F.report(
        reg=F.registration(mtime=2_001.0), hs=F.homeserver(started_at=2_000.0)
    ),
    "msc4190_config_on": lambda: F.report(
        cfg=F.config(msc4190=True), reg=F.registration(msc4190=False)
    ),
    "registration_unreadable": lambda: F.report(
        reg=ProbeError("registration_unreadable", "bad yaml"),
        hs=ProbeError("homeserver_unreadable", "gone"),
    ),
    "config_missing": lambda: F.report(cfg=ProbeError("config_missing", "no config.yaml")),
    "config_refused": lambda: F.report(cfg=ProbeError("config_refused", "a symlink")),
    "config_other_error": lambda: F.report(cfg=ProbeError("config_weird", "odd")),
    "legacy_layout_env_prefix": lambda: F.report(
        cfg=F.config(layout="legacy-go", env_config_prefix="BRIDGE_", pickle_key=None)
    ),
    "pickle_key_empty": lambda: F.report(cfg=F.config(pickle_key="")),
    "generate_no_update": lambda: with_facts(
        unit=replace(UNIT, no_update=True), cfg=F.config(pickle_key="generate")
    ),
    "generate_saves": lambda: with_facts(unit=UNIT, cfg=F.config(pickle_key="generate")),
    "generate_no_unit": lambda: with_facts(unit=None, cfg=F.config(pickle_key="generate")),
    "generate_encryption_off": lambda: F.report(
        cfg=F.config(pickle_key="generate", encryption_allow=False)
    ),
    "db_foreign": lambda: F.report(db=ProbeError("db_foreign", "the database of mautrix-signal")),
    "db_unreachable": lambda: F.report(db=ProbeError("db_unreachable", "connection refused")),
    "db_empty": lambda: F.report(db=db()),
    "db_pre_megabridge_migrated": lambda: F.report(
        db=db(
            "portal",
            "database_was_migrated",
            "a_old",
            "b_old",
            "c_old",
            "d_old",
            "e_old",
            owner="mautrix-whatsapp",
            versions={"whatsapp": 7, "crypto_version": 21},
        )
    ),
    "db_history_old_tables_only": lambda: F.report(db=db("portal", "x_old")),
    "no_crypto_store": lambda: F.report(db=db("portal")),
    "no_crypto_store_encryption_off": lambda: F.report(
        cfg=F.config(encryption_allow=False), db=db("portal")
    ),
    "no_crypto_account": lambda: F.report(db=db("portal", "crypto_account")),
    # Bounds of the unit's age, its restarts and what systemd remembers of the last exit.
    "running_exactly_a_day": lambda: F.report(svc=F.service(state="running", age=86_400.0)),
    "running_exactly_a_minute_after_restarts": lambda: F.report(
        svc=F.service(state="running", age=60.0, restarts=3)
    ),
    "crash_loop_one_restart_no_exit": lambda: F.report(
        svc=F.service(state="crash_loop", restarts=1, exit_code="", exit_status=None),
        lines=F.journal(),
    ),
    "failed_no_exit": lambda: F.report(
        svc=F.service(state="failed", exit_code="", exit_status=None), lines=F.journal()
    ),
    "stopped_no_exit": lambda: F.report(svc=F.service(state="stopped"), lines=F.journal()),
    "deactivating": lambda: F.report(
        svc=F.service(active_state="deactivating", sub_state="stop-sigterm"), lines=F.journal()
    ),
    "exit_forgotten_but_status_zero": lambda: F.report(
        svc=F.service(state="crash_loop", exit_code="", exit_status=0),
        lines=F.journal(last_exit=("exited", 16)),
    ),
    "failed_killed_by_signal_16": lambda: F.report(
        svc=F.service(state="failed", exit_code="killed", exit_status=16), lines=F.journal()
    ),
    # Catalogue lines: a snippet's fix, {config_dir} from where config.yaml is, freshness bounds.
    "login_flows_line_naming_both": lambda: in_naming(
        "both", cfg=ELSEWHERE, svc=F.service(state="crash_loop"), lines=F.journal(LOGIN_LINE)
    ),
    "token_line_config_elsewhere": lambda: F.report(
        cfg=ELSEWHERE,
        svc=F.service(state="crash_loop", exit_status=16),
        lines=F.journal(AS_TOKEN_LINE),
    ),
    "unreachable_exactly_60s_ago": lambda: F.report(
        svc=F.service(), lines=F.journal(UNREACHABLE_LINE, ago=60.0)
    ),
    "unreachable_just_over_60s_ago": lambda: F.report(
        svc=F.service(), lines=F.journal(UNREACHABLE_LINE, ago=60.00001)
    ),
    "unreachable_at_an_unknown_time": lambda: F.report(
        svc=F.service(), lines=at_mono_zero(UNREACHABLE_LINE)
    ),
    "config_unreadable_with_a_token_line": lambda: F.report(
        cfg=ProbeError("config_missing", "no config.yaml"),
        svc=F.service(state="crash_loop", exit_status=16),
        lines=F.journal(AS_TOKEN_LINE),
    ),
    "mounted_elsewhere": lambda: F.report(
        reg=F.registration(),
        hs=F.homeserver(
            mounts={"/matrix-mautrix-whatsapp-registration.yaml": Path("/srv/other.yaml")}
        ),
    ),
    "not_listed_naming_both": lambda: in_naming(
        "both", reg=F.registration(), hs=F.homeserver(bridges=("signal",))
    ),
    "foreign_tables": lambda: F.report(
        db=db("portal", "state_groups_state", "events", "crypto_account")
    ),
}


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """registration_not_loaded prints local times: UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_report(name: str, utc: None) -> None:
    expected = json.loads(EXPECTED.read_text("utf-8"))[name]
    assert SCENARIOS[name]().to_dict() == expected


def test_every_expected_report_has_its_scenario() -> None:
    assert sorted(json.loads(EXPECTED.read_text("utf-8"))) == sorted(SCENARIOS)


def test_an_image_pinned_by_digest_is_shown_with_the_digest_cut_short() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    shown = {
        (tag, d): with_facts(unit=replace(UNIT, tag=tag, digest=d)).facts.get("image")
        for tag in ("v0.2608.0", None)
        for d in (digest, None)
    }
    assert shown == {
        ("v0.2608.0", digest): "dock.mau.dev/mautrix/whatsapp:v0.2608.0@sha256:0123456789ab",
        (None, digest): "dock.mau.dev/mautrix/whatsapp@sha256:0123456789ab",
        ("v0.2608.0", None): "dock.mau.dev/mautrix/whatsapp:v0.2608.0",
        (None, None): None,
    }


def test_naming_from_an_image_pinned_by_digest_alone_says_so() -> None:
    """A digest names no release: both namings are shown, and the reason is the digest, not
    a tag the unit was never given."""
    from bridgedoctor.knowledge import load
    from bridgedoctor.naming import decide

    spec = load().bridges["whatsapp"]
    digest = "sha256:" + "0123456789abcdef" * 4
    decided = {
        (tag, d): decide(spec, replace(UNIT, tag=tag, digest=d), "auto")
        for tag, d in ((None, digest), (None, None), ("v0.2608.0", digest))
    }
    assert (decided[(None, digest)].naming, decided[(None, digest)].reason) == (
        "both",
        "the bridge's systemd unit pins its image by digest alone, which names no release",
    )
    assert decided[(None, None)].reason == "no image tag found in the bridge's systemd unit"
    assert decided[("v0.2608.0", digest)].naming != "both"  # the tag decides
