"""Each rule family alone, on facts built directly: what it finds, and what it must not."""
# ruff: noqa: E501 - upstream log lines are quoted whole

from __future__ import annotations

from dataclasses import replace

import pytest

from bridgedoctor.facts import DbFacts, ProbeError
from bridgedoctor.findings import Finding
from bridgedoctor.rules import config as config_rules
from bridgedoctor.rules import database as database_rules
from bridgedoctor.rules import service as service_rules
from bridgedoctor.rules import verdict
from tests.support import facts as F

GO = "2026-08-22T10:00:00.123Z "
ELSEWHERE = F.config(
    path=F.ROOT.parent / "srv" / "matrix" / "mautrix-whatsapp" / "config" / "config.yaml"
)
AS_TOKEN_LINE = (
    GO
    + "FTL The as_token was not accepted. Is the registration file installed in your homeserver correctly?"
)
KEY_LINE = (
    GO
    + 'FTL Failed to start bridge error="failed to start Matrix connector: the supplied account key is invalid"'
)


# ---- service ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("svc", "state"),
    [
        (F.service(state="running"), "up"),
        (F.service(state="running", age=10.0), "starting"),
        (F.service(state="running", age=10.0, restarts=3), "crash_loop"),
        (F.service(state="running", age=3600.0, restarts=3), "up"),  # crashed earlier, fine now
        (F.service(state="crash_loop"), "crash_loop"),
        (F.service(state="start_pre"), "crash_loop"),
        (F.service(state="start_pre", restarts=0), "starting"),
        (F.service(state="failed"), "failed"),
        (F.service(state="stopped"), "stopped"),
        (F.service(load_state="not-found"), "unknown"),
        (F.service(active_state="maintenance"), "unknown"),  # a state this code predates
        (F.service(active_state="deactivating", sub_state="stop-sigterm"), "stopped"),
        (F.service(active_state="reloading", sub_state="reload", age=3600.0), "up"),
        (F.service(state="crash_loop", restarts=0), "crash_loop"),  # auto-restart says it
        (F.service(state="running", age=60.0, restarts=3), "up"),  # up once it ran UP_AFTER
        (F.service(state="running", age=59.9, restarts=3), "crash_loop"),
    ],
)
def test_unit_states(svc, state: str) -> None:
    assert service_rules.state(svc) == state


def test_healthy_units_give_no_service_finding() -> None:
    for svc in (F.service(state="running"), F.service(state="running", restarts=4)):
        r = F.report(svc=svc, lines=F.journal(GO + "WRN Using SQLite without _txlock=immediate"))
        assert r.status == "ok" and not F.codes(r), r


def test_crash_loop_says_how_often_and_the_last_exit() -> None:
    r = F.report(svc=F.service(state="crash_loop", exit_status=1), lines=F.journal())
    (f,) = r.findings
    assert f.code == "service_crash_loop" and f.severity == "error"
    assert f.summary.startswith(
        "matrix-mautrix-whatsapp.service keeps restarting: 7 automatic restarts"
    )
    assert "last exit status 1 (a fatal error; the log line names it)" in f.summary
    assert "journal (current run): no error or fatal line" in f.evidence
    assert f.fix is not None and "bridgedoctor logs whatsapp" in f.fix.steps[0]


def test_an_unknown_fatal_line_is_shown_scrubbed_never_guessed() -> None:
    line = (
        GO
        + 'FTL Nobody has seen this error="boom" access_token=syt_c2VjcmV0_abcdefghij password=hunter2hunter2'
    )
    r = F.report(svc=F.service(state="crash_loop"), lines=F.journal(line))
    (f,) = r.findings
    assert f.code == "service_crash_loop" and f.explained_by is None
    assert "matches nothing bridgedoctor knows: FTL Nobody has seen this" in f.summary
    assert "access_token=<redacted>" in f.summary and "password=<redacted>" in f.summary
    assert "syt_" not in repr(r) and "hunter2" not in repr(r)


def test_between_two_starts_the_previous_run_speaks() -> None:
    # systemd forgot the exit (ExecStartPre of the next start runs): the journal's own line has it.
    r = F.report(
        svc=F.service(state="start_pre"),
        lines=F.journal(previous=(AS_TOKEN_LINE,), last_exit=("exited", 16)),
    )
    lead = r.findings[0]
    assert lead.code == "as_token_rejected"
    assert "journal (previous run): FTL The as_token was not accepted" in lead.evidence[0]
    assert "last exit status 16" in lead.summary


def test_a_young_run_that_said_nothing_yet_is_spoken_for_by_the_one_before() -> None:
    svc = F.service(state="running", age=5.0, restarts=3)
    r = F.report(svc=svc, lines=F.journal(previous=(AS_TOKEN_LINE,)))
    assert r.findings[0].code == "as_token_rejected"
    # Once it has run a while, the old run is history.
    old = F.report(svc=replace(svc, age=600.0), lines=F.journal(previous=(AS_TOKEN_LINE,)))
    assert old.status == "ok" and not F.codes(old)


def test_exit_16_alone_is_the_token() -> None:
    r = F.report(svc=F.service(state="crash_loop", exit_status=16), lines=F.journal())
    lead = r.findings[0]
    assert lead.code == "as_token_rejected" and "exit status 16" in lead.evidence[0]
    assert (
        next(f for f in r.findings if f.code == "service_crash_loop").explained_by
        == "as_token_rejected"
    )
    # An exit status that names several failures names none.
    r = F.report(svc=F.service(state="crash_loop", exit_status=15), lines=F.journal())
    assert F.codes(r) == ["service_crash_loop"]


def test_journal_unreadable_is_said_not_hidden() -> None:
    r = F.report(
        svc=F.service(state="crash_loop"), lines=ProbeError("journal_unknown", "no access")
    )
    assert r.facts["journal"] == "could not read (no access)"
    assert "journal: could not determine (no access)" in r.findings[0].evidence


def test_failed_and_stopped() -> None:
    failed = F.report(svc=F.service(state="failed"), lines=F.journal())
    assert F.codes(failed) == ["service_failed"]
    assert "has failed (start-limit-hit, last exit status 1" in failed.findings[0].summary
    stopped = F.report(svc=F.service(state="stopped"), lines=F.journal())
    assert F.codes(stopped) == ["service_stopped"] and stopped.status == "warning"
    assert "systemctl start matrix-mautrix-whatsapp" in stopped.findings[0].fix.steps[0]  # type: ignore[union-attr]


def test_service_state_unknown_is_a_fact_not_a_finding() -> None:
    r = F.report(svc=ProbeError("service_unknown", "systemctl did not answer within 5 s."))
    assert r.facts["unit state"].startswith("could not determine")
    assert r.status == "ok"


# ---- registration ---------------------------------------------------------------------------
def test_registration_agrees_no_finding() -> None:
    r = F.report(reg=F.registration(), hs=F.homeserver())
    assert not F.codes(r), r


def test_token_mismatch_compares_digests() -> None:
    reg = F.registration(appservice=F.appservice(as_token="another-as-token"))
    r = F.report(reg=reg, hs=F.homeserver())
    (f,) = r.findings
    assert f.code == "registration_token_mismatch"
    assert f.summary.startswith("as_token differs between config.yaml and registration.yaml")
    assert f.evidence[0].startswith("as_token: config.yaml sha256:")
    both = F.registration(appservice=F.appservice(as_token="a-1", hs_token="h-2"))
    assert "as_token and hs_token differ" in F.report(reg=both).findings[0].summary


@pytest.mark.parametrize(
    ("hs", "words"),
    [
        (
            F.homeserver(bridges=("signal",)),
            "does not list /matrix-mautrix-whatsapp-registration.yaml",
        ),
        (F.homeserver(mounts={"/other": F.ROOT}), "does not mount it"),
        (
            F.homeserver(mounts={"/matrix-mautrix-whatsapp-registration.yaml": F.ROOT / "x.yaml"}),
            "mounts /matrix-mautrix-whatsapp-registration.yaml from /matrix/x.yaml",
        ),
        (F.homeserver(started_at=500.0), "after Synapse started"),
    ],
)
def test_registration_not_loaded(hs, words: str) -> None:
    r = F.report(reg=F.registration(mtime=1000.0), hs=hs)
    (f,) = r.findings
    assert f.code == "registration_not_loaded" and words in f.summary, f.summary
    assert any("just install-service synapse" in s for s in f.fix.steps)  # type: ignore[union-attr]


def test_no_mdad_synapse_means_nothing_to_say() -> None:
    assert not F.codes(F.report(reg=F.registration(), hs=None))
    # A synapse unit without mounts (another deployment) is not held against the bridge.
    assert not F.codes(F.report(reg=F.registration(), hs=F.homeserver(mounts={})))


def test_msc4190_mismatch_only_on_bridgev2() -> None:
    reg = F.registration(msc4190=True)
    (f,) = F.report(reg=reg).findings
    assert f.code == "msc4190_mismatch"
    assert "on in registration.yaml (io.element.msc4190) but off in config.yaml" in f.summary
    assert "matrix_bridge_mautrix_whatsapp_msc4190_enabled" in f.fix.steps[0]  # type: ignore[union-attr]
    assert not F.codes(F.report("googlechat", reg=F.registration("googlechat", msc4190=None)))


def test_registration_cause_leads_and_explains_the_rejection_and_the_loop() -> None:
    reg = F.registration(appservice=F.appservice(as_token="another-as-token"))
    r = F.report(
        reg=reg,
        hs=F.homeserver(),
        svc=F.service(state="crash_loop", exit_status=16),
        lines=F.journal(AS_TOKEN_LINE),
    )
    lead = r.findings[0]
    assert lead.code == "registration_token_mismatch" and lead.explained_by is None
    assert {f.code: f.explained_by for f in r.findings[1:]} == {
        "as_token_rejected": "registration_token_mismatch",
        "service_crash_loop": "registration_token_mismatch",
    }
    assert "keeps restarting: 7 automatic restarts, last exit status 16" in lead.summary
    assert any("FTL The as_token was not accepted" in e for e in lead.evidence)


# ---- config -----------------------------------------------------------------------------------
def test_double_puppet_shared_secret() -> None:
    cfg = F.config(double_puppet=(("example.com", "shared_secret"), ("other.org", "as_token")))
    (f,) = F.report(cfg=cfg).findings
    assert f.code == "double_puppet_shared_secret" and f.severity == "warning"
    assert "example.com" in f.summary and "other.org" not in f.summary
    assert f.fix is not None and f.fix.vars_yml == "matrix_appservice_double_puppet_enabled: true"
    assert "matrix_bridge_mautrix_whatsapp_double_puppet_secrets_custom" in f.fix.steps[1]


def test_double_puppet_as_token_form_or_legacy_layouts_are_fine() -> None:
    assert not F.codes(F.report(cfg=F.config(double_puppet=(("example.com", "as_token"),))))
    legacy = F.config("discord", double_puppet=(("example.com", "shared_secret"),))
    assert (
        config_rules.double_puppet_shared_secret(F.facts("discord").spec, legacy, F.ctx()) is None
    )


def test_double_puppet_line_confirms_the_config_finding() -> None:
    line = (
        GO
        + 'ERR Failed to create new user intent error="M_UNKNOWN_TOKEN (HTTP 401)" action="setup double puppet"'
    )
    cfg = F.config(double_puppet=(("example.com", "shared_secret"),))
    r = F.report(cfg=cfg, svc=F.service(), lines=F.journal(line))
    (f,) = r.findings
    assert f.code == "double_puppet_shared_secret"
    assert any(
        e.startswith("journal (current run): ERR Failed to create new user intent")
        for e in f.evidence
    )


# ---- database ---------------------------------------------------------------------------------
def _db(*tables: str, owner: str = "megabridge/mautrix-whatsapp") -> DbFacts:
    return DbFacts(
        kind="postgres",
        location="matrix-postgres/matrix_mautrix_whatsapp",
        tables=frozenset(tables),
        versions={},
        owner=owner,
        accounts=(),
        samples={},
    )


def test_foreign_tables_from_the_database() -> None:
    f = database_rules.foreign_tables(F.facts().spec, _db("portal", "state_groups_state"), F.ctx())
    assert (
        f is not None
        and f.code == "foreign_tables"
        and "Synapse's tables (state_groups_state)" in f.summary
    )
    assert (
        database_rules.foreign_tables(F.facts().spec, _db("portal", "kv_store"), F.ctx()) is None
    )


def test_legacy_db_line_explains_the_owner_warning() -> None:
    line = (
        GO
        + 'FTL Failed to initialize database error="the database is owned by mautrix-whatsapp" db_section=main'
    )
    r = F.report(
        db=_db("portal", owner="mautrix-whatsapp"),
        svc=F.service(state="crash_loop", exit_status=15),
        lines=F.journal(line),
    )
    assert r.findings[0].code == "legacy_db_unmigratable"
    owner = next(f for f in r.findings if f.code == "db_pre_megabridge")
    assert owner.explained_by == "legacy_db_unmigratable"


# ---- keys + verdict ---------------------------------------------------------------------------
def test_journal_line_confirms_a_proven_key_finding_and_raises_its_severity() -> None:
    generate = Finding("pickle_key_generate", "warning", "encryption.pickle_key is 'generate' ...")
    loop = Finding("service_crash_loop", "error", "x keeps restarting: 3 automatic restarts.")
    heard = Finding(
        "pickle_key_mismatch",
        "error",
        "says",
        evidence=("journal (current run): FTL ... invalid",),
    )
    out = verdict.settle([generate, loop], [heard], F.ctx())
    assert [(f.code, f.severity, f.explained_by) for f in out] == [
        ("pickle_key_generate", "error", None),
        ("service_crash_loop", "error", "pickle_key_generate"),
    ]
    assert out[0].summary.endswith("x keeps restarting: 3 automatic restarts.")
    assert "journal (current run): FTL ... invalid" in out[0].evidence


def test_the_bridges_last_words_beat_another_proven_cause() -> None:
    # A proven key mismatch, but the bridge dies on its token first: the token is the verdict.
    mismatch = Finding("pickle_key_mismatch", "error", "Pickle key mismatch.")
    loop = Finding("service_crash_loop", "error", "x keeps restarting: 3 automatic restarts.")
    token = Finding("as_token_rejected", "error", "The homeserver rejects the bridge's as_token.")
    out = verdict.settle([mismatch, loop], [token], F.ctx())
    assert out[0].code == "as_token_rejected" and "keeps restarting" in out[0].summary
    assert (
        next(f for f in out if f.code == "service_crash_loop").explained_by == "as_token_rejected"
    )
    assert next(f for f in out if f.code == "pickle_key_mismatch").explained_by is None


def test_a_proven_cause_explains_the_loop_when_the_journal_is_silent() -> None:
    mismatch = Finding("pickle_key_mismatch", "error", "Pickle key mismatch.")
    loop = Finding("service_crash_loop", "error", "x keeps restarting: 3 automatic restarts.")
    out = verdict.settle([loop, mismatch], [], F.ctx())
    assert [(f.code, f.explained_by) for f in out] == [
        ("pickle_key_mismatch", None),
        ("service_crash_loop", "pickle_key_mismatch"),
    ]
    # A warning explains nothing: with encryption off the mismatch does not stop the bridge.
    soft = replace(mismatch, severity="warning")
    out = verdict.settle([loop, soft], [], F.ctx())
    assert [f.explained_by for f in out] == [None, None] and out[0].code == "service_crash_loop"


def test_evidence_keeps_the_end_of_a_traceback() -> None:
    from bridgedoctor import logline
    from bridgedoctor.rules import logs as log_rules

    raw = [
        "ERR Unhandled error",
        "Traceback (most recent call last):",
        "  a",
        "  b",
        "  c",
        "Boom: d",
    ]
    (line,) = logline.group(logline.parse(x) for x in raw)
    assert log_rules.evidence(line) == ("journal: ERR Unhandled error", "  b", "  c", "  Boom: d")


def test_corroborating_lines_are_merged_by_what_they_say_after_the_label() -> None:
    found = Finding(
        "pickle_key_mismatch", "error", "S.", evidence=("journal (current run): ERR a: x",)
    )
    heard = Finding("pickle_key_mismatch", "error", "H.", evidence=(
        "journal (previous run): ERR a: x",  # said again: kept once
        "journal (previous run): ERR b: x",  # says something else, ending alike: kept
    ))  # fmt: skip
    (out,) = verdict.settle([found], [heard], F.ctx())
    assert out.evidence == ("journal (current run): ERR a: x", "journal (previous run): ERR b: x")


def test_the_last_words_point_at_a_cause_only_if_it_explains_the_loop() -> None:
    """The bridge's last words name a warning (which explains nothing): the loop's cause is
    then the proven error, not what was said last."""
    mismatch = Finding("pickle_key_mismatch", "error", "Pickle key mismatch.")
    loop = Finding("service_crash_loop", "error", "x keeps restarting: 3 automatic restarts.")
    said = Finding("double_puppet_shared_secret", "warning", "Double puppeting fails.")
    out = verdict.settle([loop, mismatch], [said], F.ctx())
    assert {f.code: f.explained_by for f in out}["service_crash_loop"] == "pickle_key_mismatch"


# ---- prevention: which host_vars file speaks for this server, and what it pins ----------------
def _vars(name: str, values: dict[str, tuple[str, str]], domain: str | None = None):
    from bridgedoctor.facts import VarsFile, VarsValue

    return VarsFile(
        path=F.ROOT / "inventory" / "host_vars" / name / "vars.yml",
        domain=VarsValue("literal", domain, 1) if domain else None,
        values={k: VarsValue(kind, text, 7) for k, (kind, text) in values.items()},
        eras=frozenset(),
    )


def _judge(era: str, *files: object, domain: str | None = "example.com", key: str = "k1"):
    from bridgedoctor.facts import InventoryFacts
    from bridgedoctor.rules import prevention

    inv = InventoryFacts(path=F.ROOT / "inventory", files=files)  # type: ignore[arg-type]
    return prevention.judge(F.facts().spec, key, inv, domain, era)


CURRENT = "matrix_bridge_mautrix_whatsapp_bridge_encryption_pickle_key"
LEGACY = "matrix_mautrix_whatsapp_bridge_encryption_pickle_key"


def test_without_a_domain_only_a_single_host_can_be_judged() -> None:
    one = _vars("a", {CURRENT: ("literal", "k1")})
    pin = _judge("current", one, domain=None)
    assert (pin.state, pin.note) == ("pinned", "")
    pin = _judge("current", one, _vars("b", {}), domain=None)
    assert (pin.state, pin.note) == (
        "cannot_judge",
        "the inventory has 2 hosts and none sets matrix_domain to this server's domain (unknown)",
    )


def test_each_naming_era_reads_its_own_variables() -> None:
    legacy = _vars("a", {LEGACY: ("literal", "k1")})
    assert _judge("both", legacy).state == "pinned"
    assert _judge("legacy", legacy).state == "pinned"
    stray = _judge("current", legacy)
    assert (stray.state, stray.note) == (
        "absent",
        f"{legacy.path} line 7: {LEGACY} uses the other MDAD naming, which your checkout "
        "(from 2026-07-16 on) does not read",
    )
    current = _judge("legacy", _vars("a", {CURRENT: ("literal", "k1")}))
    assert current.state == "absent" and "(before 2026-07-16)" in current.note
    nothing = _judge("current", _vars("a", {}))
    assert (nothing.state, nothing.where, nothing.value, nothing.note) == ("absent", "", None, "")


def test_every_file_of_the_server_is_read() -> None:
    first = _vars("a", {CURRENT: ("literal", "k1")}, domain="example.com")
    second = _vars("b", {}, domain="example.com")
    pin = _judge("current", first, second)
    assert (pin.state, pin.where, pin.note) == ("pinned", f"{first.path} line 7: {CURRENT}", "")
    other = _vars("b", {CURRENT: ("literal", "k2")}, domain="example.com")
    conflict = _judge("current", first, other)
    assert (conflict.state, conflict.note) == (
        "cannot_judge",
        "the inventory sets it more than once, differently "
        f"({first.path} line 7: {CURRENT}; {other.path} line 7: {CURRENT})",
    )


def test_a_pin_that_is_no_literal_says_what_it_is() -> None:
    pin = _judge("current", _vars("a", {CURRENT: ("template", "{{ k }}")}))
    assert (pin.state, pin.note) == ("cannot_judge", "it is a Jinja expression, not a literal")
    pin = _judge("current", _vars("a", {CURRENT: ("literal", "k2")}))
    assert (pin.state, pin.note) == ("other", "")


def test_a_catalogue_fix_with_a_snippet_and_no_steps() -> None:
    """Any entry of data/failures.yaml: each snippet line filled (naming, names, what the line
    said) and joined; the snippet alone still makes a fix, led by how to apply it."""
    from bridgedoctor.catalogue import Entry
    from bridgedoctor.rules import logs as log_rules

    entry = Entry(code="x", family="registration", severity="error", lines=(), summary="S.",
                  source="", vars=("a_{var:enabled}: {what}", "b: {config_dir}"))  # fmt: skip
    fix = log_rules.entry_fix(entry, F.facts(cfg=ELSEWHERE), F.ctx("both"), {"what": "said"})
    assert fix is not None and fix.vars_yml == (
        "a_matrix_bridge_mautrix_whatsapp_enabled (MDAD checkouts before 2026-07-16: "
        "matrix_mautrix_whatsapp_enabled): said\nb: /srv/matrix/mautrix-whatsapp/config"
    )
    assert fix.steps == ("Add the snippet to inventory/host_vars/<your matrix domain>/vars.yml.",)
    empty = Entry(
        code="x", family="registration", severity="error", lines=(), summary="S.", source=""
    )
    assert log_rules.entry_fix(empty, F.facts(), F.ctx(), {}) is None


def test_a_pin_for_either_naming_says_to_use_the_checkouts_form() -> None:
    from bridgedoctor.rules import prevention

    found, pin = prevention.prevention_findings(F.facts().spec, "k1", "example.com", F.ctx("both"))
    (f,) = found
    assert pin and f.code == "pickle_key_unpinned" and f.fix is not None
    assert f.fix.steps[0] == "Use the form for your MDAD checkout (test)."
    assert len(f.fix.steps) == 2 and [v.naming for v in f.fix.variants] == ["current", "legacy"]


def test_one_restart_is_said_in_the_singular() -> None:
    """The unit-state fact, the crash-loop finding and the logs command say "1 automatic
    restart", and "2 automatic restarts"."""
    from bridgedoctor.logs import state_words

    for n, words in ((1, "1 automatic restart"), (2, "2 automatic restarts")):
        svc = F.service(state="crash_loop", restarts=n)
        report = F.report(svc=svc, lines=F.journal())
        fact = report.facts["unit state"]
        assert f", {words} since it was last started" in fact, fact
        assert f", {words}," in state_words(svc, None) + ","
        loop = next(f for f in report.findings if f.code == "service_crash_loop")
        assert f"keeps restarting: {words}," in loop.summary, loop.summary
