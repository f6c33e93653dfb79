"""Smallest plugin exercising the e2e sandbox: replies, bot reactions, user reactions."""

from maubot import MessageEvent, Plugin
from maubot.handlers import command, event
from mautrix.types import EventType, ReactionEvent


class SmokePlugin(Plugin):
    @command.new("ping")
    async def ping(self, evt: MessageEvent) -> None:
        await evt.reply("pong")
        await evt.react("🏓")

    @event.on(EventType.REACTION)
    async def on_reaction(self, evt: ReactionEvent) -> None:
        # The bot's own reactions reach this handler too.
        if evt.sender == self.client.mxid:
            return
        rel = evt.content.relates_to
        await self.client.send_notice(evt.room_id, f"reaction {rel.key} on {rel.event_id}")
