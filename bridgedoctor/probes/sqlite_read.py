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

A fleet check (`check all`, inside `fleet()`) starts one interpreter for all its stores: a fork
server that never opens a store itself and forks one fresh child per store, each under its own
limits and deadline exactly as above. Starting an interpreter per store would cost several
times the read itself; if the fork server fails, each read gets an interpreter of its own again.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import os
import socket
import sys
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..facts import DbFacts, ProbeError, StoredAccount

if TYPE_CHECKING:  # the verifier loads with --deep only
    from ..bulk_verify import Tally

TIMEOUT = 20.0
SCAN_TIMEOUT = 900.0  # --deep reads every row; the caller's own deadline usually comes first
MAX_OUTPUT = 8 * 1024 * 1024
CHILD = "bridgedoctor.probes.sqlite_child"


async def probe(path: Path, base: Path, timeout: float = TIMEOUT) -> DbFacts | ProbeError:
    """Run the child on `path` (inside `base`); a ProbeError if it refuses, fails or hangs.
    At most MAX_CHILDREN run at once per event loop: each holds its own memory, and the
    helper's unit caps the memory and tasks of all of them together."""
    out = await _run(path, base, timeout, "facts", b"")
    return out if isinstance(out, ProbeError) else _decode(out)


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
        forker = _FLEET.get()
        if forker is not None and job == "facts":
            out = await forker.read(path, base, timeout)
            if out is not None:
                return out
        return await _child(path, base, timeout, job, stdin)


@asynccontextmanager
async def fleet() -> AsyncIterator[None]:
    """Within: `probe` forks its child from one fork server for the whole fleet (started at
    the first SQLite store, gone at the end, with any child it still has)."""
    forker = _Forker()
    token = _FLEET.set(forker)
    try:
        yield
    finally:
        _FLEET.reset(token)
        await forker.close()


FORK_TIMEOUT = 10.0  # for the fork server to answer a child's pid


class _Forker:
    """The parent's side of sqlite_child.zygote: one request at a time (a fork is quick), the
    child's answer read from a pipe of ours. `read` returns None when the server cannot be
    used, and the caller starts a child of its own."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.lock = asyncio.Lock()
        self.broken = False

    async def _start(self) -> bool:
        if self.broken:
            return False
        if self.proc is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            code = (
                f"import sys; sys.path[:0] = {_import_path()!r}; "
                f"from {CHILD} import zygote; zygote()"
            )
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    sys.executable, *_FLAGS, "-c", code, cwd="/", stdin=theirs.fileno(),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            except OSError:
                ours.close()
                self.broken = True
                return False
            finally:
                theirs.close()
            ours.settimeout(FORK_TIMEOUT)
            self.sock = ours
        return True

    async def read(
        self, path: Path, base: Path, timeout: float
    ) -> dict[str, Any] | ProbeError | None:
        r, w = os.pipe()
        pipe = os.fdopen(r, "rb", buffering=0)
        try:
            try:
                async with self.lock:
                    pid = await self._fork(path, base, w)
            finally:
                os.close(w)  # the server has its own copy: the child's exit ends our reading
            if pid is None:
                return None
            try:
                out = await asyncio.wait_for(_read_pipe(pipe), timeout)
            except asyncio.TimeoutError:
                return _too_long(path, timeout)
            finally:
                self._reap(pid)
            return _answer(path, out, None)
        finally:
            pipe.close()

    async def _fork(self, path: Path, base: Path, w: int) -> int | None:
        try:
            if not await self._start():
                return None
            assert self.sock is not None and self.proc is not None and self.proc.stdout
            socket.send_fds(self.sock, [json.dumps([str(base), str(path)]).encode()], [w])
            line = await asyncio.wait_for(self.proc.stdout.readline(), FORK_TIMEOUT)
            return int(line)
        except (OSError, ValueError, asyncio.TimeoutError):
            self.broken = True
            return None
        except asyncio.CancelledError:
            self.broken = True  # its pid line may come later: no more requests after it
            raise

    def _reap(self, pid: int) -> None:
        if self.sock is not None:
            try:
                self.sock.send(json.dumps(["reap", pid]).encode())
            except OSError:
                self.broken = True  # the server is gone: its end of input killed the child

    async def close(self) -> None:
        if self.sock is not None:
            self.sock.close()  # end of input: the server kills what it still has and exits
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), FORK_TIMEOUT)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


_FLEET: contextvars.ContextVar[_Forker | None] = contextvars.ContextVar(
    "bridgedoctor_sqlite_fleet", default=None
)


async def _read_pipe(pipe: Any) -> bytes:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_OUTPUT + 1)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await _read_all(reader)
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
