"""The asyncio Unix-socket server: one request line in, one response line out, per connection."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import signal
import time
import traceback
from typing import Any

from ..apply import run as apply_run
from ..apply.record import FINAL as APPLY_FINAL
from ..apply.record import ApplyRecord
from ..knowledge import Knowledge, load
from ..protocol import (
    E_BAD_REQUEST,
    E_BUSY,
    E_INTERNAL,
    E_TIMEOUT,
    E_UNAUTHORIZED,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    MUTATING,
    ProtocolError,
    Request,
    decode_request,
    encode_progress,
    encode_response,
)
from ..reset.progress import Sink
from ..reset.recover import recover
from . import listen, ops, reset_ops
from .audit import Entry, audit_log, log
from .config import HelperConfig
from .peer import Peer, credentials

INTERNAL_MESSAGE = "The helper hit an unexpected error; its log on the host has the details."


def _write_progress(writer: asyncio.StreamWriter, line: bytes) -> None:
    if not writer.is_closing():  # a client gone mid-reset: the reset goes on regardless
        writer.write(line)


def _applied(r: ApplyRecord) -> tuple[bool, str]:
    """An apply's recovery as a reset's reads (reset/recover.Recovered): finished, and what."""
    why = f" ({r.error})" if r.error else ""
    sentence = f"the interrupted apply {r.id} of {r.bridge} was finished: {r.state}{why}."
    return r.state in APPLY_FINAL, sentence


class Helper:
    def __init__(self, cfg: HelperConfig, kb: Knowledge | None = None) -> None:
        self.cfg = cfg
        self.kb = kb or load()
        # Counts requests being worked on; a full semaphore means "busy", never a queue.
        self.slots = asyncio.Semaphore(cfg.max_concurrent)
        self._token = cfg.token.encode()
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.recover()
        sock = listen.bind(self.cfg)
        self._inode = os.stat(self.cfg.socket).st_ino
        # limit bounds readuntil(): a line longer than MAX_REQUEST_BYTES is refused unread.
        self._server = await asyncio.start_unix_server(
            self._connection, sock=sock, limit=MAX_REQUEST_BYTES
        )
        log.info("listening on %s (max_concurrent=%d)", self.cfg.socket, self.cfg.max_concurrent)

    async def recover(self) -> None:
        """Finish or roll back any reset, restore or apply a crash interrupted, before serving.
        Skipped when resets are off: the unit may then lack the rights, and the host CLI
        recovers at its next reset, restore or apply."""
        if not self.cfg.allow_reset:
            return
        root = self.cfg.backup_dir

        async def resets() -> list[tuple[bool, str]]:
            return [(r.finished, r.sentence) for r in await recover(root)]

        async def applies() -> list[tuple[bool, str]]:
            return [_applied(a) for a in await apply_run.recover(root)]

        # Each kind on its own: one that raises (the applies' lock on a read-only disk) must
        # not hide what the other found and did.
        for kind, run in (("resets", resets), ("applies", applies)):
            try:
                done = await reset_ops.in_worker(run)
            except Exception as e:  # noqa: BLE001 - checks must still be served; say what is left
                log.error("could not recover interrupted %s in %s: %s", kind, root, e)
                continue
            for finished, sentence in done:
                if finished:
                    log.warning("recovered: %s", sentence)
                else:
                    log.error("not recovered yet: %s", sentence)

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), remove the socket."""
        if self._server is not None:
            self._server.close()
        grace = self.cfg.request_timeout + 2 * self.cfg.read_timeout
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        listen.unlink_if_ours(self.cfg.socket, self._inode)
        log.info("stopped")

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await self.close()

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        started = time.monotonic()
        peer = credentials(writer.get_extra_info("socket"))
        entry = Entry(uid=peer.uid if peer else None, pid=peer.pid if peer else None)
        logged = False
        try:
            response = await self._respond(reader, writer, peer, entry)
            # Log before sending: once the client sees the answer, its audit line exists.
            audit_log.info(entry.line((time.monotonic() - started) * 1000))
            logged = True
            await self._send(writer, response)
        finally:
            if not logged:  # cancelled at shutdown: still exactly one line
                entry.result = entry.result if entry.result != "-" else "cancelled"
                audit_log.info(entry.line((time.monotonic() - started) * 1000))

    async def _respond(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer | None,
        entry: Entry,
    ) -> bytes:
        try:
            response = encode_response(await self._answer(reader, writer, peer, entry))
        except ProtocolError as e:
            entry.result = e.code
            return encode_response(error=e)
        except Exception as e:  # noqa: BLE001 - any bug becomes a generic answer, never a crash
            entry.result = E_INTERNAL
            self._log_internal(e)
            return encode_response(error=ProtocolError(E_INTERNAL, INTERNAL_MESSAGE))
        if len(response) > MAX_RESPONSE_BYTES:
            entry.result = E_INTERNAL
            log.error("a response of %d bytes exceeds the protocol limit", len(response))
            return encode_response(error=ProtocolError(E_INTERNAL, INTERNAL_MESSAGE))
        return response

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer | None,
        entry: Entry,
    ) -> dict[str, Any]:
        line = await self._read_line(reader)
        allowed = self.cfg.allowed_uids
        # Checked after the (bounded) read but before parsing: answering before the client has
        # written would make its write fail with EPIPE, and it would never see this answer.
        if allowed is not None and (peer is None or peer.uid not in allowed):
            raise ProtocolError(E_UNAUTHORIZED, "This user may not use the helper.")
        req = decode_request(line)
        entry.op, entry.bridge = req.op, req.bridge or "-"
        # surrogatepass: JSON may carry lone surrogates, which plain UTF-8 encoding rejects.
        if not hmac.compare_digest(req.token.encode("utf-8", "surrogatepass"), self._token):
            raise ProtocolError(E_UNAUTHORIZED, "The token is wrong.")
        if self.slots.locked():
            raise ProtocolError(E_BUSY, "The helper is busy with other checks; try again soon.")
        entry.by = req.requested_by or "-"
        # No timeout for a reset or restore: stopping one half-way is worse than a slow one (its
        # thread would go on anyway). The client waits with its own, longer timeout.
        limit: float | None = self.cfg.deep_timeout if req.deep else self.cfg.request_timeout
        if req.op in MUTATING:
            limit = None
        async with self.slots:
            try:
                result, entry.result = await asyncio.wait_for(
                    ops.run(req, self.cfg, self.kb, self._progress(req, writer)), limit
                )
            except asyncio.TimeoutError:  # not yet the builtin on Python 3.10
                raise ProtocolError(
                    E_TIMEOUT, "The check took too long and was stopped."
                ) from None
        return result

    def _progress(self, req: Request, writer: asyncio.StreamWriter) -> Sink | None:
        """For a client that asked: progress lines on its connection, written from whatever
        thread runs the operation (the reset's worker), through the loop."""
        if not req.progress:
            return None
        loop = asyncio.get_running_loop()

        def send(state: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(_write_progress, writer, encode_progress(state))

        return send

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.readuntil(b"\n"), self.cfg.read_timeout)
        except asyncio.IncompleteReadError as e:
            return e.partial  # no newline before EOF: decode_request calls it truncated
        except asyncio.LimitOverrunError:
            raise ProtocolError(E_BAD_REQUEST, "The request is too large.") from None
        except asyncio.TimeoutError:  # not yet the builtin on Python 3.10
            raise ProtocolError(E_TIMEOUT, "No request arrived in time.") from None

    async def _send(self, writer: asyncio.StreamWriter, response: bytes) -> None:
        try:
            writer.write(response)
            # A client that stops reading must not pin this task: bound the flush too.
            await asyncio.wait_for(writer.drain(), self.cfg.read_timeout)
        except (OSError, asyncio.TimeoutError):
            log.debug("client went away before the answer was sent")
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self.cfg.read_timeout)

    def _log_internal(self, e: BaseException) -> None:
        # The traceback helps the admin; the token is the one secret the helper holds, so scrub it.
        text = "".join(traceback.format_exception(e)).replace(self.cfg.token, "<token>")
        log.error("internal error answering a request:\n%s", text.rstrip())
