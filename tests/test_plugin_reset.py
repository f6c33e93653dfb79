"""`!bridge reset/confirm/cancel/backups/restore` under maubot's test harness, against the fake
helper of tests/test_plugin.py (which speaks the real protocol over a Unix socket)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from maubot import testing as mtest
from mautrix.types import EventType, MessageType, ReactionEvent

from bridgedoctor import protocol
from bridgedoctor_maubot.replies import REFUSAL, UNEXPECTED
from bridgedoctor_maubot.resets import _ProgressNotice
from bridgedoctor_maubot.store import Store
from tests.test_plugin import (
    ADMIN,
    DONE,
    PLAN,
    RESET_ANSWERS,
    ROOM,
    STRANGER,
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

OTHER_ADMIN = "@second:example.com"
BOT = "@botname:example.com"  # maubot.testing.TestBot's mxid


@pytest.fixture
def maubot_plugin_config_overrides(sock_dir) -> dict[str, Any]:
    return {
        "socket_path": str(sock_dir / "helper.sock"),
        "token": "plugin-test-token-5b0c1f2e9a7d4c3b",
        "admins": [ADMIN, OTHER_ADMIN],
        "allowed_rooms": [ROOM],
        "timeouts": {"check": 2, "working_after": 5, "confirm": 1, "reset": 5},
    }


def react(bot: mtest.TestBot, target: str, key: str, sender: str = ADMIN) -> Any:
    evt = ReactionEvent.deserialize(
        {
            "type": "m.reaction",
            "room_id": ROOM,
            "event_id": f"$r{abs(hash((target, key, sender)))}",
            "sender": sender,
            "origin_server_ts": 1,
            "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": target,
                                         "key": key}},
        }
    )  # fmt: skip
    return asyncio.wait_for(bot.dispatch(EventType.REACTION, evt), 10)


def plan_event(bot: mtest.TestBot) -> tuple[str, str, Any]:
    """(event id, confirmation code, content) of the last plan the bot posted."""
    for i in range(len(bot.responded) - 1, -1, -1):
        r = bot.responded[i]
        if r.event_type == EventType.ROOM_MESSAGE and r.content.body.startswith("⚠️"):
            code = r.content.body.split(" confirm ")[1].split(".")[0]
            return bot.ids[i], code, r.content  # type: ignore[attr-defined]
    raise AssertionError("no plan was posted")


def ops(helper: FakeHelper) -> list[str]:
    return [r.op for r in helper.requests]


def bot_reactions(bot: mtest.TestBot, target: str) -> list[str]:
    return [
        r.content.relates_to.key
        for r in bot.responded
        if r.event_type == EventType.REACTION and r.content.relates_to.event_id == target
    ]


async def test_plan_then_only_the_requesters_check_runs_it(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    event_id, code, plan = plan_event(bot)
    assert plan.msgtype == MessageType.NOTICE and plan.relates_to.in_reply_to.event_id == "test"
    assert plan.body.startswith("⚠️ Reset gmessages (crypto)? Nothing happens until you confirm.")
    assert f"Undo: !bridge restore gmessages {PLAN['id']}" in plan.body
    assert PLAN["backup_dir"] in plan.body and "kv_store row recovery_key" in plan.body
    assert "<details><summary>Backed up (2)</summary>" in plan.formatted_body
    assert bot_reactions(bot, event_id) == ["✅", "❌"]  # seeded, one click away
    assert ops(helper) == ["reset_plan"]

    await react(bot, event_id, "✅", sender=STRANGER)  # not an admin
    await react(bot, event_id, "✅", sender=OTHER_ADMIN)  # an admin, but not the one who asked
    await react(bot, event_id, "✅", sender=BOT)  # the bot's own reaction
    await react(bot, "$elsewhere", "✅")  # the admin, on another message
    await react(bot, event_id, "👍")  # another key
    assert ops(helper) == ["reset_plan"]

    before = len(notices(bot))
    await react(bot, event_id, "✅\ufe0f")  # the admin; some clients add U+FE0F
    await plugin.commands.resets.idle()
    (reset,) = [r for r in helper.requests if r.op == "reset"]
    assert (reset.bridge, reset.mode, reset.plan, reset.digest, reset.requested_by) == (
        "gmessages", "crypto", PLAN["id"], PLAN["digest"], ADMIN,
    )  # fmt: skip
    report = notices(bot)[before:]
    assert len(report) == 2  # the report, then how the unit runs now
    assert report[0].content.body.startswith("✅ gmessages: crypto reset done.")
    assert report[1].content.body == "🟩 gmessages is up: running for 30 s, no fatal line."
    assert report[1].content.relates_to.in_reply_to.event_id == event_id
    assert report[0].content.relates_to.in_reply_to.event_id == event_id
    assert f"!bridge restore gmessages {PLAN['id']}" in report[0].content.body
    assert "⏳" in bot_reactions(bot, event_id)  # shown while it ran, then redacted
    assert bot.redacted  # type: ignore[attr-defined]

    await react(bot, event_id, "✅")  # a second ✅ does nothing
    await say(bot, f"!bridge confirm {code}")  # nor does the code, once used
    assert ops(helper).count("reset") == 1
    assert notices(bot)[-1].content.body.startswith(f"No plan with code {code} is waiting")


async def test_a_running_reset_shows_its_progress(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    """The helper reports steps and rows while it works: one line in reply to the plan, edited
    in place (not a message per report), ending as finished; then the report."""
    bot = maubot_test_bot
    helper.progress = [
        {"step": "stop", "doing": "stopping the bridge", "index": 1, "steps": 5},
        {"step": "backup", "doing": "backing up", "index": 2, "steps": 5,
         "table": "crypto_megolm_inbound_session", "rows": 1000, "of": 3000, "approx": True},
        {"step": "backup", "doing": "backing up", "index": 2, "steps": 5,
         "table": "crypto_megolm_inbound_session", "rows": 3000, "of": 3000, "approx": True},
        {"step": "start", "doing": "starting the bridge", "index": 5, "steps": 5},
    ]  # fmt: skip
    await say(bot, "!bridge reset gmessages")
    event_id, code, _ = plan_event(bot)
    before = len(bot.responded)
    await say(bot, f"!bridge confirm {code}")
    (reset,) = [r for r in helper.requests if r.op == "reset"]
    assert reset.progress is True
    sent = [r for r in bot.responded[before:] if r.event_type == EventType.ROOM_MESSAGE]
    first, *edits, report = sent
    assert first.content.body == "⏳ Reset of gmessages, step 1 of 5: stopping the bridge"
    assert first.content.relates_to.in_reply_to.event_id == event_id
    first_id = bot.ids[before + bot.responded[before:].index(first)]  # type: ignore[attr-defined]
    assert len(edits) <= 2  # throttled: not one message per report
    last = edits[-1].content
    assert last.relates_to.rel_type.value == "m.replace" and last.relates_to.event_id == first_id
    assert last.serialize()["m.new_content"]["body"] == (
        "✔️ Reset of gmessages, step 5 of 5: starting the bridge (finished)"
    )
    assert report.content.body.startswith("✅ gmessages: crypto reset done.")


def test_progress_line_shows_rows_of_the_long_step() -> None:
    from bridgedoctor.render.matrix_reset import progress

    state = {"step": "backup", "doing": "backing up", "index": 2, "steps": 5,
             "table": "crypto_megolm_inbound_session", "rows": 450000, "of": 1000000,
             "approx": True}  # fmt: skip
    body, html = progress("reset", "whatsapp", state)
    assert body == (
        "⏳ Reset of whatsapp, step 2 of 5: backing up, crypto_megolm_inbound_session: "
        "450,000 of about 1,000,000 rows"
    )
    assert html == f"<p>{body}</p>"
    exact = {**state, "step": "restore_db", "doing": "putting the rows back", "approx": False}
    assert progress("restore", "whatsapp", exact, "stopped")[0] == (
        "✔️ Restore of whatsapp, step 2 of 5: putting the rows back, "
        "crypto_megolm_inbound_session: 450,000 of 1,000,000 rows (stopped)"
    )


@pytest.mark.parametrize("revoked", ["admins", "allowed_rooms"])
async def test_reaction_after_admin_rights_are_revoked_is_ignored(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    maubot_plugin_config_dict: dict[str, Any],
    revoked: str,
) -> None:
    """The requester's ✅ counts only while they are an admin in an allowed room: rights taken
    away between plan and confirmation (config edited in the maubot UI) void the confirmation."""
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    event_id, _, _ = plan_event(bot)
    maubot_plugin_config_dict[revoked] = (
        [OTHER_ADMIN] if revoked == "admins" else ["!other:example.com"]
    )
    plugin.on_external_config_update()
    await react(bot, event_id, "✅")
    assert ops(helper) == ["reset_plan"]


async def test_confirm_by_code_and_wrong_people(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages full")
    _, code, _ = plan_event(bot)
    assert helper.requests[0].mode == "full"
    await say(bot, f"!bridge confirm {code}", sender=OTHER_ADMIN)
    await say(bot, f"!bridge confirm {code}", sender=STRANGER)
    assert "reset" not in ops(helper)
    assert notices(bot)[-1].content.body == REFUSAL
    await say(bot, f"!bridge confirm {code.upper()}")
    await plugin.commands.resets.idle()
    assert ops(helper).count("reset") == 1
    report, follow = (n.content for n in notices(bot)[-2:])
    assert report.body.startswith("✅ gmessages: crypto reset done.")
    assert report.relates_to.in_reply_to.event_id == "test"  # the confirm command
    assert follow.body.startswith("🟩 gmessages is up")
    assert follow.relates_to.in_reply_to.event_id != "test"  # the plan


async def test_one_plan_per_bridge_and_cancel_frees_it(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    event_id, code, _ = plan_event(bot)
    await say(bot, "!bridge reset gmessages", sender=OTHER_ADMIN)
    assert notices(bot)[-1].content.body == (
        f"gmessages is busy: a reset plan is waiting for {ADMIN} to confirm. "
        "One reset, restore or apply at a time per bridge."
    )
    assert ops(helper) == ["reset_plan"]
    await react(bot, event_id, "❌", sender=OTHER_ADMIN)  # not theirs to cancel
    await react(bot, event_id, "❌")
    cancelled = notices(bot)[-1].content
    assert cancelled.body == "The reset plan of gmessages was cancelled; nothing was changed."
    assert cancelled.relates_to.in_reply_to.event_id == event_id
    await react(bot, event_id, "✅")
    assert "reset" not in ops(helper)
    await say(bot, "!bridge reset gmessages", sender=OTHER_ADMIN)  # free again
    assert ops(helper) == ["reset_plan", "reset_plan"]
    _, code2, _ = plan_event(bot)
    await say(bot, f"!bridge cancel {code2}", sender=OTHER_ADMIN)
    assert notices(bot)[-1].content.body.endswith("was cancelled; nothing was changed.")


async def test_unconfirmed_plan_expires(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    event_id, _, plan = plan_event(bot)
    assert "Confirm within 1 second: react ✅" in plan.body
    await asyncio.sleep(1.5)
    expired = notices(bot)[-1].content
    assert expired.body == "The reset plan of gmessages expired unconfirmed; nothing was changed."
    assert expired.relates_to.in_reply_to.event_id == event_id
    await react(bot, event_id, "✅")
    assert "reset" not in ops(helper)


async def test_helper_refusal_is_one_sentence_and_frees_the_bridge(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    event_id, _, _ = plan_event(bot)
    changed = (
        "The bridge changed since the plan was shown (its plan differs); nothing was changed. "
        "Ask again."
    )
    helper.error = protocol.ProtocolError(protocol.E_RESET, changed)
    await react(bot, event_id, "✅")
    assert notices(bot)[-1].content.body == f"⚠️ {changed}"
    helper.error = None
    await say(bot, "!bridge reset gmessages")  # not stuck as busy
    assert ops(helper).count("reset_plan") == 2


async def test_backups_and_restore(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge backups gmessages")
    listing = notices(bot)[-1].content.body.splitlines()
    assert listing[0] == "Reset backups of gmessages (1):"
    assert listing[1].startswith(f"- {PLAN['id']} — crypto, done, by {ADMIN}")
    await say(bot, f"!bridge restore gmessages {PLAN['id']}")
    event_id, code, plan = plan_event(bot)
    assert plan.body.startswith(f"⚠️ Restore gmessages from {PLAN['id']}?")
    assert "Lost: the crypto device and keys" in plan.body
    await react(bot, event_id, "✅")
    (restore,) = [r for r in helper.requests if r.op == "restore"]
    assert (restore.backup, restore.digest, restore.requested_by) == (
        PLAN["id"], "fedcba9876543210", ADMIN,
    )  # fmt: skip
    assert notices(bot)[-1].content.body.startswith(
        f"✅ gmessages: restored from {PLAN['id']}. Check it with !bridge check gmessages."
    )


@pytest.mark.parametrize(
    "text,answer",
    [
        ("!bridge reset", "Usage: !bridge reset <name>"),
        ("!bridge reset gmessages everything", "Usage: !bridge reset <name>"),
        ("!bridge reset ../etc", "'../etc' is not a bridge name"),
        ("!bridge restore gmessages latest", "'latest' is not a backup id"),
        ("!bridge restore gmessages", "Usage: !bridge restore <name> <id>"),
        ("!bridge confirm", "Usage: !bridge confirm <code>"),
        ("!bridge confirm abc", "Usage: !bridge confirm <code>"),
        ("!bridge backups", "Usage: !bridge backups <name>"),
    ],
)
async def test_bad_commands_get_one_sentence(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    text: str,
    answer: str,
) -> None:
    await say(maubot_test_bot, text)
    (reply,) = notices(maubot_test_bot)
    assert reply.content.body.startswith(answer)
    assert helper.requests == []


async def test_non_admin_cannot_plan(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
) -> None:
    for text in ("!bridge reset gmessages", "!bridge backups gmessages", "!bridge confirm abcdef"):
        await say(maubot_test_bot, text, sender=STRANGER)
    assert {n.content.body for n in notices(maubot_test_bot)} == {REFUSAL}
    assert helper.requests == []


async def test_unknown_bridge(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
) -> None:
    await say(maubot_test_bot, "!bridge reset slack")
    assert notices(maubot_test_bot)[-1].content.body == (
        "⚠️ No such bridge is deployed on this host."
    )
    await say(maubot_test_bot, "!bridge reset slack")  # released after the failure
    assert ops(helper) == ["reset_plan", "reset_plan"]


# --- where things go, what is said, what is remembered ------------------------------------------


async def test_a_confirmed_reset_posts_only_to_its_room_and_remembers_its_state(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every message, reaction, edit and redaction of a reset lands in the room it was asked
    in; the plan is stored as waiting, then running, then forgotten; each progress report
    edits the first line (never an edit of an edit); the confirmation is logged."""
    monkeypatch.setattr(_ProgressNotice, "EDIT_EVERY", 0.0)  # every report, not every 5 s
    bot = maubot_test_bot
    helper.progress = [
        {"step": "stop", "doing": "stopping the bridge", "index": 1, "steps": 5},
        {"step": "backup", "doing": "backing up", "index": 2, "steps": 5},
        {"step": "verify", "doing": "verifying the backup", "index": 3, "steps": 5},
        {"step": "start", "doing": "starting the bridge", "index": 5, "steps": 5},
    ]
    await say(bot, "!bridge reset gmessages")
    event_id, _, _ = plan_event(bot)
    (row,) = await Store(plugin.database).open_plans()
    assert (row.state, row.kind, row.bridge, row.room_id, row.event_id) == (
        "waiting", "reset", "gmessages", ROOM, event_id,
    )  # fmt: skip
    before = len(bot.responded)
    with caplog.at_level(logging.INFO):
        await react(bot, event_id, "✅")
        await plugin.commands.resets.idle()
    assert f"reset of gmessages ({PLAN['id']}) confirmed by {ADMIN}" in caplog.text
    assert {r.room_id for r in bot.responded} == {ROOM}
    assert bot.redacted_in == [ROOM]  # the ⏳ on the plan, removed when done
    (marker,) = [
        bot.ids[i]
        for i, r in enumerate(bot.responded)
        if r.event_type == EventType.REACTION and r.content.relates_to.key == "⏳"
    ]
    assert bot.redacted == [marker]
    lines = [r for r in bot.responded[before:] if r.event_type == EventType.ROOM_MESSAGE]
    first, *edits = [r for r in lines if "Reset of gmessages, step" in r.content.body]
    first_id = bot.ids[bot.responded.index(first)]
    assert len(edits) >= 2  # reports edit the line as they arrive, and once more at the end
    assert {e.content.relates_to.event_id for e in edits} == {first_id}
    assert edits[-1].content.serialize()["m.new_content"]["body"] == (
        "✔️ Reset of gmessages, step 5 of 5: starting the bridge (finished)"
    )
    assert await Store(plugin.database).open_plans() == []


async def test_the_mode_run_is_the_mode_the_plan_showed(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    """Asked for `full`, shown a crypto plan (the helper decides): the confirmation runs the
    crypto reset that was shown."""
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages full")
    _, code, _ = plan_event(bot)
    await say(bot, f"!bridge confirm {code}")
    (reset,) = [r for r in helper.requests if r.op == "reset"]
    assert reset.mode == PLAN["mode"] == "crypto"


async def test_busy_while_a_plan_is_prepared_and_while_it_runs(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    bot = maubot_test_bot
    helper.delay = 0.6
    first = asyncio.ensure_future(say(bot, "!bridge reset gmessages"))
    await asyncio.sleep(0.2)
    await say(bot, "!bridge reset gmessages", sender=OTHER_ADMIN)
    assert notices(bot)[-1].content.body == (
        "gmessages is busy: a reset plan is being prepared. "
        "One reset, restore or apply at a time per bridge."
    )
    await first
    _, code, _ = plan_event(bot)
    running = asyncio.ensure_future(say(bot, f"!bridge confirm {code}"))
    await asyncio.sleep(0.2)
    await say(bot, "!bridge reset gmessages", sender=OTHER_ADMIN)
    assert notices(bot)[-1].content.body == (
        "gmessages is busy: a reset is running. One reset, restore or apply at a time per bridge."
    )
    await running
    assert ops(helper).count("reset_plan") == 1


async def test_a_plan_the_plugin_cannot_read_or_post_frees_the_bridge(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = maubot_test_bot
    monkeypatch.setitem(RESET_ANSWERS, "reset_plan", {k: v for k, v in PLAN.items() if k != "id"})
    await say(bot, "!bridge reset gmessages")
    assert notices(bot)[-1].content.body == f"⚠️ {UNEXPECTED}"
    monkeypatch.setitem(RESET_ANSWERS, "reset_plan", PLAN)
    bot.refuse_sends = 1  # the plan itself is lost on the way to the room
    await say(bot, "!bridge reset gmessages")
    assert notices(bot)[-1].content.body == f"⚠️ {UNEXPECTED}"
    await say(bot, "!bridge reset gmessages")  # neither left the bridge busy
    assert plan_event(bot)[2].body.startswith("⚠️ Reset gmessages (crypto)?")
    assert ops(helper) == ["reset_plan"] * 3


async def test_cancel_of_no_plan_says_so(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    await say(maubot_test_bot, "!bridge cancel abc123")
    assert notices(maubot_test_bot)[-1].content.body == (
        "No plan with code abc123 is waiting for you in this room."
    )


async def test_backups_say_how_to_restore_and_pass_a_refusal_on(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge backups gmessages")
    assert notices(bot)[-1].content.body.splitlines()[-1] == (
        "Put one back with !bridge restore gmessages <id>."
    )
    helper.error = protocol.ProtocolError(
        protocol.E_UNKNOWN_BRIDGE, "No such bridge is deployed on this host."
    )
    await say(bot, "!bridge backups gmessages")
    assert notices(bot)[-1].content.body == "⚠️ No such bridge is deployed on this host."


@pytest.mark.parametrize("command", ["!bridge reset gmessages", "!bridge backups gmessages"])
async def test_a_slow_helper_is_given_up_after_the_check_timeout(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper, command: str
) -> None:
    plugin.settings = dataclasses.replace(plugin.settings, check_timeout=0.2)
    helper.delay = 1.0
    await say(maubot_test_bot, command)
    assert notices(maubot_test_bot)[-1].content.body == (
        f"⚠️ The bridgedoctor helper on {helper.path} did not answer within 0.2 seconds: "
        "check `journalctl -u bridgedoctor-helper.service` on the host."
    )


async def test_a_reset_outlasting_the_reset_timeout_says_the_helper_goes_on(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    _, code, _ = plan_event(bot)
    plugin.settings = dataclasses.replace(plugin.settings, reset_timeout=0.2)
    helper.delay = 1.0
    await say(bot, f"!bridge confirm {code}")
    assert notices(bot)[-1].content.body == (
        f"⚠️ The bridgedoctor helper on {helper.path} did not answer within 0.2 seconds: "
        "check `journalctl -u bridgedoctor-helper.service` on the host. The helper keeps going: "
        "!bridge backups gmessages shows how it ended."
    )


async def test_a_restore_shows_its_progress_and_a_failed_one_says_where_it_stopped(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    bot = maubot_test_bot
    helper.progress = [
        {"step": "stop", "doing": "stopping the bridge", "index": 1, "steps": 4},
        {"step": "restore_db", "doing": "putting the rows back", "index": 2, "steps": 4},
    ]
    for ending in ("finished", "stopped"):
        await say(bot, f"!bridge restore gmessages {PLAN['id']}")
        _, code, _ = plan_event(bot)
        before = len(bot.responded)
        await say(bot, f"!bridge confirm {code}")
        lines = [r for r in bot.responded[before:] if r.event_type == EventType.ROOM_MESSAGE]
        assert lines[0].content.body == "⏳ Restore of gmessages, step 1 of 4: stopping the bridge"
        assert lines[-2].content.serialize()["m.new_content"]["body"] == (
            f"✔️ Restore of gmessages, step 2 of 4: putting the rows back ({ending})"
        )
        if ending == "finished":
            assert lines[-1].content.body.startswith(f"✅ gmessages: restored from {PLAN['id']}.")
            helper.fail_after_progress = protocol.ProtocolError(
                protocol.E_RESET, "The restore failed at putting the rows back; see the backup."
            )
        else:
            assert lines[-1].content.body == (
                "⚠️ The restore failed at putting the rows back; see the backup."
            )


async def test_an_answer_the_plugin_cannot_render_is_one_sentence_and_logged(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = maubot_test_bot
    monkeypatch.setitem(RESET_ANSWERS, "reset", {**DONE, "after": 5})  # not a list
    await say(bot, "!bridge reset gmessages")
    _, code, _ = plan_event(bot)
    with caplog.at_level(logging.INFO):
        await say(bot, f"!bridge confirm {code}")
    assert notices(bot)[-1].content.body == f"⚠️ {UNEXPECTED}"
    assert "reset of gmessages failed in the plugin" in caplog.text
    await say(bot, "!bridge reset gmessages")  # and the bridge is free again
    assert ops(helper).count("reset_plan") == 2


async def test_an_ignored_confirmation_is_logged(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await say(maubot_test_bot, "!bridge reset gmessages")
    event_id, _, _ = plan_event(maubot_test_bot)
    with caplog.at_level(logging.INFO):
        await react(maubot_test_bot, event_id, "✅", sender=OTHER_ADMIN)
    assert f"Ignored ✅ from {OTHER_ADMIN} on the reset plan" in caplog.text
    assert ops(helper) == ["reset_plan"]


async def test_a_failed_send_is_logged_and_the_reset_goes_on(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    _, code, _ = plan_event(bot)
    bot.refuse_sends = 1  # the ⏳ reaction on the plan
    with caplog.at_level(logging.INFO):
        await say(bot, f"!bridge confirm {code}")
    assert "could not send to the room: the homeserver did not take the event" in caplog.text
    assert ops(helper).count("reset") == 1
    assert notices(bot)[-1].content.body.startswith("✅ gmessages: crypto reset done.")


async def test_a_lost_database_costs_only_a_log_line(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The instance database only lets a restart answer open plans: when it fails, the plan is
    still posted, run and reported, and the log says what could not be kept."""
    bot = maubot_test_bot
    await plugin.database.stop()
    with caplog.at_level(logging.INFO):
        await say(bot, "!bridge reset gmessages")
        _, code, _ = plan_event(bot)
        await say(bot, f"!bridge confirm {code}")
    assert notices(bot)[-1].content.body.startswith("✅ gmessages: crypto reset done.")
    assert "could not remember the plan: " in caplog.text
    assert "could not forget the plan: " in caplog.text


async def test_a_confirmation_while_the_plan_is_being_stored_runs_it_once(
    plugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    maubot_plugin_db: Any,
    tmp_path: Path,
) -> None:
    """The code is in the room before the plan's row is written (and its expiry armed): a quick
    admin's confirmation in that moment runs the reset once, and the bridge is free after."""
    bot = maubot_test_bot
    other = sqlite3.connect(tmp_path / "maubot-tests.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # the instance database is slow to write, for a moment
    asking = asyncio.ensure_future(say(bot, "!bridge reset gmessages"))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if any(n.content.body.startswith("⚠️ Reset") for n in notices(bot)):
            break
    _, code, _ = plan_event(bot)
    confirming = asyncio.ensure_future(say(bot, f"!bridge confirm {code}"))
    await asyncio.sleep(0.2)
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(asyncio.gather(asking, confirming), 10)
    await plugin.commands.resets.idle()
    assert ops(helper).count("reset") == 1
    assert any(n.content.body.startswith("✅ gmessages: crypto reset done.") for n in notices(bot))
    await say(bot, "!bridge reset gmessages")  # free again
    assert ops(helper).count("reset_plan") == 2


async def test_the_last_progress_edit_waits_for_a_slow_first_line(
    plugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    """A reset that ends while its first progress line is still on its way to a slow
    homeserver: the line ends as an edit of that first line, not as a second line."""
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    _, code, _ = plan_event(bot)
    helper.progress = [{"step": "stop", "doing": "stopping the bridge", "index": 1, "steps": 5}]
    bot.send_delay = 0.3
    before = len(bot.responded)
    await say(bot, f"!bridge confirm {code}")
    lines = [
        r
        for r in bot.responded[before:]
        if r.event_type == EventType.ROOM_MESSAGE and "Reset of gmessages, step" in r.content.body
    ]
    first, last = lines
    assert first.content.relates_to.rel_type is None  # a reply to the plan, not an edit
    assert last.content.relates_to.rel_type.value == "m.replace"
    assert last.content.relates_to.event_id == bot.ids[bot.responded.index(first)]
    assert last.content.serialize()["m.new_content"]["body"] == (
        "✔️ Reset of gmessages, step 1 of 5: stopping the bridge (finished)"
    )
