"""The `!bridge` command: guard, parse, ask the helper, render, reply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from maubot import MessageEvent
from maubot.handlers import command, event
from maubot.matrix import MaubotMatrixClient
from mautrix.types import EventID, EventType, ReactionEvent

from bridgedoctor.protocol import E_UNKNOWN_BRIDGE as UNKNOWN_BRIDGE
from bridgedoctor.render import matrix as render

from .config import Settings
from .helper_client import HelperClient, HelperError
from .invocation import COMMAND, HELP, Invocation, parse
from .replies import PROGRESS_KEY, REFUSAL, UNEXPECTED, notice
from .resets import ResetFlow
from .store import Store

T = TypeVar("T")
Message = tuple[str, str]


class Commands:
    """Registered with `Plugin.register_handler_class`. No properties here: maubot getattr()s
    every attribute of a handler class while registering it."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        log: logging.Logger,
        client: MaubotMatrixClient,
        store: Store,
    ) -> None:
        self._settings = settings
        self._log = log
        self.resets = ResetFlow(client, log.getChild("reset"), store)

    @command.new("bridge", require_subcommand=False, arg_fallthrough=False)
    @command.argument("args", required=False, pass_raw=True)
    async def bridge(self, evt: MessageEvent, args: str | None = None) -> None:
        # mautrix hands an edit over with the new text as the body: running it again would
        # repeat the command (and later, a reset) just because someone fixed a typo.
        if evt.content.get_edit():
            return
        settings = self._settings()
        if not settings.may_use(evt.sender, evt.room_id):
            self._log.info(f"Refused {COMMAND} from {evt.sender} in {evt.room_id}")
            await self._reply(evt, render.info(REFUSAL))
            return
        try:
            message = await self._answer(evt, parse(args), settings)
        except Exception:
            # A handler exception would only be logged by maubot, leaving the admin waiting.
            self._log.exception(f"{COMMAND} {(args or '').strip()[:60]!r} failed")
            message = render.error(UNEXPECTED)
        if message is not None:
            await self._reply(evt, message)

    @event.on(EventType.REACTION)
    async def reaction(self, evt: ReactionEvent) -> None:
        try:
            await self.resets.on_reaction(evt, self._settings())
        except Exception:
            self._log.exception("handling a reaction failed")

    async def _answer(
        self, evt: MessageEvent, inv: Invocation, settings: Settings
    ) -> Message | None:
        if inv.action == "help":
            return render.usage(HELP, intro="bridgedoctor diagnoses the mautrix bridges here:")
        if inv.action == "invalid":
            return render.info(inv.problem or "")

        def progress(call: Awaitable[T]) -> Awaitable[T]:
            return self._with_progress(evt, call, settings)

        if inv.action in ("reset", "restore", "apply"):
            return await self.resets.plan(evt, inv, settings, progress)
        if inv.action == "confirm":
            return await progress(self.resets.confirm(evt, inv, settings))
        if inv.action == "cancel":
            return await self.resets.cancel(evt, inv)
        if inv.action == "backups":
            return await self.resets.backups(inv, settings, progress)
        timeout = settings.deep_timeout if inv.deep else settings.check_timeout
        helper = HelperClient(settings.socket_path, settings.token, timeout)
        try:
            if inv.action == "list":
                return render.bridge_list(await progress(helper.list_bridges()), COMMAND)
            if inv.action == "check_all":
                return render.fleet_report(await progress(helper.check_all()), COMMAND)
            if inv.action == "logs":
                return render.logs_report(await progress(helper.logs(inv.bridge or "")), COMMAND)
            report = await progress(helper.check(inv.bridge or "", deep=inv.deep))
            return render.bridge_report(report, COMMAND)
        except HelperError as err:
            self._log.warning(f"helper call failed ({err.code}): {err.sentence}")
            if err.code == UNKNOWN_BRIDGE:
                return render.info(f"{err.sentence} {COMMAND} list shows the deployed bridges.")
            return render.error(err.sentence)

    async def _with_progress(self, evt: MessageEvent, call: Awaitable[T], settings: Settings) -> T:
        """Await `call`; if it outlasts `working_after`, show ⏳ on the command until it ends."""
        task = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({task}, timeout=settings.working_after)
            if done:
                return task.result()
            marker = await self._react(evt)
            try:
                return await task
            finally:
                if marker:
                    await self._unreact(evt, marker)
        finally:
            task.cancel()  # no-op once done; stops the call if the handler itself is cancelled

    async def _react(self, evt: MessageEvent) -> EventID | None:
        try:
            return await evt.react(PROGRESS_KEY)
        except Exception as exc:  # progress is a nicety: never fail the command over it
            self._log.warning(f"could not add the progress reaction: {exc}")
            return None

    async def _unreact(self, evt: MessageEvent, marker: EventID) -> None:
        try:
            await evt.client.redact(evt.room_id, marker)
        except Exception as exc:
            self._log.warning(f"could not remove the progress reaction: {exc}")

    async def _reply(self, evt: MessageEvent, message: Message) -> Any:
        try:
            # A reply to the command; it stays in the command's thread if it was sent in one.
            return await evt.respond(notice(*message), reply=True)
        except Exception:
            self._log.exception("could not send the reply")
            return None
