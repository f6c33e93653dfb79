"""How the room and the terminal show a cause with what it explains, and the `logs` answer."""
# ruff: noqa: E501 - log lines are quoted whole

from __future__ import annotations

import html
import re

from bridgedoctor.logs import LogsReport
from bridgedoctor.render import matrix as render
from bridgedoctor.render import text
from tests.support import facts as F

GO = "2026-08-22T10:00:00.123Z "
AS_TOKEN_LINE = (
    GO
    + "FTL The as_token was not accepted. Is the registration file installed in your homeserver correctly?"
)


def _mismatch_report() -> dict:
    reg = F.registration(appservice=F.appservice(as_token="another-as-token"))
    r = F.report(
        reg=reg, svc=F.service(state="crash_loop", exit_status=16), lines=F.journal(AS_TOKEN_LINE)
    )
    return r.to_dict()


def test_room_leads_with_the_cause_and_folds_the_loop() -> None:
    plain, formatted = render.bridge_report(_mismatch_report())
    first = plain.splitlines()[0]
    assert first.startswith(
        "🟥 whatsapp: broken — as_token differs between config.yaml and registration.yaml"
    )
    assert "keeps restarting: 7 automatic restarts, last exit status 16" in first
    # The loop is in the verdict, not repeated; the rejection follows from the cause.
    assert plain.count("keeps restarting") == 1
    assert "↳ The homeserver rejects the bridge's as_token" in plain
    # Only the cause's fix: re-render both files and restart Synapse.
    assert "<code>just install-service mautrix-whatsapp</code>" in formatted
    assert "Read its last lines" not in plain
    assert "FTL The as_token was not accepted" in html.unescape(formatted)  # evidence


def test_terminal_marks_what_the_cause_explains() -> None:
    reg = F.registration(appservice=F.appservice(as_token="another-as-token"))
    r = F.report(
        reg=reg, svc=F.service(state="crash_loop", exit_status=16), lines=F.journal(AS_TOKEN_LINE)
    )
    out = text.bridge(r)
    assert "[error] service_crash_loop (explained by registration_token_mismatch)" in out
    assert out.count("Fix:") == 1


def _logs(**kw: object) -> dict:
    base = LogsReport(
        bridge="slack",
        unit="matrix-mautrix-slack.service",
        state="activating (auto-restart), 7 automatic restarts, last exit status 13",
        run="current run",
        lines=["2026-08-22T10:00:00Z FTL Homeserver -> appservice connection is not working <b>"],
    )
    for k, v in kw.items():
        setattr(base, k, v)
    return base.to_dict()


def test_logs_in_a_code_block() -> None:
    plain, formatted = render.logs_report(_logs())
    assert plain.startswith(
        "🟥 slack: last fatal and error lines of its current run (matrix-mautrix-slack.service: activating (auto-restart)"
    )
    assert (
        "```text\n2026-08-22T10:00:00Z FTL Homeserver -> appservice connection is not working <b>\n```"
        in plain
    )
    block = re.search(r'<pre><code class="language-text">(.*?)</code></pre>', formatted, re.S)
    assert block and "&lt;b&gt;" in block.group(1) and "<b>" not in block.group(1)
    assert "<code>!bridge check slack</code>" in formatted


def test_a_line_with_backticks_cannot_close_the_block() -> None:
    plain, _ = render.logs_report(_logs(lines=["FTL Add `recovery_key` to ```kv_store```"]))
    fence = plain.splitlines()[1][: -len("text")]
    assert len(fence) == 4 and plain.count(fence) == 2


def test_logs_healthy_problem_and_too_long() -> None:
    plain, _ = render.logs_report(_logs(lines=[], state="active (running)"))
    assert (
        plain
        == "🟩 slack: no fatal or error line since it last started (matrix-mautrix-slack.service: active (running))."
    )
    plain, _ = render.logs_report(_logs(problem="Could not read the journal: no access."))
    assert plain == "⬜ slack: Could not read the journal: no access."
    many = [f"ERR line {i} " + "x" * 3000 for i in range(40)]
    plain, formatted = render.logs_report(_logs(lines=many))
    assert len(plain.encode()) + len(formatted.encode()) <= render.MAX_CONTENT_BYTES
    assert "ERR line 39" in plain and "Older lines are left out to fit one message." in plain


def test_every_catalogue_command_is_marked_as_code_whole() -> None:
    """A command in a step ends at two spaces or a ')': the room marks it as <code> whole."""
    from bridgedoctor import catalogue

    for entry in catalogue.load().entries.values():
        for step in entry.steps:
            assert not re.search(r"\S \(or:", step), (entry.code, step)
