"""Fixed sentences and the message content every reply uses."""

from __future__ import annotations

from mautrix.types import Format, MessageType, TextMessageEventContent

from bridgedoctor.render.neutral import neutral

# The same words whatever was asked, so that non-admins cannot probe the command set.
REFUSAL = "Sorry, I only answer bridgedoctor admins, in the rooms set up for it."
UNEXPECTED = "Something went wrong while running that command; the maubot log has the details."
PROGRESS_KEY = "⏳"


def notice(plain: str, html: str) -> TextMessageEventContent:
    """An m.notice (bots ignore notices, so no loops) with a hand-built HTML body. Neutralised
    again here, the one way out to the room: no bidi or control character reaches it."""
    return TextMessageEventContent(
        msgtype=MessageType.NOTICE,
        body=neutral(plain),
        format=Format.HTML,
        formatted_body=neutral(html),
    )
