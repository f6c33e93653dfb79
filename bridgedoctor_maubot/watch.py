"""The watch: check the whole fleet on an interval, post only what changed.

Each round asks the helper for `check_all` and compares every bridge's status with the last one
posted, kept in the instance database: a restart of maubot neither repeats an alert nor misses a
change made while it was down. A bridge never seen before counts as having been ok, so turning the
watch on reports what is already wrong, once. Nothing is stored until the message is sent, so a
lost message is sent again at the next round rather than lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from maubot.matrix import MaubotMatrixClient
from mautrix.types import RoomID

from bridgedoctor.protocol import E_BUSY
from bridgedoctor.render import matrix_watch as render

from .config import Settings
from .helper_client import HelperClient, HelperError
from .invocation import COMMAND
from .replies import notice
from .store import HELPER, Store

Report = Mapping[str, Any]


@dataclass(frozen=True)
class Diff:
    changed: list[tuple[Report, str]]  # (report now, status before), in fleet order
    gone: list[str]  # bridges no longer deployed (forgotten without a word)


def diff(before: Mapping[str, str], reports: list[Report]) -> Diff:
    seen = set()
    changed: list[tuple[Report, str]] = []
    for r in reports:
        name = str(r.get("bridge", ""))
        seen.add(name)
        status = str(r.get("status", "unknown"))
        was = before.get(name, "ok")
        if status != was:
            changed.append((r, was))
    gone = [b for b in before if b not in seen and b != HELPER]
    return Diff(changed, gone)


class Watch:
    def __init__(
        self,
        settings: Callable[[], Settings],
        store: Store,
        client: MaubotMatrixClient,
        log: logging.Logger,
    ) -> None:
        self._settings = settings
        self._store = store
        self._client = client
        self._log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Settings changed: look now rather than at the end of the old interval."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            settings = self._settings()
            room = settings.watch_target()
            if room is not None:
                try:
                    await self.round(settings, room)
                except Exception:  # one bad round must not end the watch
                    self._log.exception("watch round failed")
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), settings.watch_interval)

    async def round(self, settings: Settings, room: str) -> bool:
        """One look at the fleet; returns whether a message was posted."""
        before = await self._store.statuses()
        helper = HelperClient(settings.socket_path, settings.token, settings.check_timeout)
        try:
            fleet = await helper.check_all()
        except HelperError as err:
            if err.code == E_BUSY:  # the helper is working for someone else: look next time
                return False
            self._log.warning(f"watch: helper call failed ({err.code}): {err.sentence}")
            if before.get(HELPER) == "unknown":
                return False
            if await self._post(room, render.helper_lost(err.sentence)):
                await self._store.save_statuses({HELPER: "unknown"}, [])
                return True
            return False
        reports = [r for r in fleet.get("bridges") or [] if isinstance(r, Mapping)]
        d = diff(before, reports)
        back = before.get(HELPER) == "unknown"
        if not d.changed and not back:
            if d.gone:
                await self._store.save_statuses({}, d.gone)
            return False
        message = render.changes(d.changed, COMMAND, helper_back=back)
        if not await self._post(room, message):
            return False
        now = {str(r.get("bridge")): str(r.get("status", "unknown")) for r, _ in d.changed}
        if back:
            now[HELPER] = "ok"
        await self._store.save_statuses(now, d.gone)
        return True

    async def _post(self, room: str, message: tuple[str, str]) -> bool:
        try:
            await self._client.send_message(RoomID(room), notice(*message))
            return True
        except Exception as exc:
            self._log.warning(f"watch: could not post to {room}: {exc}")
            return False
