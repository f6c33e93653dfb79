"""The maubot plugin under maubot's own test harness, against a fake helper on a Unix socket.

The fake helper speaks bridgedoctor.protocol for real (asyncio.start_unix_server); the Matrix
side is maubot.testing's TestBot, patched as knowledge/maubot.md §4.2 advises (no plugin DB,
fake event IDs, plugin stopped after each test).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import logging
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from maubot import Plugin
from maubot import testing as mtest
from maubot.matrix import MaubotMessageEvent
from mautrix.types import EventType, MessageEvent, MessageType
from mautrix.util.async_db import UpgradeTable
from mautrix.util.config import RecursiveDict
from ruamel.yaml import YAML

from bridgedoctor import protocol
from bridgedoctor_maubot import BridgeDoctorPlugin
from bridgedoctor_maubot.config import DEFAULT_SOCKET, KEYS, Config, Settings
from bridgedoctor_maubot.helper_client import HelperClient, HelperError
from bridgedoctor_maubot.migrations import upgrade_table
from bridgedoctor_maubot.replies import REFUSAL, UNEXPECTED

REPO = Path(__file__).resolve().parents[1]
ADMIN = "@admin:example.com"
STRANGER = "@stranger:example.com"
ROOM = "!ops:example.com"
OTHER_ROOM = "!lobby:example.com"
TOKEN = "plugin-test-token-5b0c1f2e9a7d4c3b"
SNIPPET = (
    'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "go.mau.fi/mautrix-gmessages"'
)

GMESSAGES: dict[str, Any] = {
    "bridge": "gmessages",
    "status": "broken",
    "findings": [
        {
            "code": "pickle_key_mismatch",
            "severity": "error",
            "summary": 'Pickle key mismatch: the config has "mautrix.bridge.e2ee", but the crypto '
            'account was encrypted with "go.mau.fi/mautrix-gmessages". The bridge fails.',
            "evidence": ['"mautrix.bridge.e2ee" (configured): MAC mismatch'],
            "fix": {
                "vars_yml": SNIPPET,
                "steps": [
                    "Add the snippet to inventory/host_vars/<your matrix domain>/vars.yml.",
                    "Re-render the config and restart the bridge: "
                    "just install-service mautrix-gmessages",
                ],
                "variants": [],
            },
        }
    ],
    "facts": {"service": "matrix-mautrix-gmessages"},
}
WHATSAPP: dict[str, Any] = {
    "bridge": "whatsapp",
    "status": "ok",
    "findings": [
        {
            "code": "pickle_key_ok",
            "severity": "info",
            "summary": "The configured pickle key opens the stored crypto account (MAC verified).",
            "fix": None,
        }
    ],
    "facts": {},
}

PLAN: dict[str, Any] = {
    "bridge": "gmessages",
    "mode": "crypto",
    "unit": "matrix-mautrix-gmessages.service",
    "was_active": True,
    "database": "postgresql://matrix-postgres:5432/matrix_mautrix_gmessages",
    "data_dir": "/matrix/mautrix-gmessages/data",
    "backup_dir": "/var/lib/bridgedoctor/backups/gmessages/20261126T070000Z-crypto",
    "id": "20261126T070000Z-crypto",
    "backed_up": ["table crypto_account (all rows)", "kv_store row recovery_key"],
    "removed": ["all rows of crypto_account", "kv_store row recovery_key"],
    "kept": "crypto_device, and every bridge table",
    "after": ["the bridge creates a new device and uploads new keys on start"],
    "digest": "0123456789abcdef",
}
RESTORE_PLAN: dict[str, Any] = {
    "bridge": "gmessages",
    "backup": "20261126T070000Z-crypto",
    "mode": "crypto",
    "unit": "matrix-mautrix-gmessages.service",
    "was_active": True,
    "location": PLAN["backup_dir"],
    "backed_up_at": "2026-11-26T07:00:00.000000Z",
    "put_back": "the crypto rows",
    "lost": "the crypto device and keys the bridge made since the reset",
    "digest": "fedcba9876543210",
}
DONE: dict[str, Any] = {
    "id": PLAN["id"],
    "bridge": "gmessages",
    "kind": "reset",
    "mode": "crypto",
    "state": "done",
    "location": PLAN["backup_dir"],
    "requested_by": ADMIN,
    "source": "",
    "error": "",
    "steps": ["stop", "backup", "verify", "apply", "start"],
    "after": PLAN["after"],
}
LOGS: dict[str, Any] = {
    "bridge": "gmessages",
    "status": "errors",
    "unit": "matrix-mautrix-gmessages.service",
    "state": "activating (auto-restart), 3 automatic restarts, last exit status 1",
    "run": "current run",
    "lines": [
        '2026-08-22T10:00:00Z FTL Failed to start bridge error="failed to start Matrix '
        'connector: the supplied account key is invalid"'
    ],
    "truncated": False,
    "problem": None,
}
APPLY_PLAN: dict[str, Any] = {
    "bridge": "gmessages",
    "unit": "matrix-mautrix-gmessages.service",
    "was_active": True,
    "config": "/matrix/mautrix-gmessages/config/config.yaml",
    "config_sha256": "ab" * 32,
    "key_from": '"mautrix.bridge.e2ee"',
    "key_to": '"go.mau.fi/mautrix-gmessages"',
    "key_to_id": "sha256:0123456789ab",
    "origin": "historical key of gmessages",
    "backup_dir": "/var/lib/bridgedoctor/backups/gmessages/20261126T070000Z-apply",
    "id": "20261126T070000Z-apply",
    "vars_yml": SNIPPET,
    "pin_steps": ["Add the snippet to inventory/host_vars/<your matrix domain>/vars.yml."],
    "digest": "00112233aabbccdd",
}
APPLIED: dict[str, Any] = {
    "id": APPLY_PLAN["id"],
    "bridge": "gmessages",
    "kind": "apply",
    "mode": "apply",
    "state": "done",
    "location": APPLY_PLAN["backup_dir"],
    "requested_by": ADMIN,
    "steps": ["backup", "verify", "write", "restart"],
    "unit": APPLY_PLAN["unit"],
    "config": APPLY_PLAN["config"],
    "key_to": APPLY_PLAN["key_to"],
    "vars_yml": SNIPPET,
    "pin_steps": APPLY_PLAN["pin_steps"],
}
UP: dict[str, Any] = {"bridge": "gmessages", "state": "up", "seconds": 30, "fatal": "",
                      "restarts": 0, "finding": None}  # fmt: skip
RESET_ANSWERS: dict[str, Any] = {
    "logs": LOGS,
    "apply_plan": APPLY_PLAN,
    "apply": APPLIED,
    "verify": UP,
    "reset_plan": PLAN,
    "reset": DONE,
    "backups": {"bridge": "gmessages", "backups": [DONE]},
    "restore_plan": RESTORE_PLAN,
    "restore": {**DONE, "kind": "restore", "source": PLAN["id"]},
}


@dataclass
class FakeHelper:
    """A helper answering from canned results; records every request it decoded."""

    path: str
    token: str = TOKEN
    delay: float = 0.0
    error: protocol.ProtocolError | None = None
    fleet: list[dict[str, Any]] | None = None  # what check_all answers, when set
    requests: list[protocol.Request] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)  # sent before a reset's answer
    fail_after_progress: protocol.ProtocolError | None = None  # instead of the answer

    def result(self, req: protocol.Request) -> dict[str, Any]:
        if req.op in RESET_ANSWERS:
            if req.bridge != "gmessages":
                raise protocol.ProtocolError(
                    protocol.E_UNKNOWN_BRIDGE, "No such bridge is deployed on this host."
                )
            answer = RESET_ANSWERS[req.op]
            if isinstance(answer, protocol.ProtocolError):  # a test made the helper refuse
                raise answer
            return answer
        if req.op == "list":
            return {"bridges": ["gmessages", "whatsapp"]}
        if req.op == "check_all" and self.fleet is not None:
            return {"bridges": self.fleet}
        if req.op == "check_all":
            return {"bridges": [GMESSAGES, WHATSAPP], "pin": {"vars_yml": SNIPPET, "steps": []}}
        reports = {"gmessages": GMESSAGES, "whatsapp": WHATSAPP}
        if req.bridge not in reports:
            raise protocol.ProtocolError(
                protocol.E_UNKNOWN_BRIDGE, "No such bridge is deployed on this host."
            )
        return reports[req.bridge]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = protocol.decode_request(await reader.readline())
            self.requests.append(req)
            await asyncio.sleep(self.delay)
            if self.error:
                raise self.error
            if req.token != self.token:
                raise protocol.ProtocolError(protocol.E_UNAUTHORIZED, "The token is wrong.")
            for state in self.progress if req.progress else ():
                writer.write(protocol.encode_progress(state))
                await writer.drain()
                await asyncio.sleep(0.05)  # reports arrive over time, as a real reset's do
            if req.progress and self.fail_after_progress:
                raise self.fail_after_progress
            writer.write(protocol.encode_response(self.result(req)))
        except protocol.ProtocolError as err:
            writer.write(protocol.encode_response(error=err))
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self.handle, path=self.path)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte limit of a Unix socket path.
    path = Path(tempfile.mkdtemp(prefix="bdp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def helper(sock_dir: Path) -> AsyncIterator[FakeHelper]:
    fake = FakeHelper(str(sock_dir / "helper.sock"))
    await fake.start()
    yield fake
    await fake.stop()


# --- maubot.testing fixture overrides -------------------------------------------------------


@pytest.fixture
def maubot_plugin_path() -> Path:
    return REPO


@pytest.fixture
def maubot_plugin_class() -> type[Plugin]:
    return BridgeDoctorPlugin


@pytest.fixture
def maubot_plugin_config_class() -> type[Config]:
    return Config


@pytest.fixture
def maubot_upgrade_table() -> UpgradeTable:
    return upgrade_table  # the stock maubot_plugin_db applies it to a fresh SQLite file


@pytest.fixture
def maubot_plugin_config_overrides(sock_dir: Path) -> dict[str, Any]:
    return {
        "socket_path": str(sock_dir / "helper.sock"),
        "token": TOKEN,
        "admins": [ADMIN],
        "allowed_rooms": [ROOM],
        "timeouts": {"check": 2, "working_after": 5},
    }


@pytest.fixture
async def maubot_test_bot() -> AsyncIterator[mtest.TestBot]:
    bot = mtest.TestBot()
    ids = itertools.count(1)
    record = bot.client.send_message_event
    bot.redacted = []  # type: ignore[attr-defined]
    bot.ids = []  # type: ignore[attr-defined]  # event ids, in step with bot.responded
    bot.redacted_in = []  # type: ignore[attr-defined]  # the room of each redaction
    bot.refuse_sends = 0  # type: ignore[attr-defined]  # a test makes the next N sends fail
    bot.send_delay = 0.0  # type: ignore[attr-defined]  # a slow homeserver

    async def send(room_id: str, event_type: EventType, content: Any, **kw: Any) -> str:
        if bot.refuse_sends:  # type: ignore[attr-defined]
            bot.refuse_sends -= 1  # type: ignore[attr-defined]
            raise ConnectionError("the homeserver did not take the event")
        await asyncio.sleep(bot.send_delay)  # type: ignore[attr-defined]
        await record(room_id, event_type, content, **kw)
        bot.ids.append(f"$ev{next(ids)}")  # type: ignore[attr-defined]
        return bot.ids[-1]  # type: ignore[attr-defined]  # the stock recorder returns None

    async def redact(room_id: str, event_id: str, **kw: Any) -> str:
        bot.redacted.append(event_id)  # type: ignore[attr-defined]
        bot.redacted_in.append(room_id)  # type: ignore[attr-defined]
        return f"$ev{next(ids)}"

    bot.client.send_message_event = send  # type: ignore[method-assign]
    bot.client.redact = redact  # type: ignore[method-assign]
    yield bot
    await bot.client.api.session.close()


@pytest.fixture
async def plugin(maubot_plugin: BridgeDoctorPlugin) -> AsyncIterator[BridgeDoctorPlugin]:
    yield maubot_plugin
    await maubot_plugin.internal_stop()  # the stock fixture never stops the plugin


# --- helpers --------------------------------------------------------------------------------


async def say(bot: mtest.TestBot, text: str, sender: str = ADMIN, room: str = ROOM) -> None:
    await asyncio.wait_for(bot.send(text, room_id=room, sender=sender), 10)


def notices(bot: mtest.TestBot) -> list[Any]:
    return [r for r in bot.responded if r.event_type == EventType.ROOM_MESSAGE]


def only_notice(bot: mtest.TestBot) -> Any:
    (reply,) = notices(bot)
    content = reply.content
    assert content.msgtype == MessageType.NOTICE
    assert content.relates_to.in_reply_to.event_id == "test"  # make_message's event id
    assert "Traceback" not in content.body
    return content


# --- tests ----------------------------------------------------------------------------------


async def test_admin_gets_a_verdict(
    plugin: Plugin, maubot_test_bot: mtest.TestBot, helper
) -> None:
    await say(maubot_test_bot, "!bridge check gmessages")
    content = only_notice(maubot_test_bot)
    assert content.body.startswith("🟥 gmessages: broken — Pickle key mismatch")
    assert f'<pre><code class="language-yaml">{SNIPPET}\n</code></pre>' in content.formatted_body
    assert "<code>just install-service mautrix-gmessages</code>" in content.formatted_body
    assert [(r.op, r.bridge, r.token) for r in helper.requests] == [("check", "gmessages", TOKEN)]


async def test_logs_in_a_code_block(plugin, maubot_test_bot: mtest.TestBot, helper) -> None:
    await say(maubot_test_bot, "!bridge logs GMessages")
    content = only_notice(maubot_test_bot)
    assert content.body.startswith("🟥 gmessages: last fatal and error lines of its current run")
    assert (
        '<pre><code class="language-text">2026-08-22T10:00:00Z FTL Failed'
        in content.formatted_body
    )
    assert [(r.op, r.bridge) for r in helper.requests] == [("logs", "gmessages")]
    await say(maubot_test_bot, "!bridge logs")
    assert notices(maubot_test_bot)[-1].content.body == "Usage: !bridge logs <name>."


async def test_healthy_list_all_and_help(plugin, maubot_test_bot: mtest.TestBot, helper) -> None:
    for text in ("!bridge check WhatsApp", "!bridge list", "!BRIDGE CHECK ALL", "!bridge"):
        await say(maubot_test_bot, text)
    ok, listing, fleet, help_ = (n.content for n in notices(maubot_test_bot))
    assert ok.body.startswith("🟩 whatsapp: ok")
    assert listing.body.splitlines()[:3] == ["Deployed bridges (2):", "- gmessages", "- whatsapp"]
    assert fleet.body.splitlines()[1:3] == [
        '🟥 gmessages: broken — Pickle key mismatch: the config has "mautrix.bridge.e2ee", '
        'but the crypto account was encrypted with "go.mau.fi/mautrix-gmessages".',
        "🟩 whatsapp: ok — The configured pickle key opens the stored crypto account (MAC "
        "verified).",
    ]
    assert "<table" not in fleet.formatted_body
    assert "!bridge check all" in help_.body
    assert [r.op for r in helper.requests] == ["check", "list", "check_all"]


@pytest.mark.parametrize(
    "sender,room",
    [(STRANGER, ROOM), (ADMIN, OTHER_ROOM), (STRANGER, OTHER_ROOM)],
    ids=["non-admin", "wrong-room", "both"],
)
async def test_refusal_is_uniform(
    plugin, maubot_test_bot: mtest.TestBot, helper, sender: str, room: str
) -> None:
    probes = [
        "!bridge check gmessages",
        "!bridge",
        "!bridge nope",
        "!bridge check",
        "!bridge help",
    ]
    for text in probes:
        await say(maubot_test_bot, text, sender=sender, room=room)
    bodies = {n.content.body for n in notices(maubot_test_bot)}
    assert bodies == {REFUSAL}  # same words whatever was asked: no command probing
    assert len(notices(maubot_test_bot)) == len(probes)
    assert helper.requests == []


@pytest.mark.parametrize("key", ["admins", "allowed_rooms"])
async def test_empty_lists_allow_nobody(
    maubot_plugin_config_overrides: dict[str, Any], key: str
) -> None:
    raw = {**maubot_plugin_config_overrides, key: []}
    settings = Settings.load(lambda k: _dotted(raw, k))
    assert not settings.may_use(ADMIN, ROOM)
    assert any(key in p for p in settings.problems())


def _dotted(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d


async def test_edit_does_not_rerun(plugin, maubot_test_bot: mtest.TestBot, helper) -> None:
    edit = MessageEvent.deserialize(
        {
            "type": "m.room.message",
            "room_id": ROOM,
            "event_id": "$edit",
            "sender": ADMIN,
            "origin_server_ts": 1,
            "content": {
                "msgtype": "m.text",
                "body": "* !bridge check gmessages",
                "m.new_content": {"msgtype": "m.text", "body": "!bridge check gmessages"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
            },
        }
    )
    assert edit.content.body == "!bridge check gmessages"  # what maubot's parser sees
    event = MaubotMessageEvent(edit, maubot_test_bot.client)
    await maubot_test_bot.dispatch(EventType.ROOM_MESSAGE, event)
    assert maubot_test_bot.responded == []
    assert helper.requests == []


async def test_socket_missing(plugin, maubot_test_bot: mtest.TestBot, sock_dir: Path) -> None:
    await say(maubot_test_bot, "!bridge check gmessages")
    body = only_notice(maubot_test_bot).body
    path = sock_dir / "helper.sock"
    assert body == (
        f"⚠️ The bridgedoctor helper socket {path} does not exist: is "
        "bridgedoctor-helper.service running on the host, and is the socket mounted into the "
        "maubot container?"
    )


async def test_stale_socket_not_answering(
    plugin, maubot_test_bot: mtest.TestBot, sock_dir: Path
) -> None:
    path = sock_dir / "helper.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # bound, never listening: what a crashed helper leaves behind
        await say(maubot_test_bot, "!bridge check gmessages")
    body = only_notice(maubot_test_bot).body
    assert f"The bridgedoctor helper is not answering on {path}" in body


async def test_permission_denied(monkeypatch: pytest.MonkeyPatch, sock_dir: Path) -> None:
    # Root ignores socket modes, so the refusal is simulated at the connect call.
    async def denied(*a: Any, **kw: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(asyncio, "open_unix_connection", denied)
    path = str(sock_dir / "helper.sock")
    with pytest.raises(HelperError) as err:
        await HelperClient(path, TOKEN, 1).check("gmessages")
    assert err.value.code == "permission_denied"
    assert str(err.value).startswith(f"Permission denied on the bridgedoctor helper socket {path}")
    assert "socket_group" in str(err.value)


async def test_helper_timeout(plugin, maubot_test_bot: mtest.TestBot, helper) -> None:
    helper.delay = 5  # beyond timeouts.check = 2
    await say(maubot_test_bot, "!bridge check gmessages")
    body = only_notice(maubot_test_bot).body
    assert body == (
        f"⚠️ The bridgedoctor helper on {helper.path} did not answer within 2 seconds: check "
        "`journalctl -u bridgedoctor-helper.service` on the host."
    )


async def test_deep_check_asks_for_every_row_with_its_own_timeout(
    plugin, maubot_test_bot: mtest.TestBot, helper
) -> None:
    """`!bridge check <name> deep` sends deep: true and waits timeouts.deep (960 s by default),
    not timeouts.check (2 s here): a whole-store check outlasts a plain one."""
    helper.delay = 3
    await say(maubot_test_bot, "!bridge check gmessages DEEP")
    assert only_notice(maubot_test_bot).body.startswith("🟥 gmessages: broken")
    assert [(r.op, r.bridge, r.deep) for r in helper.requests] == [("check", "gmessages", True)]
    maubot_test_bot.responded.clear()
    for text in ("!bridge check all deep", "!bridge check gmessages deeper"):
        await say(maubot_test_bot, text)
    usage = [n.content.body for n in notices(maubot_test_bot)]
    assert usage[0] == "Usage: !bridge check <name> deep: one bridge at a time (!bridge list)."
    assert usage[1] == "Usage: !bridge check <name> [deep], or !bridge check all."
    assert len(helper.requests) == 1  # neither reached the helper


async def test_unauthorized_never_shows_the_token(
    plugin, maubot_test_bot: mtest.TestBot, helper, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    helper.token = "the-helper-expects-another-token"
    await say(maubot_test_bot, "!bridge check gmessages")
    body = only_notice(maubot_test_bot).body
    assert f"The bridgedoctor helper on {helper.path} refused the plugin" in body
    assert "token_file" in body
    everything = caplog.text + repr(maubot_test_bot.responded) + repr(plugin.settings)
    assert TOKEN not in everything
    assert helper.requests[0].token == TOKEN  # it was sent, to the helper only


async def test_unknown_bridge_passes_the_helpers_message(
    plugin, maubot_test_bot: mtest.TestBot, helper
) -> None:
    await say(maubot_test_bot, "!bridge check telegram")
    body = only_notice(maubot_test_bot).body
    assert body == (
        "No such bridge is deployed on this host. !bridge list shows the deployed bridges."
    )


async def test_busy(plugin, maubot_test_bot: mtest.TestBot, helper) -> None:
    helper.error = protocol.ProtocolError(protocol.E_BUSY, "The helper is busy.")
    await say(maubot_test_bot, "!bridge check all")
    assert "busy with other checks" in only_notice(maubot_test_bot).body


async def test_bad_names_never_reach_the_helper(
    plugin, maubot_test_bot: mtest.TestBot, helper
) -> None:
    for text in ("!bridge check ../../etc", "!bridge check a b", "!bridge frobnicate"):
        await say(maubot_test_bot, text)
    bodies = [n.content.body for n in notices(maubot_test_bot)]
    assert bodies[0].startswith("'../../etc' is not a bridge name")
    assert bodies[1] == "Usage: !bridge check <name> [deep], or !bridge check all."
    assert bodies[2].startswith("Unknown command")
    assert helper.requests == []


async def test_slow_check_shows_progress_then_removes_it(
    plugin, maubot_test_bot: mtest.TestBot, helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        plugin, "settings", dataclasses.replace(plugin.settings, working_after=0.05)
    )
    helper.delay = 0.4
    await say(maubot_test_bot, "!bridge check gmessages")
    reaction, reply = maubot_test_bot.responded
    assert reaction.event_type == EventType.REACTION
    assert reaction.content.relates_to.key == "⏳"
    assert reaction.content.relates_to.event_id == "test"
    assert maubot_test_bot.redacted == ["$ev1"]  # the ⏳ reaction, removed when done
    assert reply.content.body.startswith("🟥 gmessages")


async def test_fast_check_has_no_progress(plugin, maubot_test_bot: mtest.TestBot, helper) -> None:
    await say(maubot_test_bot, "!bridge check whatsapp")
    assert [r.event_type for r in maubot_test_bot.responded] == [EventType.ROOM_MESSAGE]
    assert maubot_test_bot.redacted == []


async def test_unexpected_error_is_one_sentence(
    plugin, maubot_test_bot: mtest.TestBot, helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridgedoctor.render import matrix

    def boom(*a: Any, **kw: Any) -> None:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(matrix, "bridge_report", boom)
    await say(maubot_test_bot, "!bridge check gmessages")
    body = only_notice(maubot_test_bot).body
    assert body == f"⚠️ {UNEXPECTED}"
    assert "renderer bug" not in body


async def test_config_update_applies_without_restart(
    plugin: BridgeDoctorPlugin,
    maubot_test_bot: mtest.TestBot,
    helper,
    maubot_plugin_config_dict: dict[str, Any],
) -> None:
    maubot_plugin_config_dict["admins"] = [STRANGER]  # what the stored config now says
    plugin.on_external_config_update()
    await say(maubot_test_bot, "!bridge check gmessages")
    assert only_notice(maubot_test_bot).body == REFUSAL


def test_configuration_mistakes_are_each_named() -> None:
    wrong = Settings(token="", admins=frozenset({"@a:x"}), watch=True, watch_room="!other:x",
                     allowed_rooms=frozenset({"#alias:x", "!id:x"}))  # fmt: skip
    assert wrong.problems() == [
        "token is empty: the helper will refuse every request",
        "allowed_rooms must hold room IDs (!id:server), not aliases: #alias:x",
        "watch is on but watch.room is not one of allowed_rooms: the watch stays off",
    ]
    right = Settings(token="t", admins=frozenset({"@a:x"}), allowed_rooms=frozenset({"!id:x"}))
    assert right.problems() == []
    # Only non-empty strings are ids: a number or a blank entry is dropped, not an error.
    raw = {"admins": [" @a:x ", "", "   ", 5, None]}
    assert Settings.load(raw.get).admins == frozenset({"@a:x"})


# --- settings (config.py): every key read from its own place, every mistake a safe value ---

# A stored instance config with every key set to a value unlike base-config.yaml's.
STORED: dict[str, Any] = {
    "socket_path": "/srv/helper.sock",
    "token": "stored-token",
    "admins": ["@alice:example.org"],
    "allowed_rooms": ["!ops:example.org"],
    "timeouts": {"check": 11, "deep": 22, "working_after": 4, "confirm": 55, "reset": 666},
    "watch": {"enabled": True, "interval": 77, "room": "!ops:example.org"},
}


def _base() -> RecursiveDict:
    with (REPO / "base-config.yaml").open() as fh:
        return RecursiveDict(YAML().load(fh))


def _updated(stored: dict[str, Any]) -> Config:
    """maubot's own path: the stored config updated onto base-config.yaml (Config.do_update)."""
    saved: list[Any] = []
    config = Config(load=lambda: copy.deepcopy(stored), load_base=_base, save=saved.append)
    config.load_and_update()
    assert saved, "maubot saves the updated config"
    return config


def test_every_key_survives_the_update() -> None:
    config = _updated(STORED)
    for key in KEYS:
        assert config[key] == _dotted(STORED, key), key
    assert set(KEYS) == {k for k in _leaves(_base()._data)}, "KEYS lists base-config.yaml's keys"


def _leaves(d: Any, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def test_each_setting_comes_from_its_own_key() -> None:
    settings = Settings.load(_updated(STORED).__getitem__)
    assert settings == Settings(
        socket_path="/srv/helper.sock",
        token="stored-token",
        admins=frozenset({"@alice:example.org"}),
        allowed_rooms=frozenset({"!ops:example.org"}),
        check_timeout=11.0,
        deep_timeout=22.0,
        working_after=4.0,
        confirm_timeout=55.0,
        reset_timeout=666.0,
        watch=True,
        watch_interval=77.0,
        watch_room="!ops:example.org",
    )
    assert settings.token == "stored-token"  # compare=True, but say it: the token is read
    assert settings.watch_target() == "!ops:example.org"


def test_base_config_gives_the_defaults() -> None:
    settings = Settings.load(_updated({}).__getitem__)
    assert settings == Settings()
    assert settings.socket_path == DEFAULT_SOCKET == "/run/bridgedoctor/helper.sock"
    assert (settings.check_timeout, settings.deep_timeout, settings.working_after) == (90, 960, 3)
    assert (settings.confirm_timeout, settings.reset_timeout, settings.watch_interval) == (
        300,
        3600,
        300,
    )
    assert settings.watch is False and settings.watch_target() is None


def test_surrounding_blanks_are_trimmed() -> None:
    raw = {"socket_path": "  /srv/h.sock\n", "token": " t0k \n", "watch": {"room": " !r:x "}}
    settings = Settings.load(lambda k: _dotted(raw, k))
    assert (settings.socket_path, settings.token, settings.watch_room) == (
        "/srv/h.sock",
        "t0k",
        "!r:x",
    )


@pytest.mark.parametrize("socket_path", ["", "   ", None, 5, ["/x"]])
def test_a_blank_or_mistyped_socket_path_is_the_default(socket_path: Any) -> None:
    assert Settings.load({"socket_path": socket_path}.get).socket_path == DEFAULT_SOCKET


@pytest.mark.parametrize("value", [None, 5, ["t"], {"t": 1}])
def test_a_mistyped_token_or_room_is_empty(value: Any) -> None:
    settings = Settings.load({"token": value, "watch.room": value}.get)
    assert (settings.token, settings.watch_room) == ("", "")


def test_ids_come_from_a_list_or_tuple_of_strings_only() -> None:
    assert Settings.load({"admins": ("@a:x", "@b:x")}.get).admins == frozenset({"@a:x", "@b:x"})
    assert Settings.load({"allowed_rooms": [" !r:x", 7]}.get).allowed_rooms == frozenset({"!r:x"})
    for not_a_list in ("@a:x", {"@a:x": 1}, None, 3):
        assert Settings.load({"admins": not_a_list}.get).admins == frozenset()


# The key each timeout is read from, the field it fills, its default and its floor.
TIMEOUTS = [
    ("timeouts.check", "check_timeout", 90.0, 1.0),
    ("timeouts.deep", "deep_timeout", 960.0, 1.0),
    ("timeouts.working_after", "working_after", 3.0, 0.0),
    ("timeouts.confirm", "confirm_timeout", 300.0, 1.0),
    ("timeouts.reset", "reset_timeout", 3600.0, 60.0),
    ("watch.interval", "watch_interval", 300.0, 1.0),
]


@pytest.mark.parametrize(("key", "name", "default", "floor"), TIMEOUTS)
def test_a_timeout_is_a_number_no_lower_than_its_floor(
    key: str, name: str, default: float, floor: float
) -> None:
    def value(raw: Any) -> float:
        return getattr(Settings.load({key: raw}.get), name)

    assert value("75.5") == 75.5  # a numeric string is read (every floor is lower)
    assert value(floor) == floor
    assert value(floor + 0.5) == floor + 0.5
    assert value(floor - 0.5) == floor
    assert value(-100) == floor
    for mistyped in (None, "soon", [1], {"s": 1}):
        assert value(mistyped) == default


@pytest.mark.parametrize("enabled", [False, None, "true", "yes", 1, [True]])
def test_only_true_turns_the_watch_on(enabled: Any) -> None:
    raw = {"watch.enabled": enabled, "watch.room": "!r:x", "allowed_rooms": ["!r:x"]}
    settings = Settings.load(raw.get)
    assert settings.watch is False
    assert settings.watch_target() is None
    assert Settings.load({**raw, "watch.enabled": True}.get).watch_target() == "!r:x"


def test_the_watch_posts_only_to_an_allowed_room() -> None:
    on = Settings(watch=True, watch_room="!r:x", allowed_rooms=frozenset({"!r:x"}))
    assert on.watch_target() == "!r:x"
    assert (
        Settings(
            watch=True, watch_room="!other:x", allowed_rooms=frozenset({"!r:x"})
        ).watch_target()
        is None
    )
    assert (
        Settings(watch=False, watch_room="!r:x", allowed_rooms=frozenset({"!r:x"})).watch_target()
        is None
    )


def test_use_needs_both_an_admin_and_an_allowed_room() -> None:
    s = Settings(admins=frozenset({"@a:x"}), allowed_rooms=frozenset({"!r:x"}))
    assert s.may_use("@a:x", "!r:x")
    assert not s.may_use("@a:x", "!other:x")
    assert not s.may_use("@b:x", "!r:x")
    assert not s.may_use("@b:x", "!other:x")


def test_every_empty_setting_is_named() -> None:
    assert Settings().problems() == [
        "token is empty: the helper will refuse every request",
        "admins is empty: every command will be refused",
        "allowed_rooms is empty: every command will be refused",
    ]


def test_the_token_is_never_in_the_repr() -> None:
    assert "stored-token" not in repr(Settings(token="stored-token"))
