"""Following a unit after a change: the judgement from `systemctl show` samples and the journal
(the probes themselves run against real systemd in tests/systemd/test_apply.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridgedoctor.facts import ProbeError
from bridgedoctor.findings import Finding
from bridgedoctor.render.matrix_apply import verified
from bridgedoctor.verify import Verification, broke, judge, last_words
from tests.support.facts import journal, service

FATAL = (
    'FTL Failed to start bridge error="failed to start Matrix connector: the supplied account '
    'key is invalid"'
)


def test_up_means_running_all_along_and_no_fatal_line() -> None:
    up = service(state="running")
    assert judge([up, up, up], journal("INF bridge started")) == ("up", "active (running)")
    # Not yet running at first (ExecStartPre), then running: up too.
    assert judge([service(state="start_pre", restarts=0), up], journal())[0] == "up"


@pytest.mark.parametrize(
    "later",
    [
        service(state="crash_loop", restarts=1),
        service(state="failed"),
        service(state="running", restarts=1),  # restarted in between
        service(state="running", main_start_mono=123),  # another process
    ],
    ids=["auto-restart", "failed", "restarted", "new-process"],
)
def test_any_restart_or_failure_is_failing(later) -> None:
    first = service(state="running")
    assert broke(first, later)
    assert judge([first, later], journal())[0] == "failing"


def test_running_with_a_fatal_line_is_failing() -> None:
    up = service(state="running")
    assert judge([up, up], journal("INF hello", FATAL))[0] == "failing"
    assert judge([up, up], journal("ERR a recoverable error"))[0] == "up"


def test_stopped_cleanly_is_not_failing() -> None:
    first = service(state="running")
    stopped = service(state="stopped")
    assert judge([first, stopped], journal()) == ("stopped", "inactive (dead)")


def test_still_starting_at_the_end_is_not_up() -> None:
    pre = service(state="start_pre", restarts=0)
    assert not broke(pre, pre)
    assert judge([pre, pre], journal())[0] == "failing"


def test_last_words_prefer_fatal_then_error_then_the_run_before() -> None:
    assert last_words(journal("ERR first", FATAL, "ERR after")).endswith(
        'the supplied account key is invalid"'
    )
    assert last_words(journal("INF x", "ERR only errors")) == "ERR only errors"
    assert last_words(journal(previous=(FATAL,))).startswith("FTL Failed to start bridge")
    assert last_words(journal("INF fine")) == ""
    assert last_words(ProbeError("journal_unknown", "no journal")) == ""


def test_secrets_are_scrubbed_from_the_fatal_line() -> None:
    line = 'FTL failed to connect error="pq: password authentication failed" uri=postgres://u:Hunter2pw@db/x'
    said = last_words(journal(line))
    assert "Hunter2pw" not in said


def test_the_answer_renders_as_the_room_shows_it() -> None:
    up = Verification("gmessages", "matrix-mautrix-gmessages.service", "up", 30)
    assert verified(up.to_dict())[0] == "🟩 gmessages is up: running for 30 s, no fatal line."
    cause = Finding("pickle_key_mismatch", "error", "Pickle key mismatch: …", evidence=("x",))
    failing = Verification(
        "gmessages", "u", "failing", 4, fatal=FATAL, restarts=2, finding=cause
    ).to_dict()
    assert failing["finding"] == {
        "code": "pickle_key_mismatch",
        "severity": "error",
        "summary": "Pickle key mismatch: …",
    }
    assert verified(failing)[0].splitlines()[:2] == [
        f"🟥 gmessages is still failing: {FATAL}",
        "🟥 Pickle key mismatch: …",
    ]
    stopped = replace(Verification("gmessages", "u", "stopped", 3), detail="inactive (dead)")
    assert verified(stopped.to_dict())[0].startswith(
        "⬜ gmessages is not running after the change: inactive (dead)."
    )


def test_bridge_text_is_neutralised_in_the_follow_up_and_the_watch() -> None:
    from bridgedoctor.render.matrix_watch import changes

    hostile = "FTL \u202egnp.exe\u202c done\x1b[2J"
    failing = Verification("gmessages", "u", "failing", 4, fatal=hostile).to_dict()
    report = {
        "bridge": "gmessages",
        "status": "broken",
        "findings": [{"code": "x", "severity": "error", "summary": hostile}],
    }
    for plain, html in (verified(failing), changes([(report, "ok")])):
        for text in (plain, html):
            assert "\u202e" not in text and "\x1b" not in text
            assert "\\u202e" in text
