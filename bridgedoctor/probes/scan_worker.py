"""A second process for `--deep` on a big store: about half the batches are verified there.

Verifying a row costs more CPU than fetching it, and one Python process runs on one core. On a
host with a spare core, once a scan has seen WORKER_AFTER rows (a small store never pays for a
process start), one worker process (spawned, not forked: the helper has threads) takes every
other batch while this process fetches and verifies the rest. At most IN_FLIGHT batches wait
for it, so memory stays bounded. If the worker fails in any way, its batches are verified here
and the scan goes on with this process alone: the same verdicts either way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from ..bulk_verify import BulkVerifier, Tally

WORKER_AFTER = 100_000
IN_FLIGHT = 2
# Test hook at the process boundary (like the reset's BRIDGEDOCTOR_CRASH_AT): a worker that
# finds it set dies on its first batch, so the scan must finish without it.
CRASH_ENV = "BRIDGEDOCTOR_SCAN_WORKER_CRASH"

_verifier: BulkVerifier | None = None  # the worker process's own


def _start(keys: list[str]) -> None:
    global _verifier
    _verifier = BulkVerifier(keys)


def _verify(kind: str, batch: list[object]) -> Tally:
    if os.environ.get(CRASH_ENV):
        os._exit(70)
    assert _verifier is not None
    tally = Tally()
    _verifier.feed(kind, batch, tally)
    return tally


@dataclass
class _Sent:
    future: asyncio.Future[Tally]
    kind: str
    batch: list[object]
    into: Tally


@dataclass
class Spread:
    """Verify a scan's batches here, and in a worker process once the scan is big enough."""

    keys: Sequence[str] = field(repr=False)
    local: BulkVerifier = field(init=False, repr=False)
    seen: int = 0
    after: int | None = None  # rows before a worker starts; None: WORKER_AFTER
    _pool: ProcessPoolExecutor | None = field(default=None, repr=False)
    _usable: bool = field(default=True, repr=False)
    _sent: list[_Sent] = field(default_factory=list, repr=False)
    _turn: bool = False
    _spawned: bool = False

    def __post_init__(self) -> None:
        self.local = BulkVerifier(list(self.keys))
        if self.after is None:
            self.after = WORKER_AFTER
        if (os.cpu_count() or 1) < 2:
            self._usable = False

    async def feed(self, kind: str, batch: list[object], into: Tally) -> None:
        self.seen += len(batch)
        await self._collect(block=len(self._sent) >= IN_FLIGHT)
        self._turn = not self._turn
        pool = self._worker() if self._turn else None
        if pool is not None and len(self._sent) < IN_FLIGHT:
            try:
                future = asyncio.wrap_future(pool.submit(_verify, kind, batch))
            except Exception:  # noqa: BLE001 - a worker that cannot take work: carry on alone
                self._give_up(cancel=False)
            else:
                self._sent.append(_Sent(future, kind, batch, into))
                return
        self.local.feed(kind, batch, into)

    @property
    def used_worker(self) -> bool:
        return self._pool is not None or self._spawned

    async def finish(self) -> None:
        """Wait for every batch sent out; then the worker goes away."""
        try:
            while self._sent:
                await self._collect(block=True)
        finally:
            self._give_up(cancel=True)  # nothing left to wait for, unless the scan failed

    def _worker(self) -> ProcessPoolExecutor | None:
        if not self._usable or self.seen < (self.after or 0):
            return None
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(list(self.keys),),
            )
            self._spawned = True
        return self._pool

    async def _collect(self, block: bool) -> None:
        """Merge what the worker has finished (the oldest, waiting for it when `block`)."""
        while self._sent and (block or self._sent[0].future.done()):
            sent = self._sent.pop(0)
            block = False
            try:
                sent.into.add(await sent.future)
            except Exception:  # noqa: BLE001 - the worker died or failed: verify it here
                self._give_up(cancel=False)  # batches still out come back as errors, or done
                self.local.feed(sent.kind, sent.batch, sent.into)

    def _give_up(self, cancel: bool) -> None:
        self._usable = False
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=cancel)
            self._pool = None
