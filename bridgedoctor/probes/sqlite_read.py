"""Read a bridge's SQLite store in a child process that can be killed.

The store is a file the bridge's container writes while we read it, and SQLite opens it by name
(it even resolves symlinks to a path string first), so no descriptor trick pins what it opens. A
FIFO swapped in at the right moment would block the opening thread forever; a crafted file is
parsed by SQLite's C code. So the read happens in a short-lived child:

- limits first: address space, CPU time, few descriptors, no core dump;
- the file is checked like any bridge file (probes/bridgefile.py: inside the bridge directory,
  no symlink, regular, one link, owner) and kept open, and so are its -wal and -shm if present;
- after reading, every file SQLite holds open must be one of those checked inodes (the store, or
  its -wal/-shm by their own names), else the answer is thrown away;
- the parent kills the child when it takes too long, so nothing of ours is left blocked.

The child (probes/sqlite_child.py) prints one JSON object; the parent turns it back into
DbFacts or a ProbeError.

Each read is a fresh fork of one fork server per process (probes/sqlite_zygote.py): an interpreter
that never opens a store itself, started at the first read and kept for the process's life, so a
helper's checks reuse it. Each fork runs under its own limits and deadline exactly as above, and
the server kills a fork that outlives its deadline even if we stopped waiting for it. Starting
an interpreter per store would cost several times the read itself; if the server fails, it is
started again, and after MAX_SERVER_FAILURES in a row each read gets an interpreter of its own. A check
hands its store to a reader (`start`) as soon as the config names it, and takes the answer
(`Read.result`) after its other work: a fleet's stores are read while the next configs parse.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..facts import DbFacts, ProbeError, StoredAccount

if TYPE_CHECKING:  # the verifier loads with --deep only
    from ..bulk_verify import Tally

TIMEOUT = 20.0
SCAN_TIMEOUT = 900.0  # --deep reads every row; the caller's own deadline usually comes first
MAX_OUTPUT = 8 * 1024 * 1024
CHILD = "bridgedoctor.probes.sqlite_child"
ZYGOTE = "bridgedoctor.probes.sqlite_zygote"


async def probe(path: Path, base: Path, timeout: float = TIMEOUT) -> DbFacts | ProbeError:
    """Read `path` (inside `base`) in a child; a ProbeError if it refuses, fails or hangs."""
    return await (await start(path, base, timeout)).result()


async def start(path: Path, base: Path, timeout: float = TIMEOUT) -> Read:
    """The read of `path` handed to a reader now; its answer comes with `Read.result`. A
    check starts it as soon as the config names the store, and the reader works while the
    check (and a fleet's other bridges) go on. At most MAX_CHILDREN reads are started and
    not yet finished per event loop (each reader holds its own memory, and the helper's unit
    caps the memory and tasks of all of them together): past that, this waits for a slot.
    Whoever starts a read finishes it: `result`, or `close` to give it up."""
    sem = _slots()
    await sem.acquire()
    read = Read(path, base, timeout, sem)
    try:
        read.send()
    except BaseException:
        read.close()
        raise
    return read


async def scan(
    path: Path, base: Path, keys: Sequence[str], timeout: float = SCAN_TIMEOUT
) -> dict[str, Tally] | ProbeError:
    """`check --deep` on SQLite: every pickled row through the bulk verifier, in the child.
    The keys go through the child's stdin (never its argv, which every local user can read)."""
    from ..bulk_verify import Tally

    out = await _run(path, base, timeout, "scan", json.dumps(list(keys)).encode())
    if isinstance(out, ProbeError):
        return out
    return {
        kind: Tally(
            rows=t["rows"],
            opened={int(k): v for k, v in t["opened"].items()},
            bad_plaintext={int(k): v for k, v in t["bad_plaintext"].items()},
            unknown=t["unknown"],
            corrupt=t["corrupt"],
        )
        for kind, t in out.items()
    }


MAX_CHILDREN = 4
_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slots() -> asyncio.Semaphore:
    # One semaphore per loop: reset plans run on their own loop in a worker thread.
    loop = asyncio.get_running_loop()
    sem = _SLOTS.get(loop)
    if sem is None:
        sem = _SLOTS[loop] = asyncio.Semaphore(MAX_CHILDREN)
    return sem


async def _run(
    path: Path, base: Path, timeout: float, job: str, stdin: bytes
) -> dict[str, Any] | ProbeError:
    async with _slots():
        return await _child(path, base, timeout, job, stdin)


class Read:
    """One store's read, handed to a fork of the server (or, when there is none, to a child
    of its own). It runs as a task of its own, which holds a slot until it ends: whether or not
    anyone awaits `result`, the slot comes back, at the latest at the read's deadline."""

    def __init__(self, path: Path, base: Path, timeout: float, slot: asyncio.Semaphore) -> None:
        self.path, self.base, self.timeout = path, base, timeout
        self._slot: asyncio.Semaphore | None = slot
        self._task: asyncio.Future[DbFacts | ProbeError] | None = None

    def send(self) -> None:
        server, pipe = _server(), None
        if server is not None:
            r, w = os.pipe()
            pipe = os.fdopen(r, "rb", buffering=0)
            try:
                sent = server.request(self.path, self.base, self.timeout, w)
            finally:
                os.close(w)  # the server has its own copy: the reader's exit ends our reading
            if not sent:
                pipe.close()
                _retire(server)
                server = pipe = None
        self._task = asyncio.ensure_future(self._read(server, pipe))
        # Not the coroutine's `finally`: a task cancelled before its first step never runs it.
        self._task.add_done_callback(lambda _: self._end(pipe))

    async def _read(self, server: _Server | None, pipe: Any) -> DbFacts | ProbeError:
        out = None
        if server is not None:
            out = await _forked(server, pipe, self.path, self.timeout)
        if out is None:
            out = await _child(self.path, self.base, self.timeout, "facts", b"")
        return out if isinstance(out, ProbeError) else _decode(out)

    def _end(self, pipe: Any) -> None:
        if pipe is not None:
            pipe.close()
        self._release()

    async def result(self) -> DbFacts | ProbeError:
        assert self._task is not None
        return await self._task

    def close(self) -> None:
        """Given up (a check stopped at its deadline): the read is stopped and its slot free
        now, not when the task has ended (on Python 3.11, wait_for can swallow a cancel that
        comes as its wait ends, and the read then runs on to its own deadline). A reader whose
        pid we had not read yet ends when it writes to the closed pipe, or at its own alarm,
        and the server reaps it."""
        if self._task is not None:
            self._task.cancel()
        self._release()

    def _release(self) -> None:
        if self._slot is not None:
            self._slot.release()
            self._slot = None


FORK_TIMEOUT = 10.0  # for a fork's first line (its pid)
CLOSE_WAIT = 0.5
MAX_SERVER_FAILURES = 3  # in a row; then every read starts a child of its own, as without a server


class _Server:
    """The parent's side of probes/sqlite_zygote.py: a request is one message on a socket, with
    the write end of a pipe of ours; the fork's first line on that pipe is its pid (written
    before it reads anything of the bridge's), then its answer. No reply comes on the
    socket, so requests from any thread or event loop need no lock and cannot be mixed up."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock

    @classmethod
    def start(cls) -> _Server | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = (
            f"import sys; sys.path[:0] = {_import_path()!r}; from {ZYGOTE} import serve; serve()"
        )
        try:
            # Started here and now, not in a task: the caller goes on parsing configs without
            # yielding to the loop, and the server's imports run meanwhile.
            proc = subprocess.Popen(
                [sys.executable, *_FLAGS, "-c", code], cwd="/", stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()
        ours.settimeout(FORK_TIMEOUT)  # a send waits only if the server stopped reading
        return cls(proc, ours)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, path: Path, base: Path, timeout: float, w: int) -> bool:
        msg = json.dumps([str(base), str(path), timeout]).encode()
        try:
            socket.send_fds(self.sock, [msg], [w])
        except OSError:
            return False
        return True

    def reap(self, pid: int) -> None:
        # OSError: the server is gone, and killed its children as it went.
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps(["reap", pid]).encode())

    def close(self) -> None:
        """End of input: the server kills every reader it still has and exits (within a few
        milliseconds; killed if it has not after CLOSE_WAIT, its readers then end at their
        alarms or, waiting, at their own end of input)."""
        self.sock.close()
        try:
            self.proc.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_SERVER: _Server | None = None
_SERVER_LOCK = threading.Lock()  # reset plans read on a loop of their own in a worker thread
_failures = 0
_AT_EXIT: list[object] = []


def _server() -> _Server | None:
    """The process's one fork server, started (again) when it is not running; None once it
    failed MAX_SERVER_FAILURES times in a row. It lives as long as this process: a helper's fleet
    checks reuse it, and at exit its end of input stops it."""
    global _SERVER, _failures
    with _SERVER_LOCK:
        if _SERVER is not None and _SERVER.alive():
            return _SERVER
        if _SERVER is not None:
            _SERVER.close()
            _SERVER = None
            _failures += 1
        if _failures >= MAX_SERVER_FAILURES:
            return None
        _SERVER = _Server.start()
        if _SERVER is None:
            _failures += 1
        elif not _AT_EXIT:
            _AT_EXIT.append(atexit.register(stop))  # its readers go with us, none left
        return _SERVER


def stop() -> None:
    """Stop this process's fork server and every reader it still has; the next read starts a
    new one (and may again after earlier failures)."""
    global _SERVER, _failures
    with _SERVER_LOCK:
        server, _SERVER = _SERVER, None
        _failures = 0
    if server is not None:
        server.close()


def _forked_once() -> None:
    """The server forked a reader: failures before this one no longer count (a helper runs
    for months, and three deaths spread over them must not end the server for good)."""
    global _failures
    with _SERVER_LOCK:
        _failures = 0


def _retire(server: _Server) -> None:
    """A server that did not answer as it should is not used again (a new one starts)."""
    global _SERVER, _failures
    with _SERVER_LOCK:
        if _SERVER is server:
            _SERVER = None
            _failures += 1
    server.close()


async def _forked(
    server: _Server, pipe: Any, path: Path, timeout: float
) -> dict[str, Any] | ProbeError | None:
    """A fork's answer on `pipe`; None when the server did not fork (the caller then starts a
    child of its own, and the server is not used again)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_OUTPUT + 1)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        try:
            pid = int(await asyncio.wait_for(reader.readuntil(b"\n"), FORK_TIMEOUT))
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            _retire(server)  # no fork: as it exits, the server kills any child it made
            return None
        _forked_once()
        try:
            out = await asyncio.wait_for(_read_all(reader), timeout)
        except asyncio.TimeoutError:
            return _too_long(path, timeout)
        finally:
            server.reap(pid)
        return _answer(path, out, None)
    finally:
        transport.close()


def _too_long(path: Path, timeout: float) -> ProbeError:
    return ProbeError(
        "db_unreachable",
        f"reading {path} took longer than {timeout:.0f} s and was stopped (a FIFO or a "
        "file system that hangs?).",
    )


def _answer(path: Path, out: bytes, status: int | None) -> dict[str, Any] | ProbeError:
    """The child's JSON answer; `status` its exit status when known (the fork server's
    children are reaped there: an answer that is not whole JSON says enough)."""
    try:
        d = json.loads(out) if status in (0, None) and len(out) <= MAX_OUTPUT else None
    except ValueError:
        d = None
    if not isinstance(d, dict) or not ("error" in d or "result" in d):
        why = f"exited with status {status}" if status else "ended without an answer"
        return ProbeError("db_unreachable", f"reading {path} failed (the reader {why}).")
    if "error" in d:
        return ProbeError(str(d["error"]), str(d["message"]))
    return d["result"]


async def _child(
    path: Path, base: Path, timeout: float, job: str, stdin: bytes
) -> dict[str, Any] | ProbeError:
    code = f"import sys; sys.path[:0] = {_import_path()!r}; from {CHILD} import main; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *_FLAGS,
        "-c",
        code,
        str(base),
        str(path),
        job,
        cwd="/",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        out = await asyncio.wait_for(_read_all(proc.stdout), timeout)
        await asyncio.wait_for(proc.wait(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError, BrokenPipeError) as e:
        proc.kill()
        await proc.wait()
        if isinstance(e, asyncio.CancelledError):
            raise
        return _too_long(path, timeout)
    return _answer(path, out, proc.returncode)


# -I: no environment, no user site, no current directory on the path (it could be a bridge's
# data directory). -S: no site module either (no .pth files run, and a fleet check waits for
# this start); the directories to import from are handed over explicitly instead.
_FLAGS = ("-I", "-S")


def _import_path() -> list[str]:
    """The directories this process imports from (absolute only), and the one holding our own
    package (an editable install finds it through a .pth hook, which -S does not run)."""
    ours = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [ours] + [p for p in sys.path if os.path.isabs(p) and p != ours]


async def _read_all(stream: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total <= MAX_OUTPUT:
        chunk = await stream.read(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _decode(d: dict[str, Any]) -> DbFacts:
    return DbFacts(
        kind="sqlite",
        location=d["location"],
        tables=frozenset(d["tables"]),
        versions={k: int(v) for k, v in d["versions"].items()},
        owner=d["owner"],
        accounts=tuple(
            StoredAccount(a["account_id"], a["device_id"], base64.b64decode(a["pickle"]))
            for a in d["accounts"]
        ),
        samples={k: tuple(base64.b64decode(x) for x in v) for k, v in d["samples"].items()},
    )
