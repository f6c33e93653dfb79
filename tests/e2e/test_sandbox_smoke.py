"""Smoke test of the e2e sandbox with a trivial plugin (tests/e2e/smoke_plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .sandbox import (
    MatrixUser,
    Maubot,
    Synapse,
    build_mbp,
    edit_of,
    is_notice,
    reaction_to,
    replies_to,
    unique,
)

pytestmark = pytest.mark.e2e

PLUGIN_DIR = Path(__file__).parent / "smoke_plugin"
PLUGIN_ID = "dev.bridgedoctor.smoke"


async def test_ping_pong(synapse: Synapse, maubot: Maubot, e2e_workdir: Path) -> None:
    mbp = build_mbp(PLUGIN_DIR, e2e_workdir / "smoke.mbp")
    uploaded = await maubot.upload_plugin(mbp)
    assert uploaded["id"] == PLUGIN_ID

    bot = await synapse.register(unique("smokebot"), unique("pw"))
    admin = await synapse.register(unique("admin"), unique("pw"), admin=True)
    client = await maubot.put_client(bot, autojoin=True)
    assert client["id"] == bot.user_id and client["started"]
    instance = await maubot.put_instance(
        unique("smoke"), plugin_id=PLUGIN_ID, primary_user=bot.user_id
    )
    assert instance["started"], instance

    async with MatrixUser(synapse.url, admin) as user:
        room = await user.create_room(invite=[bot.user_id])
        await user.wait_joined(room, bot.user_id)

        ping = await user.send_text(room, "!ping")
        pong = await user.wait_for_reply(
            room, lambda e: is_notice(e) and replies_to(ping)(e), sender=bot.user_id
        )
        assert pong["content"]["body"] == "pong"
        await user.wait_for_reply(room, reaction_to(ping, "🏓"), sender=bot.user_id)

        # Edits re-trigger maubot commands: the bot answers the edit event itself.
        edit = await user.send_edit(room, ping, "!ping")
        await user.wait_for_reply(room, edit_of(ping), sender=admin.user_id)
        await user.wait_for_reply(
            room, lambda e: is_notice(e) and replies_to(edit)(e), sender=bot.user_id
        )

        await user.react(room, pong["event_id"], "👍")
        seen = await user.wait_for_reply(
            room,
            lambda e: (
                is_notice(e) and e["content"]["body"] == f"reaction 👍 on {pong['event_id']}"
            ),
            sender=bot.user_id,
        )
        assert seen["sender"] == bot.user_id
