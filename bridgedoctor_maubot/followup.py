"""The follow-up after a reset, restore or apply: the helper follows the unit for a bounded time
(its `verify` op), and the room hears how it runs: up, or still failing with its last fatal
line (scrubbed by the helper) and the finding that explains it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bridgedoctor.render import matrix as render
from bridgedoctor.render import matrix_apply as render_apply

from .config import Settings
from .helper_client import HelperClient, HelperError
from .invocation import COMMAND
from .pending import Pending

Message = tuple[str, str]
Send = Callable[[Pending, Message], Awaitable[Any]]


async def follow_up(p: Pending, settings: Settings, send: Send, log: logging.Logger) -> None:
    helper = HelperClient(settings.socket_path, settings.token, settings.check_timeout)
    try:
        answer = await helper.verify(p.bridge)
        message = render_apply.verified(answer, COMMAND)
    except HelperError as err:
        log.warning(f"following {p.bridge} after the {p.kind} failed: {err.sentence}")
        message = render.error(
            f"Could not follow {p.bridge} after the {p.kind}: {err.sentence} "
            f"{COMMAND} check {p.bridge} shows how it is."
        )
    except Exception:
        log.exception(f"following {p.bridge} after the {p.kind} failed in the plugin")
        return
    await send(p, message)
