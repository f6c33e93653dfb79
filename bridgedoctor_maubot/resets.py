"""Reset, restore and apply from the room: plan, confirm (✅ or `confirm <code>`), run, report,
then follow the unit (followup.py).

Only the admin who asked can confirm, in the room where they asked, before the plan expires.
Everyone else's reactions, the bot's own (it seeds ✅ and ❌ so they are one click away), a
second ✅ and reactions to anything but a waiting plan are ignored without a word. The helper
re-plans when the confirmation arrives and refuses if the plan it would run differs from the
one shown (its digest), so a confirmation is only ever good for what the admin read.

Plans posted and not finished are also written to the instance database (store.py): a plugin
that restarts answers each one, waiting ones as cancelled (nothing was changed) and running ones
as left to the helper, instead of leaving them unanswered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from maubot.matrix import MaubotMatrixClient
from mautrix.types import EventID, ReactionEvent, RoomID

from bridgedoctor.render import matrix as render
from bridgedoctor.render import matrix_apply as render_apply
from bridgedoctor.render import matrix_reset as render_reset

from .config import Settings
from .followup import follow_up
from .helper_client import HelperClient, HelperError
from .invocation import COMMAND, Invocation
from .pending import Busy, Kind, Pending, Registry
from .replies import PROGRESS_KEY, UNEXPECTED, notice
from .store import OpenPlan, PlanState, Store

Message = tuple[str, str]
# Awaits a helper call, showing ⏳ on the command if it is slow (Commands._with_progress).
Progress = Callable[[Awaitable[Any]], Awaitable[Any]]
# Clients may append U+FE0F (emoji presentation) to the key; it is the same reaction.
CONFIRM, CANCEL = render_reset.CONFIRM_KEY, render_reset.CANCEL_KEY
DRAW = {
    "reset": render_reset.reset_plan,
    "restore": render_reset.restore_plan,
    "apply": render_apply.apply_plan,
}


def _key(raw: str | None) -> str:
    return (raw or "").replace("\ufe0f", "")


class ResetFlow:
    def __init__(self, client: MaubotMatrixClient, log: logging.Logger, store: Store) -> None:
        self._client = client
        self._log = log
        self._store = store
        self._registry = Registry()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- commands ----------------------------------------------------------------------------

    async def plan(
        self,
        evt: Any,
        inv: Invocation,
        settings: Settings,
        progress: Progress,
    ) -> Message | None:
        """`reset`, `restore` or `apply`: ask the helper for the plan, post it, wait for
        confirmation. Returns a message for the command's reply, or None once it is posted."""
        bridge = inv.bridge or ""
        kind: Kind = inv.action  # type: ignore[assignment]
        try:
            self._registry.claim(bridge, f"a {kind} plan is being prepared")
        except Busy as b:
            return render.info(f"{b} One reset, restore or apply at a time per bridge.")
        helper = HelperClient(settings.socket_path, settings.token, settings.check_timeout)
        try:
            if kind == "reset":
                plan = await progress(helper.reset_plan(bridge, inv.mode))
            elif kind == "apply":
                plan = await progress(helper.apply_plan(bridge))
            else:
                plan = await progress(helper.restore_plan(bridge, inv.backup or ""))
            ident = str(plan["backup"] if kind == "restore" else plan["id"])
            p = self._registry.add(
                kind, bridge, evt.sender, evt.room_id, str(plan["digest"]), ident,
                str(plan.get("mode", inv.mode)), settings.confirm_timeout,
            )  # fmt: skip
            # Afterwards the unit runs again (an apply always restarts it): follow it then.
            p.follow = kind == "apply" or bool(plan.get("was_active"))
        except HelperError as err:
            self._registry.release(bridge)
            return render.error(err.sentence)
        except Exception:
            self._registry.release(bridge)
            raise
        self._registry.mark(bridge, f"a {kind} plan is waiting for {p.requester} to confirm")
        draw = DRAW[kind]
        try:
            message = draw(plan, p.code, settings.confirm_timeout, COMMAND)
            sent = await evt.respond(notice(*message), reply=True)
        except Exception:
            self._registry.drop(p.code)
            raise
        p.event_id = str(sent)
        await self._remember(p, "waiting")
        self._arm_expiry(p, settings.confirm_timeout)
        for key in (CONFIRM, CANCEL):  # one click for the admin; our own reactions are ignored
            await self._quietly(self._client.react(RoomID(p.room_id), EventID(p.event_id), key))
        return None

    async def confirm(self, evt: Any, inv: Invocation, settings: Settings) -> Message | None:
        """Run the plan; the report replies to the command, the follow-up to the plan."""
        p = self._registry.take(inv.code or "", evt.sender, evt.room_id)
        if p is None:
            return render.info(
                f"No plan with code {inv.code} is waiting for your confirmation in this room "
                "(it may have expired or run already)."
            )
        message = await self._run(p, settings)
        await self._quietly(evt.respond(notice(*message), reply=True))
        self._follow(p, settings)
        return None

    async def cancel(self, evt: Any, inv: Invocation) -> Message:
        p = self._registry.take(inv.code or "", evt.sender, evt.room_id)
        if p is None:
            return render.info(f"No plan with code {inv.code} is waiting for you in this room.")
        return await self._end(p, "was cancelled")

    async def backups(self, inv: Invocation, settings: Settings, progress: Progress) -> Message:
        helper = HelperClient(settings.socket_path, settings.token, settings.check_timeout)
        try:
            return render_reset.backups(await progress(helper.backups(inv.bridge or "")), COMMAND)
        except HelperError as err:
            return render.error(err.sentence)

    # --- reactions ---------------------------------------------------------------------------

    async def on_reaction(self, evt: ReactionEvent, settings: Settings) -> None:
        if evt.sender == self._client.mxid:
            return
        rel = evt.content.relates_to
        key = _key(rel.key)
        if key not in (CONFIRM, CANCEL) or not rel.event_id:
            return
        waiting = self._registry.by_event(str(rel.event_id))
        if waiting is None or not settings.may_use(evt.sender, evt.room_id):
            return
        p = self._registry.take(waiting.code, evt.sender, evt.room_id)
        if p is None:
            self._log.info(f"Ignored {key} from {evt.sender} on the {waiting.kind} plan")
            return
        if key == CANCEL:
            await self._send(p, await self._end(p, "was cancelled"))
            return
        await self._send(p, await self._run(p, settings))
        self._follow(p, settings)

    # --- running -----------------------------------------------------------------------------

    async def _run(self, p: Pending, settings: Settings) -> Message:
        self._disarm(p.code)
        self._registry.mark(p.bridge, f"a {p.kind} is running")
        await self._remember(p, "running")
        marker = None
        if p.event_id:
            marker = await self._quietly(
                self._client.react(RoomID(p.room_id), EventID(p.event_id), PROGRESS_KEY)
            )
        helper = HelperClient(settings.socket_path, settings.token, settings.reset_timeout)
        self._log.warning(f"{p.kind} of {p.bridge} ({p.ident}) confirmed by {p.requester}")
        shown = _ProgressNotice(self, p)
        try:
            if p.kind == "reset":
                result = await helper.reset(
                    p.bridge, p.mode, p.ident, p.digest, p.requester, shown.update
                )
                await shown.close("finished")
                message = render_reset.reset_done(result, COMMAND)
            elif p.kind == "apply":
                result = await helper.apply(p.bridge, p.ident, p.digest, p.requester)
                message = render_apply.apply_done(result, COMMAND)
            else:
                result = await helper.restore(
                    p.bridge, p.ident, p.digest, p.requester, shown.update
                )
                await shown.close("finished")
                message = render_reset.restore_done(result, COMMAND)
            p.done = True
            return message
        except HelperError as err:
            if err.code == "timeout":
                return render.error(
                    f"{err.sentence} The helper keeps going: {COMMAND} backups {p.bridge} "
                    "shows how it ended."
                )
            return render.error(err.sentence)
        except Exception:
            self._log.exception(f"{p.kind} of {p.bridge} failed in the plugin")
            return render.error(UNEXPECTED)
        finally:
            await shown.close("stopped")  # no-op when it closed as finished
            self._registry.release(p.bridge)
            await self._forget(p)
            if marker:
                await self._quietly(self._client.redact(RoomID(p.room_id), marker))

    async def _end(self, p: Pending, why: str) -> Message:
        self._disarm(p.code)
        self._registry.release(p.bridge)
        await self._forget(p)
        return render_reset.ended(f"the {p.kind} plan", p.bridge, why)

    def _arm_expiry(self, p: Pending, ttl: float) -> None:
        self._timers[p.code] = asyncio.get_running_loop().call_later(
            ttl, lambda: self._spawn(self._expire(p.code))
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _follow(self, p: Pending, settings: Settings) -> None:
        """After a change that ran, in the background: how the unit runs now, as a reply to the
        plan (the helper follows it for a bounded time)."""
        if p.done and p.follow and p.event_id:
            self._spawn(follow_up(p, settings, self._send, self._log))

    def _disarm(self, code: str) -> None:
        timer = self._timers.pop(code, None)
        if timer:
            timer.cancel()

    async def _expire(self, code: str) -> None:
        self._timers.pop(code, None)
        p = self._registry.drop(code)
        if p is not None:
            await self._forget(p)
            await self._send(p, render_reset.ended(f"the {p.kind} plan", p.bridge,
                                                   "expired unconfirmed"))  # fmt: skip

    async def _send(self, p: Pending | OpenPlan, message: Message) -> Any:
        content = notice(*message)
        if p.event_id:
            content.set_reply(EventID(p.event_id))
        return await self._quietly(self._client.send_message(RoomID(p.room_id), content))

    # --- across restarts ---------------------------------------------------------------------

    async def _remember(self, p: Pending, state: PlanState) -> None:
        if p.event_id is None:
            return
        plan = OpenPlan(p.code, p.kind, p.bridge, p.room_id, p.event_id, state)
        await self._quietly(self._store.open_plan(plan), "remember the plan")

    async def _forget(self, p: Pending) -> None:
        await self._quietly(self._store.close_plan(p.code), "forget the plan")

    async def answer_open_plans(self) -> None:
        """At start: every plan the previous run of the plugin left open gets its answer."""
        plans = await self._quietly(self._store.open_plans(), "read the open plans")
        for plan in plans or []:
            if plan.state == "running":
                message = render.info(
                    f"The {plan.kind} of {plan.bridge} was running when the plugin restarted; "
                    f"the helper finishes it on its own: {COMMAND} backups {plan.bridge} shows "
                    "how it ended."
                )
            else:
                message = render_reset.ended(
                    f"the {plan.kind} plan", plan.bridge,
                    "was cancelled because the plugin restarted before it was confirmed",
                )  # fmt: skip
            if await self._send(plan, message) is not None:
                await self._quietly(self._store.close_plan(plan.code), "forget the plan")

    async def _quietly(self, call: Awaitable[Any], what: str = "send to the room") -> Any:
        try:
            return await call
        except Exception as exc:  # a lost reaction, notice or row must not break the flow
            self._log.warning(f"could not {what}: {exc}")
            return None

    async def idle(self) -> None:
        """Wait until the background work (follow-ups, expiry notices) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        """Plugin stop: waiting plans lapse (nothing was changed; their rows stay, so the next
        start answers them); timers go."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for p in self._registry.waiting():
            self._registry.drop(p.code)
        for task in self._tasks:
            task.cancel()


class _ProgressNotice:
    """The progress line of a running reset or restore: posted (in reply to the plan) at the
    helper's first report, then edited in place as later ones arrive, at most once every
    EDIT_EVERY seconds, and a last time when it ends. A long reset is never a silent one."""

    EDIT_EVERY = 5.0

    def __init__(self, flow: ResetFlow, p: Pending) -> None:
        self._flow = flow
        self._p = p
        self._event: EventID | None = None
        self._state: dict[str, Any] | None = None
        self._sent_at = 0.0
        self._task: asyncio.Task[Any] | None = None
        self._closed = False

    def update(self, state: dict[str, Any]) -> None:
        """Called by the helper client for each progress line (on the event loop)."""
        self._state = state
        due = self._event is None or time.monotonic() - self._sent_at >= self.EDIT_EVERY
        if due and not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._send(""))

    async def close(self, done: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._state is not None:
            await self._send(done)

    async def _send(self, done: str) -> None:
        assert self._state is not None
        p = self._p
        content = notice(*render_reset.progress(p.kind, p.bridge, self._state, done))
        if self._event is not None:
            content.set_edit(self._event)
        elif p.event_id:
            content.set_reply(EventID(p.event_id))
        self._sent_at = time.monotonic()
        sent = await self._flow._quietly(
            self._flow._client.send_message(RoomID(p.room_id), content)
        )
        if self._event is None and sent:
            self._event = EventID(str(sent))
