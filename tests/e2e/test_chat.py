"""The plugin end to end: real Synapse, real maubot server with the built .mbp, the real
bridgedoctor-helper subprocess over an MDAD-shaped host whose bridges live in PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

from tests.fixtures import mdad
from tests.support.fleet import Host
from tests.support.pg import PgServer
from tests.support.reset_env import Systemd, fake_systemd

from .chat import (
    PLUGIN_ID,
    REFUSAL,
    Chat,
    Helper,
    ask,
    build_plugin,
    deploy,
    instance_config,
    sample_fleet,
)
from .sandbox import MatrixUser, Maubot, Synapse, is_notice, reaction_to, replies_to

pytestmark = pytest.mark.e2e

GMESSAGES_UNIT = "matrix-mautrix-gmessages.service"
SNIPPET = (
    'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "go.mau.fi/mautrix-gmessages"'
)


def yaml_blocks(formatted: str) -> list[str]:
    found = re.findall(r'<pre><code class="language-yaml">(.*?)</code></pre>', formatted, re.S)
    return [unescape(b).rstrip("\n") for b in found]


@pytest.fixture(scope="module")
def host(e2e_workdir: Path, pg: PgServer) -> Host:
    return sample_fleet(e2e_workdir / "chat-host", pg, f"chat{os.getpid()}_")


@pytest.fixture(scope="module")
def systemd(e2e_workdir: Path) -> Systemd:
    """systemd cannot run here: a fake systemctl on the helper's PATH keeps the unit states."""
    (e2e_workdir / "chat-systemd").mkdir()
    sd = fake_systemd(e2e_workdir / "chat-systemd")
    sd.set(GMESSAGES_UNIT, "active")
    return sd


@pytest.fixture(scope="module")
def helper(e2e_workdir: Path, host: Host, systemd: Systemd) -> Iterator[Helper]:
    process = Helper(e2e_workdir / "chat-helper", host, systemd=systemd)
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def chat(synapse: Synapse, maubot: Maubot, helper: Helper, e2e_workdir: Path) -> Chat:
    mbp = build_plugin(e2e_workdir / "dist")
    return asyncio.run(deploy(synapse, maubot, mbp, helper))


def assert_notice_reply(reply: dict, command: str) -> dict:
    assert is_notice(reply) and replies_to(command)(reply)
    content: dict = reply["content"]
    assert content["format"] == "org.matrix.custom.html"
    assert "Traceback" not in content["body"]
    return content


async def test_broken_bridge_gets_red_verdict_and_exact_snippet(chat: Chat) -> None:
    command, reply = await ask(chat, chat.admin, "!bridge check gmessages")
    content = assert_notice_reply(reply, command)
    assert content["body"].startswith("🟥 gmessages: broken — Pickle key mismatch")
    html = content["formatted_body"]
    assert html.startswith("<p>🟥 <b>gmessages</b>")
    assert "<details><summary>Evidence</summary>" in html
    assert yaml_blocks(html) == [SNIPPET]
    assert "<code>just install-service mautrix-gmessages</code>" in html
    assert "<table" not in html


async def test_healthy_bridge_is_green(chat: Chat) -> None:
    command, reply = await ask(chat, chat.admin, "!bridge check whatsapp")
    content = assert_notice_reply(reply, command)
    assert content["body"].startswith("🟩 whatsapp: ok — ")
    assert "MAC verified" in content["body"].splitlines()[0]


async def test_check_all_lists_both(chat: Chat) -> None:
    command, reply = await ask(chat, chat.admin, "!bridge check all")
    lines = assert_notice_reply(reply, command)["body"].splitlines()
    assert lines[0] == "🟥 2 bridges checked: 1 broken, 1 ok."
    assert lines[1].startswith("🟥 gmessages: broken")
    assert lines[2].startswith("🟩 whatsapp: ok")
    (pin,) = yaml_blocks(reply["content"]["formatted_body"])
    assert SNIPPET in pin.splitlines()


async def test_a_registration_the_homeserver_does_not_know_is_named_in_the_room(
    chat: Chat, host: Host
) -> None:
    """One of the failure catalogue's answers end to end: the registration carries another
    as_token than config.yaml (compared as digests; neither token reaches the room)."""
    registration = host.root / "mautrix-whatsapp" / "config" / "registration.yaml"
    kept = registration.read_text()
    other = "an-older-as-token-0000000000000000"
    registration.write_text(kept.replace(mdad.FAKE_AS_TOKEN, other))
    try:
        command, reply = await ask(chat, chat.admin, "!bridge check whatsapp")
    finally:
        registration.write_text(kept)
    content = assert_notice_reply(reply, command)
    assert content["body"].startswith(
        "🟥 whatsapp: broken — as_token differs between config.yaml and registration.yaml"
    )
    html = content["formatted_body"]
    assert "as_token: config.yaml sha256:" in html  # evidence, folded in <details>
    assert "<code>just install-service mautrix-whatsapp</code>" in html
    assert "<code>just start-group synapse</code>" in html
    for secret in (mdad.FAKE_AS_TOKEN, other):
        assert secret not in content["body"] and secret not in html


async def test_non_admin_is_refused(chat: Chat) -> None:
    for text in ("!bridge check gmessages", "!bridge help"):
        command, reply = await ask(chat, chat.stranger, text)
        assert assert_notice_reply(reply, command)["body"] == REFUSAL


async def test_edit_does_not_rerun(chat: Chat) -> None:
    async with MatrixUser(chat.synapse.url, chat.admin) as user:
        original = await user.send_text(chat.room_id, "!bridge lsit")
        await user.wait_for_reply(
            chat.room_id, replies_to(original), sender=chat.bot.user_id, timeout=30
        )
        edit = await user.send_edit(chat.room_id, original, "!bridge list")
    # Handlers run as they arrive; the list reply comes after any (wrong) reply to the edit.
    command, _ = await ask(chat, chat.admin, "!bridge list")
    async with MatrixUser(chat.synapse.url, chat.admin) as user:
        events = await user.recent_events(chat.room_id)
    assert not [e for e in events if replies_to(edit)(e)]
    assert command


async def test_token_never_reaches_the_room(chat: Chat, helper: Helper) -> None:
    async with MatrixUser(chat.synapse.url, chat.admin) as user:
        events = await user.recent_events(chat.room_id)
    assert len(events) > 10
    assert helper.token not in repr(events)


async def test_slow_answer_shows_progress_then_removes_it(
    chat: Chat, maubot: Maubot, helper: Helper
) -> None:
    # working_after 0: every answer counts as slow. A config PUT reaches the running plugin.
    config = instance_config(
        helper.socket_path, helper.token, chat.admin.user_id, chat.room_id, working_after=0
    )
    await maubot.put_instance(
        chat.instance_id, plugin_id=PLUGIN_ID, primary_user=chat.bot.user_id, config=config
    )
    command, reply = await ask(chat, chat.admin, "!bridge check whatsapp")
    async with MatrixUser(chat.synapse.url, chat.admin) as user:
        events = await user.recent_events(chat.room_id)
    ids = [e["event_id"] for e in events]
    between = events[ids.index(command) + 1 : ids.index(reply["event_id"])]
    reactions = [
        e for e in between if e["type"] == "m.reaction" and e["sender"] == chat.bot.user_id
    ]
    assert len(reactions) == 1, between
    # The ⏳ is redacted before the answer is sent (a redacted event keeps no content).
    assert reactions[0]["unsigned"].get("redacted_because"), reactions[0]
    assert reply["content"]["body"].startswith("🟩 whatsapp")


async def test_reset_in_the_room_then_restore(chat: Chat, systemd: Systemd) -> None:
    """The plan; a stranger's ✅ (ignored); the admin's ✅; the report; check shows a fresh
    store; then the backup is put back by code and check shows the original account again."""
    command, plan = await ask(chat, chat.admin, "!bridge reset gmessages")
    body = assert_notice_reply(plan, command)["body"]
    assert body.startswith("⚠️ Reset gmessages (crypto)? Nothing happens until you confirm.")
    code = re.search(r"!bridge confirm ([a-z0-9]{6})\.", body)
    assert code is not None
    backup_id = re.search(r"Undo: !bridge restore gmessages (\S+)", body)
    assert backup_id is not None
    async with MatrixUser(chat.synapse.url, chat.bot) as bot:
        await bot.wait_for_reply(  # the bot seeds ✅ and ❌; its own ✅ must not run the plan
            chat.room_id, reaction_to(plan["event_id"], "❌"), sender=chat.bot.user_id
        )
    async with MatrixUser(chat.synapse.url, chat.stranger) as stranger:
        await stranger.react(chat.room_id, plan["event_id"], "✅")
    await asyncio.sleep(2)  # long enough for the bot to have acted on it, had it counted
    assert not [c for c in systemd.calls() if c.startswith("stop")]
    async with MatrixUser(chat.synapse.url, chat.admin) as admin:
        events = await admin.recent_events(chat.room_id)
        assert not [e for e in events if is_notice(e) and replies_to(plan["event_id"])(e)]
        await admin.react(chat.room_id, plan["event_id"], "✅")
        report = await admin.wait_for_reply(
            chat.room_id,
            lambda e: (
                is_notice(e)
                and replies_to(plan["event_id"])(e)
                and e["content"]["body"].startswith("✅")
            ),
            sender=chat.bot.user_id,
            timeout=60,
        )
        events = await admin.recent_events(chat.room_id)
    assert report["content"]["body"].startswith("✅ gmessages: crypto reset done.")
    # While it ran: one progress line in reply to the plan, edited in place to its end.
    (line,) = [
        e for e in events
        if is_notice(e) and replies_to(plan["event_id"])(e)
        and e["content"]["body"].startswith("⏳ Reset of gmessages, step ")
    ]  # fmt: skip
    edits = [
        e["content"]["m.new_content"]["body"]
        for e in events
        if e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"].get("event_id") == line["event_id"]
    ]
    assert edits and edits[-1].endswith("step 5 of 5: starting the bridge (finished)"), edits
    assert f"stop {GMESSAGES_UNIT}" in systemd.calls()
    assert systemd.get(GMESSAGES_UNIT) == "active"  # started again: it was running

    command, reply = await ask(chat, chat.admin, "!bridge check gmessages")
    assert assert_notice_reply(reply, command)["body"].startswith(
        "🟩 gmessages: ok — The crypto store has no account yet"
    )
    command, reply = await ask(chat, chat.admin, "!bridge backups gmessages")
    assert (
        f"- {backup_id.group(1)} — crypto, done, by {chat.admin.user_id}"
        in reply["content"]["body"]
    )

    command, rplan = await ask(chat, chat.admin, f"!bridge restore gmessages {backup_id.group(1)}")
    rcode = re.search(r"!bridge confirm ([a-z0-9]{6})\.", rplan["content"]["body"])
    assert rcode is not None
    command, done = await ask(chat, chat.admin, f"!bridge confirm {rcode.group(1)}", timeout=60)
    assert done["content"]["body"].startswith(f"✅ gmessages: restored from {backup_id.group(1)}.")
    command, reply = await ask(chat, chat.admin, "!bridge check gmessages")
    assert reply["content"]["body"].startswith("🟥 gmessages: broken — Pickle key mismatch")


async def test_helper_down_names_the_socket(chat: Chat, helper: Helper) -> None:
    helper.stop()  # last in this module: the helper stays down
    assert not helper.socket_path.exists()  # the helper removes its socket on SIGTERM
    command, reply = await ask(chat, chat.admin, "!bridge check whatsapp")
    body = assert_notice_reply(reply, command)["body"]
    assert body == (
        f"⚠️ The bridgedoctor helper socket {helper.socket_path} does not exist: is "
        "bridgedoctor-helper.service running on the host, and is the socket mounted into the "
        "maubot container?"
    )
