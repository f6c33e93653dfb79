"""Plans waiting for confirmation, and which bridges are busy. Pure state, no Matrix calls.

A plan is confirmed at most once: `take` removes it in the same step that matches it, with no
await in between, so two ✅ (or a ✅ and a `confirm`) arriving together run it once. Plans live
in memory only: a maubot restart drops them, which cancels them (nothing had been changed).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# No 0/o, 1/l/i: codes are read off a screen and typed on a phone.
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
CODE_LENGTH = 6
Kind = Literal["reset", "restore", "apply"]


@dataclass
class Pending:
    code: str
    kind: Kind
    bridge: str
    requester: str
    room_id: str
    digest: str
    ident: str  # the plan's backup id (reset, apply) or the backup to put back (restore)
    mode: str
    expires_at: float
    event_id: str | None = None  # the plan message, once sent
    follow: bool = False  # after it ran, follow the unit (it was running, or an apply restarts it)
    done: bool = False  # it ran to the end

    def may_confirm(self, sender: str, room_id: str) -> bool:
        return sender == self.requester and room_id == self.room_id


class Busy(Exception):
    """The bridge already has a plan waiting or an operation running; str() says which."""


class Registry:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._plans: dict[str, Pending] = {}
        self._busy: dict[str, str] = {}  # bridge -> what it is busy with, for the refusal

    def claim(self, bridge: str, what: str) -> None:
        """Reserve the bridge for one plan or operation; raises Busy if it is taken."""
        if bridge in self._busy:
            raise Busy(f"{bridge} is busy: {self._busy[bridge]}.")
        self._busy[bridge] = what

    def release(self, bridge: str) -> None:
        self._busy.pop(bridge, None)

    def mark(self, bridge: str, what: str) -> None:
        self._busy[bridge] = what

    def add(self, kind: Kind, bridge: str, requester: str, room_id: str, digest: str,
            ident: str, mode: str, ttl: float) -> Pending:  # fmt: skip
        code = self._new_code()
        p = Pending(code, kind, bridge, requester, room_id, digest, ident, mode,
                    self._clock() + ttl)  # fmt: skip
        self._plans[code] = p
        return p

    def by_event(self, event_id: str) -> Pending | None:
        return next((p for p in self._plans.values() if p.event_id == event_id), None)

    def take(self, code: str, sender: str, room_id: str) -> Pending | None:
        """The plan, removed, if `sender` may confirm it here and it has not expired."""
        p = self._plans.get(code)
        if p is None or not p.may_confirm(sender, room_id) or self._clock() >= p.expires_at:
            return None
        return self._plans.pop(code)

    def drop(self, code: str) -> Pending | None:
        """Remove a plan whatever its state (expiry, cancel); frees its bridge."""
        p = self._plans.pop(code, None)
        if p is not None:
            self.release(p.bridge)
        return p

    def waiting(self) -> list[Pending]:
        return list(self._plans.values())

    def _new_code(self) -> str:
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if code not in self._plans:
                return code
