"""The watch and what survives a restart, under maubot's test harness: the instance database is a
real SQLite file migrated by the plugin's UpgradeTable, the helper is the fake of
tests/test_plugin.py speaking the real protocol over a Unix socket."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from maubot import testing as mtest
from maubot.standalone.loader import FileSystemLoader
from mautrix.types import EventType, MessageType
from mautrix.util.async_db import Database
from mautrix.util.logging import TraceLogger

from bridgedoctor import protocol
from bridgedoctor_maubot import BridgeDoctorPlugin
from bridgedoctor_maubot.config import Settings
from bridgedoctor_maubot.migrations import upgrade_table
from bridgedoctor_maubot.store import HELPER, Store
from bridgedoctor_maubot.watch import diff
from tests.test_plugin import (
    ADMIN,
    GMESSAGES,
    REPO,
    ROOM,
    TOKEN,
    WHATSAPP,
    FakeHelper,
    helper,
    maubot_plugin_class,
    maubot_plugin_config_class,
    maubot_plugin_path,
    maubot_test_bot,
    maubot_upgrade_table,
    plugin,
    say,
    sock_dir,
)
from tests.test_plugin_reset import plan_event

OTHER_ROOM = "!elsewhere:example.com"


@pytest.fixture
def maubot_plugin_config_overrides(sock_dir) -> dict[str, Any]:
    # The loop itself stays off here (tests drive rounds one at a time), except where a test
    # turns it on.
    return {
        "socket_path": str(sock_dir / "helper.sock"),
        "token": TOKEN,
        "admins": [ADMIN],
        "allowed_rooms": [ROOM],
        "timeouts": {"check": 2, "working_after": 5, "confirm": 60, "reset": 5},
        "watch": {"enabled": False, "interval": 1, "room": ROOM},
    }


def broken(report: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(report)


def healthy(name: str) -> dict[str, Any]:
    r = copy.deepcopy(WHATSAPP)
    r["bridge"] = name
    return r


def unknown(name: str) -> dict[str, Any]:
    return {
        "bridge": name,
        "status": "unknown",
        "findings": [
            {
                "code": "db_unreachable",
                "severity": "unknown",
                "summary": f"Could not read the {name} database: connection refused.",
                "fix": None,
            }
        ],
        "facts": {},
    }


def posts(bot: mtest.TestBot) -> list[Any]:
    """Messages the watch posted: notices that reply to nothing."""
    return [
        r.content
        for r in bot.responded
        if r.event_type == EventType.ROOM_MESSAGE and not r.content.relates_to
    ]


async def look(p: BridgeDoctorPlugin) -> bool:
    settings = dataclasses.replace(p.settings, watch=True)
    return await p.watch.round(settings, ROOM)


Restart = Callable[[BridgeDoctorPlugin], Any]


@pytest.fixture
async def restart(
    maubot_test_bot: mtest.TestBot,
    maubot_plugin_db: Database,
    maubot_plugin_config,
    maubot_plugin_meta,
) -> AsyncIterator[Restart]:
    """Stop a plugin and start a new one on the same instance database, as a maubot restart."""
    started: list[BridgeDoctorPlugin] = []
    http = aiohttp.ClientSession()

    async def again(old: BridgeDoctorPlugin) -> BridgeDoctorPlugin:
        await old.internal_stop()
        new = BridgeDoctorPlugin(
            client=maubot_test_bot.client,
            loop=asyncio.get_running_loop(),
            http=http,
            instance_id="tests",
            log=TraceLogger("test"),
            config=maubot_plugin_config,
            database=maubot_plugin_db,
            webapp=None,
            webapp_url=None,
            loader=FileSystemLoader(REPO, maubot_plugin_meta),
        )
        await new.internal_start()
        started.append(new)
        return new

    yield again
    for p in started:
        await p.internal_stop()
    await http.close()


async def test_schema_is_versioned(maubot_plugin_db: Database) -> None:
    assert await maubot_plugin_db.fetchval("SELECT version FROM version") == len(
        upgrade_table.upgrades
    )
    for table in ("watch_status", "open_plan"):
        assert await maubot_plugin_db.table_exists(table)


def test_diff_counts_a_new_bridge_as_having_been_ok() -> None:
    d = diff(
        {"gmessages": "ok", "gone": "broken", HELPER: "unknown"},
        [broken(GMESSAGES), healthy("whatsapp"), unknown("slack")],
    )
    assert [(r["bridge"], before) for r, before in d.changed] == [
        ("gmessages", "ok"),
        ("slack", "ok"),
    ]
    assert d.gone == ["gone"]  # the helper's own row is never "gone"


async def test_one_alert_then_silence_then_healthy_again(
    plugin: BridgeDoctorPlugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    bot = maubot_test_bot
    helper.fleet = [healthy("gmessages"), healthy("whatsapp")]
    assert not await look(plugin)
    assert posts(bot) == []  # all ok from the start: nothing to say

    helper.fleet = [broken(GMESSAGES), healthy("whatsapp")]
    assert await look(plugin)
    (alert,) = posts(bot)
    assert alert.msgtype == MessageType.NOTICE
    assert alert.body.splitlines() == [
        '🟥 gmessages: broken — Pickle key mismatch: the config has "mautrix.bridge.e2ee", but the '
        'crypto account was encrypted with "go.mau.fi/mautrix-gmessages". (was ok)',
        "Details: !bridge check gmessages",
    ]
    assert "<code>!bridge check gmessages</code>" in alert.formatted_body

    for _ in range(3):  # still broken: not a word
        assert not await look(plugin)
    assert len(posts(bot)) == 1

    helper.fleet = [healthy("gmessages"), healthy("whatsapp")]
    assert await look(plugin)
    back = posts(bot)[-1]
    assert back.body.splitlines()[0].startswith("🟩 gmessages: healthy again — ")
    assert back.body.splitlines()[0].endswith("(was broken)")
    assert not await look(plugin)
    assert len(posts(bot)) == 2
    assert [r.op for r in helper.requests] == ["check_all"] * 7


async def test_several_changes_are_one_summary(
    plugin: BridgeDoctorPlugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    helper.fleet = [broken(GMESSAGES), healthy("whatsapp"), unknown("slack")]
    assert await look(plugin)
    (summary,) = posts(maubot_test_bot)
    lines = summary.body.splitlines()
    assert lines[0] == "🟥 2 bridges changed: 1 broken, 1 could not check."
    assert lines[1].startswith("🟥 gmessages: broken — ")
    assert lines[2] == (
        "⬜ slack: could not check — Could not read the slack database: connection refused. "
        "(was ok)"
    )
    assert lines[3] == "Details: !bridge check gmessages | !bridge check slack"
    assert summary.formatted_body.count("<li>") == 2


async def test_restart_repeats_nothing_and_misses_nothing(
    plugin: BridgeDoctorPlugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    restart: Restart,
) -> None:
    helper.fleet = [broken(GMESSAGES), healthy("whatsapp")]
    assert await look(plugin)
    second = await restart(plugin)
    assert not await look(second)  # the alert is in the database: not repeated
    assert len(posts(maubot_test_bot)) == 1
    third = await restart(second)
    helper.fleet = [healthy("gmessages"), healthy("whatsapp")]  # fixed while "down"
    assert await look(third)
    assert posts(maubot_test_bot)[-1].body.startswith("🟩 gmessages: healthy again")
    assert await Store(third.database).statuses() == {"gmessages": "ok"}


async def test_helper_down_is_said_once_and_its_return_too(
    plugin: BridgeDoctorPlugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    bot = maubot_test_bot
    await helper.stop()
    assert await look(plugin)
    assert not await look(plugin)
    (lost,) = posts(bot)
    assert lost.body.startswith(
        "⬜ The watch could not check the bridges: The bridgedoctor helper"
    )
    assert lost.body.endswith("I will say when it works again.")
    await helper.start()
    helper.fleet = [healthy("gmessages")]
    assert await look(plugin)
    assert posts(bot)[-1].body == "The bridgedoctor helper answers again."
    helper.fleet = [broken(GMESSAGES)]
    assert await look(plugin)
    assert posts(bot)[-1].body.startswith("🟥 gmessages: broken")


async def test_a_busy_helper_is_not_news(
    plugin: BridgeDoctorPlugin, maubot_test_bot: mtest.TestBot, helper: FakeHelper
) -> None:
    helper.error = protocol.ProtocolError(protocol.E_BUSY, "busy")
    assert not await look(plugin)
    assert posts(maubot_test_bot) == []
    assert await Store(plugin.database).statuses() == {}


async def test_a_lost_message_is_sent_again(
    plugin: BridgeDoctorPlugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    helper.fleet = [broken(GMESSAGES)]
    real = maubot_test_bot.client.send_message_event

    async def down(*a: Any, **kw: Any) -> None:
        raise ConnectionError("homeserver unreachable")

    monkeypatch.setattr(maubot_test_bot.client, "send_message_event", down)
    assert not await look(plugin)
    assert await Store(plugin.database).statuses() == {}  # not recorded as said
    monkeypatch.setattr(maubot_test_bot.client, "send_message_event", real)
    assert await look(plugin)
    assert len(posts(maubot_test_bot)) == 1


async def test_the_loop_posts_on_its_own_and_only_to_an_allowed_room(
    plugin: BridgeDoctorPlugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    maubot_plugin_config_dict: dict[str, Any],
) -> None:
    helper.fleet = [broken(GMESSAGES)]
    maubot_plugin_config_dict["watch"] = {"enabled": True, "interval": 1, "room": OTHER_ROOM}
    plugin.on_external_config_update()
    assert any("watch.room is not one of allowed_rooms" in p for p in plugin.settings.problems())
    await asyncio.sleep(1.5)
    assert posts(maubot_test_bot) == [] and helper.requests == []

    maubot_plugin_config_dict["watch"] = {"enabled": True, "interval": 1, "room": ROOM}
    plugin.on_external_config_update()  # wakes the loop: no need to wait for the interval
    for _ in range(50):
        if posts(maubot_test_bot):
            break
        await asyncio.sleep(0.1)
    (alert,) = posts(maubot_test_bot)
    assert maubot_test_bot.responded[-1].room_id == ROOM
    assert alert.body.startswith("🟥 gmessages: broken")
    await asyncio.sleep(2.2)  # two more rounds: asked again, nothing more said
    assert len(posts(maubot_test_bot)) == 1
    assert len(helper.requests) >= 3


def test_watch_settings_are_validated() -> None:
    raw: dict[str, Any] = {
        "allowed_rooms": [ROOM],
        "watch": {"enabled": "yes", "interval": "soon", "room": f" {ROOM} "},
    }

    def get(key: str) -> Any:
        d: Any = raw
        for part in key.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        return d

    s = Settings.load(get)
    assert (s.watch, s.watch_interval, s.watch_room) == (False, 300.0, ROOM)
    assert s.watch_target() is None  # only `true` turns it on
    raw["watch"] = {"enabled": True, "interval": 0.01, "room": ROOM}
    s = Settings.load(get)
    assert s.watch_target() == ROOM and s.watch_interval == 1.0


async def test_plans_left_open_by_a_restart_are_answered(
    plugin: BridgeDoctorPlugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    restart: Restart,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    event_id, code, _ = plan_event(bot)
    new = await restart(plugin)
    await asyncio.wait_for(new._answering, 5)
    answer = bot.responded[-1].content
    assert answer.body == (
        "The reset plan of gmessages was cancelled because the plugin restarted before it was "
        "confirmed; nothing was changed."
    )
    assert answer.relates_to.in_reply_to.event_id == event_id
    assert await Store(new.database).open_plans() == []
    await say(bot, f"!bridge confirm {code}")  # the old code is dead
    assert "No plan with code" in bot.responded[-1].content.body
    assert [r.op for r in helper.requests] == ["reset_plan"]
    again = await restart(new)  # answered once only
    await asyncio.wait_for(again._answering, 5)
    assert bot.responded[-1].content.body.startswith("No plan with code")


async def test_a_plan_running_at_restart_is_left_to_the_helper(
    plugin: BridgeDoctorPlugin,
    maubot_test_bot: mtest.TestBot,
    helper: FakeHelper,
    restart: Restart,
) -> None:
    bot = maubot_test_bot
    await say(bot, "!bridge reset gmessages")
    event_id, code, _ = plan_event(bot)
    helper.delay = 3  # the reset is still running when the plugin goes away
    running = asyncio.ensure_future(say(bot, f"!bridge confirm {code}"))
    await asyncio.sleep(0.5)
    (row,) = await Store(plugin.database).open_plans()
    assert row.state == "running"
    new = await restart(plugin)  # the old handler goes on, as the helper would
    await asyncio.wait_for(new._answering, 5)
    answers = [r.content.body for r in bot.responded if r.event_type == EventType.ROOM_MESSAGE]
    assert answers[-1] == (
        "The reset of gmessages was running when the plugin restarted; the helper finishes it "
        "on its own: !bridge backups gmessages shows how it ended."
    )
    await asyncio.wait_for(running, 10)
