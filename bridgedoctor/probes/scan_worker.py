"""A second process for `--deep` on a big store: about half the batches are verified there.

Verifying a row costs more CPU than fetching it, and one Python process runs on one core. On a
host with a spare core (one more CPU than the load average: on a busy host a second process
only slows everyone down), once a scan has seen WORKER_AFTER rows (a small store never pays for a
process start), one worker takes every other batch while this process fetches and verifies the
rest. The worker is a fresh interpreter (`python -I`, our own import path handed over, like the
SQLite reader's child), fed over its stdin: the keys as the first line, then each batch as a
header line, the rows' lengths as one array and the rows joined; it answers one JSON line of
counts per batch. At most IN_FLIGHT batches wait for it, so memory stays bounded. If it fails in
any way, its batches are verified here and the scan goes on with this process alone: the same
verdicts either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from ..bulk_verify import BulkVerifier, Tally, all_bytes

WORKER_AFTER = 100_000
IN_FLIGHT = 2
# Test hook at the process boundary (like the reset's BRIDGEDOCTOR_CRASH_AT): a worker that
# finds it set dies on its first batch, so the scan must finish without it.
CRASH_ENV = "BRIDGEDOCTOR_SCAN_WORKER_CRASH"
WORKER_ENV = "BRIDGEDOCTOR_DEEP_WORKER"
_LEN_TYPE = "I"  # row lengths, native order: both ends are this machine


class WorkerGone(Exception):
    """The worker process ended or answered something else than counts."""


@dataclass
class _Sent:
    future: asyncio.Future[Tally]
    kind: str
    batch: list[bytes]
    into: Tally


class _Worker:
    """The child process and the batches it has not answered yet (it answers in order)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.waiting: list[asyncio.Future[Tally]] = []
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, keys: Sequence[str]) -> _Worker:
        paths = [p for p in sys.path if os.path.isabs(p)]
        code = f"import sys; sys.path[:0] = {paths!r}; from {__name__} import serve; serve()"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", code, cwd="/",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(list(keys)).encode() + b"\n")  # never argv: ps shows argv
        return cls(proc)

    async def send(self, kind: str, batch: list[bytes]) -> asyncio.Future[Tally]:
        assert self.proc.stdin is not None
        # Header line, the rows' lengths as one array, the rows joined: no Python per row.
        lengths = array(_LEN_TYPE, map(len, batch))
        frame = (
            json.dumps({"kind": kind, "n": len(batch), "bytes": sum(lengths)}).encode() + b"\n",
            lengths.tobytes(),
            b"".join(batch),
        )
        # Waiting before it is written: the answer may come back before drain() returns.
        future: asyncio.Future[Tally] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        try:
            self.proc.stdin.write(b"".join(frame))
            await self.proc.stdin.drain()
        except BaseException:
            self.waiting.remove(future)
            raise
        return future

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                t = json.loads(line)
                tally = Tally(
                    rows=int(t["rows"]),
                    opened={int(k): int(v) for k, v in t["opened"].items()},
                    bad_plaintext={int(k): int(v) for k, v in t["bad_plaintext"].items()},
                    unknown=int(t["unknown"]),
                    corrupt=int(t["corrupt"]),
                )
                self.waiting.pop(0).set_result(tally)
        except Exception:  # noqa: BLE001 - anything but counts: the worker is no use any more
            pass
        for future in self.waiting:
            if not future.done():
                future.set_exception(WorkerGone())

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await asyncio.gather(self.reader, return_exceptions=True)
        if self.proc.stdin is not None:
            # A worker that died mid-batch broke its pipe. Waiting for the close takes that
            # error: Python 3.11.2 (Debian 12) would otherwise log it when the loop is collected.
            self.proc.stdin.close()
            with contextlib.suppress(Exception):
                await self.proc.stdin.wait_closed()


@dataclass
class Spread:
    """Verify a scan's batches here, and in a worker process once the scan is big enough."""

    keys: Sequence[str] = field(repr=False)
    after: int | None = None  # rows before a worker starts; None: WORKER_AFTER
    local: BulkVerifier = field(init=False, repr=False)
    seen: int = 0
    used_worker: bool = False
    _worker: _Worker | None = field(default=None, repr=False)
    _usable: bool = field(default=True, repr=False)
    _sent: list[_Sent] = field(default_factory=list, repr=False)
    _turn: bool = False

    def __post_init__(self) -> None:
        self.local = BulkVerifier(list(self.keys))
        if self.after is None:
            self.after = WORKER_AFTER

    async def feed(self, kind: str, batch: list[object], into: Tally) -> None:
        self.seen += len(batch)
        await self._collect(block=len(self._sent) >= IN_FLIGHT)
        self._turn = not self._turn
        if self._turn and len(self._sent) < IN_FLIGHT and all_bytes(batch):
            worker = await self._get_worker()
            if worker is not None:
                rows: list[bytes] = batch  # type: ignore[assignment]
                try:
                    self._sent.append(_Sent(await worker.send(kind, rows), kind, rows, into))
                    return
                except (OSError, RuntimeError):  # the pipe broke: this batch is done here
                    await self._give_up()
        self.local.feed(kind, batch, into)

    async def finish(self) -> None:
        """Wait for every batch sent out; then the worker goes away."""
        try:
            while self._sent:
                await self._collect(block=True)
        finally:
            await self._give_up()

    async def _get_worker(self) -> _Worker | None:
        if not self._usable or self.seen < (self.after or 0):
            return None
        if self._worker is None:
            if not spare_core():
                self._usable = False
                return None
            try:
                self._worker = await _Worker.start(self.keys)
            except OSError:
                self._usable = False
                return None
            self.used_worker = True
        return self._worker

    async def _collect(self, block: bool) -> None:
        """Merge what the worker has answered (the oldest, waiting for it when `block`)."""
        while self._sent and (block or self._sent[0].future.done()):
            sent = self._sent.pop(0)
            block = False
            try:
                sent.into.add(await sent.future)
            except WorkerGone:  # the worker died or failed: verify its batches here
                await self._give_up()
                self.local.feed(sent.kind, list(sent.batch), sent.into)

    async def _give_up(self) -> None:
        self._usable = False
        if self._worker is not None:
            worker, self._worker = self._worker, None
            await worker.stop()


def spare_core() -> bool:
    """Whether to start the worker. BRIDGEDOCTOR_DEEP_WORKER overrides the guess: `on` (always,
    given the rows), `off` (never), anything else: when the load leaves a CPU idle."""
    wanted = os.environ.get(WORKER_ENV, "auto")
    if wanted in ("on", "off"):
        return wanted == "on"
    cpus = os.cpu_count() or 1
    return cpus >= 2 and os.getloadavg()[0] <= cpus - 1


# --- the worker process ----------------------------------------------------------------------


def serve() -> None:
    """Read keys, then batches, from stdin; write one line of counts per batch."""
    stdin, stdout = sys.stdin.buffer, sys.stdout
    verifier = BulkVerifier(json.loads(stdin.readline()))
    while header := stdin.readline():
        if os.environ.get(CRASH_ENV):
            os._exit(70)
        h = json.loads(header)
        lengths = array(_LEN_TYPE)
        lengths.frombytes(stdin.read(int(h["n"]) * lengths.itemsize))
        data = stdin.read(int(h["bytes"]))
        if len(lengths) != int(h["n"]) or len(data) != int(h["bytes"]):
            return  # cut short: the parent is gone, or verifies this batch itself
        ends = list(accumulate(lengths))
        rows: list[object] = list(map(data.__getitem__, map(slice, [0, *ends[:-1]], ends)))
        tally = Tally()
        verifier.feed(str(h["kind"]), rows, tally)
        stdout.write(
            json.dumps({"rows": tally.rows, "opened": tally.opened,
                        "bad_plaintext": tally.bad_plaintext, "unknown": tally.unknown,
                        "corrupt": tally.corrupt}) + "\n"
        )  # fmt: skip
        stdout.flush()
