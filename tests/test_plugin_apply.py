"""`!bridge apply` and the follow-up after every change, under maubot's test harness against the
fake helper of tests/test_plugin.py (the real protocol over a Unix socket)."""

from __future__ import annotations

from typing import Any

import pytest
from maubot import testing as mtest

from bridgedoctor import protocol
from tests.test_plugin import (
    ADMIN,
    APPLY_PLAN,
    SNIPPET,
    FakeHelper,
    helper,
    maubot_plugin_class,
    maubot_plugin_config_class,
    maubot_plugin_path,
    maubot_test_bot,
    maubot_upgrade_table,
    notices,
    plugin,
    say,
    sock_dir,
)
from tests.test_plugin_reset import (
    maubot_plugin_config_overrides,
    ops,
    plan_event,
    react,
)

FATAL = (
    "FTL Failed to start bridge error=failed to start Matrix connector: the supplied account "
    "key is invalid"
)
FAILING: dict[str, Any] = {
    "bridge": "gmessages",
    "state": "failing",
    "seconds": 30,
    "fatal": FATAL,
    "restarts": 2,
    "finding": {
        "code": "pickle_key_mismatch",
        "severity": "error",
        "summary": 'Pickle key mismatch: the config has "x", but the crypto account was '
        'encrypted with "y".',
    },
}


async def confirmed(plugin, bot: mtest.TestBot, text: str) -> tuple[str, list[Any]]:
    """Ask, confirm with ✅, let the follow-up arrive; (plan event id, notices since the ✅)."""
    await say(bot, text)
    event_id, _, _ = plan_event(bot)
    before = len(notices(bot))
    await react(bot, event_id, "✅")
    await plugin.commands.resets.idle()
    return event_id, [n.content for n in notices(bot)[before:]]


async def test_apply_plan_leads_with_the_pin_then_report_then_follow_up(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge apply gmessages")
    event_id, code, plan = plan_event(bot)
    lines = plan.body.splitlines()
    assert lines[0] == (
        "⚠️ Write the proven key into the config.yaml of gmessages? Nothing happens until you "
        "confirm."
    )
    assert lines[1].startswith("Make it last: pin the key in vars.yml")
    assert lines[2:5] == ["```yaml", SNIPPET, "```"]
    assert (
        '2. change encryption.pickle_key from "mautrix.bridge.e2ee" to '
        '"go.mau.fi/mautrix-gmessages" (historical key of gmessages); nothing else in the '
        "file changes" in plan.body
    )
    assert f"Undo: !bridge restore gmessages {APPLY_PLAN['id']}" in plan.body
    html = plan.formatted_body
    assert html.index('<pre><code class="language-yaml">') < html.index("<ol>")
    assert ops(helper) == ["apply_plan"]

    before = len(notices(bot))
    await react(bot, event_id, "✅")
    await plugin.commands.resets.idle()
    (applied,) = [r for r in helper.requests if r.op == "apply"]
    assert (applied.plan, applied.digest, applied.requested_by) == (
        APPLY_PLAN["id"], APPLY_PLAN["digest"], ADMIN,
    )  # fmt: skip
    report, follow = (n.content for n in notices(bot)[before:])
    assert report.body.splitlines()[0] == (
        '✅ gmessages: config.yaml now holds the proven key "go.mau.fi/mautrix-gmessages"; '
        "matrix-mautrix-gmessages.service restarted. Following it now."
    )
    assert report.body.splitlines()[2:5] == ["```yaml", SNIPPET, "```"]  # the pin in front
    assert report.body.splitlines()[-1] == f"Undo: !bridge restore gmessages {APPLY_PLAN['id']}"
    assert follow.body == "🟩 gmessages is up: running for 30 s, no fatal line."
    assert report.relates_to.in_reply_to.event_id == event_id
    assert follow.relates_to.in_reply_to.event_id == event_id
    assert ops(helper) == ["apply_plan", "apply", "verify"]


async def test_still_failing_names_the_fatal_line_and_the_cause(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(helper_answers(), "verify", FAILING)
    _, posted = await confirmed(plugin, maubot_test_bot, "!bridge apply gmessages")
    follow = posted[-1]
    assert follow.body.splitlines() == [
        f"🟥 gmessages is still failing: {FATAL}",
        '🟥 Pickle key mismatch: the config has "x", but the crypto account was encrypted with '
        '"y".',
        "Details and the fix: !bridge check gmessages",
    ]
    assert f"<code>{FATAL}</code>" in follow.formatted_body


async def test_the_undo_of_an_apply_is_a_restore_and_is_followed_too(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    _, posted = await confirmed(
        plugin, maubot_test_bot, f"!bridge restore gmessages {APPLY_PLAN['id']}"
    )
    assert [r.backup for r in helper.requests if r.op == "restore_plan"] == [APPLY_PLAN["id"]]
    assert posted[-1].body.startswith("🟩 gmessages is up")
    assert ops(helper)[-1] == "verify"


async def test_a_refused_apply_is_not_followed(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge apply gmessages")
    event_id, _, _ = plan_event(bot)
    helper.error = protocol.ProtocolError(
        protocol.E_RESET, "The bridge changed since the plan was shown; nothing was changed."
    )
    await react(bot, event_id, "✅")
    await plugin.commands.resets.idle()
    assert notices(bot)[-1].content.body == (
        "⚠️ The bridge changed since the plan was shown; nothing was changed."
    )
    assert "verify" not in ops(helper)


async def test_a_reset_of_a_stopped_bridge_is_not_followed(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_plugin import PLAN

    monkeypatch.setitem(helper_answers(), "reset_plan", {**PLAN, "was_active": False})
    _, posted = await confirmed(plugin, maubot_test_bot, "!bridge reset gmessages")
    assert posted[-1].body.startswith("✅ gmessages: crypto reset done.")
    assert "verify" not in ops(helper)


async def test_a_follow_up_that_fails_says_where_to_look(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        helper_answers(),
        "verify",
        protocol.ProtocolError(protocol.E_TIMEOUT, "The check took too long and was stopped."),
    )
    _, posted = await confirmed(plugin, maubot_test_bot, "!bridge apply gmessages")
    assert posted[-1].body == (
        "⚠️ Could not follow gmessages after the apply: The bridgedoctor helper gave up: the "
        "check took too long and was stopped. !bridge check gmessages shows how it is."
    )


def test_usage() -> None:
    from bridgedoctor_maubot.invocation import parse

    assert parse("apply Gmessages").bridge == "gmessages"
    assert parse("apply").problem == "Usage: !bridge apply <name>."
    assert parse("apply a b").problem == "Usage: !bridge apply <name>."


def helper_answers() -> dict[str, Any]:
    from tests import test_plugin

    return test_plugin.RESET_ANSWERS


async def test_an_apply_is_followed_even_when_the_unit_was_stopped(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An apply always restarts the unit (unlike a reset, which leaves a stopped one stopped),
    so it is followed whatever the plan says the unit was doing."""
    monkeypatch.setitem(helper_answers(), "apply_plan", {**APPLY_PLAN, "was_active": False})
    _, posted = await confirmed(plugin, maubot_test_bot, "!bridge apply gmessages")
    assert ops(helper)[-1] == "verify"
    assert posted[-1].body == "🟩 gmessages is up: running for 30 s, no fatal line."
