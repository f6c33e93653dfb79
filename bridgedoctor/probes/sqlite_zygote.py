"""The fork server of probes/sqlite_read.py: one per process, it never opens a store, it only
forks readers that run sqlite_child.main on one store each.

Requests come on stdin, a SEQPACKET socket: `[base, path, timeout]` with the write end of a
pipe, or `["reap", pid]`. A reader writes its pid as the pipe's first line before it reads
anything of the bridge's (so that line can be trusted), then reads its store under its own
limits exactly as `main` does and answers into the pipe. `reap` kills and reaps it (a pid is
never reused while we have not reaped it, so the parent's kill cannot hit another process). A
reader whose parent stopped waiting before it learnt the pid is ended by its own alarm a little
after its deadline, and reaped at the next request. At end of input every reader still here,
busy or not, is killed, and we exit.

A few readers are forked ahead and wait for their store: each has already run the code a read
runs, on a database in memory and on /dev/null, so that the pages a fork has to copy or map
again on first touch (most of a fresh fork's time) are done before the store is known.
"""

from __future__ import annotations

import gc
import json
import os
import resource  # noqa: F401 - imported once here rather than in every fork (sqlite_child._limit)
import signal
import socket
import sqlite3
import sys
from pathlib import Path

from . import bridgefile, sqlite_child
from .collect import SQLITE_TABLES_SQL, batch_sql, parts_of, table_names

READY = 4  # readers forked ahead (sqlite_read.MAX_CHILDREN run at once per event loop)
_ALARM_GRACE = 2  # seconds after the parent's own deadline (which it reaps at, normally)
_ALARM_MAX = 3600


def serve() -> None:
    # What every fork would otherwise do first, done once: SQLite's own set-up (on a database
    # in memory, never a file), and the collector told to leave the objects we have (a
    # collection in a fork would write to every one of their pages, copying them).
    sqlite3.connect(":memory:").close()
    gc.freeze()
    sock = socket.socket(fileno=0)
    ready: list[tuple[int, socket.socket]] = []
    live: set[int] = set()
    try:
        while True:
            while len(ready) < READY:
                ready.append(_fork_ahead(sock, ready))
            msg, fds, _, _ = socket.recv_fds(sock, 65536, 1)
            if not msg:
                break
            _reap_finished(live)
            req = json.loads(msg)
            if req[0] == "reap":
                pid = int(req[1])
                if pid in live:
                    live.discard(pid)
                    _kill(pid)
                continue
            try:
                live.add(_hand_over(sock, ready, msg, fds[0]))
            finally:
                os.close(fds[0])
    finally:
        for pid, to_reader in ready:
            to_reader.close()
            live.add(pid)
        for pid in live:
            _kill(pid)
    os._exit(0)  # no interpreter teardown: nothing of ours is left to flush


def _hand_over(
    server: socket.socket, ready: list[tuple[int, socket.socket]], msg: bytes, out: int
) -> int:
    """The request to the first reader that takes it (one that died waiting is reaped)."""
    while True:
        pid, to_reader = ready.pop(0) if ready else _fork_ahead(server, ready)
        try:
            socket.send_fds(to_reader, [msg], [out])
            return pid
        except OSError:
            _kill(pid)
        finally:
            to_reader.close()


def _kill(pid: int) -> None:
    """Our child, not yet reaped (so the pid is still its): killed and reaped."""
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _fork_ahead(
    server: socket.socket, ready: list[tuple[int, socket.socket]]
) -> tuple[int, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            # Only its own request socket: with another's end open, that reader would not see
            # our end of input when the server is gone.
            server.close()
            ours.close()
            for _, other in ready:
                other.close()
            _warm_up()
            msg, fds, _, _ = socket.recv_fds(theirs, 65536, 1)
            if msg:
                _read(json.loads(msg), fds[0])
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


def _read(req: list[object], out: int) -> None:
    os.write(out, b"%d\n" % os.getpid())
    signal.alarm(int(min(max(float(str(req[2])), 1.0), _ALARM_MAX)) + _ALARM_GRACE)
    os.dup2(out, 1)  # SIGALRM's default action ends us, even inside SQLite's read
    os.close(out)
    sqlite_child.main([str(req[0]), str(req[1]), "facts"])
    sys.stdout.flush()
    os.close(1)  # the answer is whole: the parent reads its end now, not after our exit


def _warm_up() -> None:
    """The code of a read, on nothing of a bridge's: SQLite on a database in memory, the file
    checks on /dev/null (refused: not a regular file), our open descriptors, an answer."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE version (version INTEGER)")
        tables = table_names(conn.execute(SQLITE_TABLES_SQL))
        parts = parts_of(tables, conn.execute(batch_sql(tables, "BLOB")).fetchall())
    finally:
        conn.close()
    null = Path("/dev/null")
    bridgefile.inside(null, null.parent)
    dirfd = bridgefile.open_dir(null.parent, (), null)
    try:
        fd = bridgefile.openat(dirfd, null.name, os.O_RDONLY | os.O_NONBLOCK, null, null)
        try:
            bridgefile.check_file(os.fstat(fd), null, 0)
        except bridgefile.Refused:
            pass
        finally:
            os.close(fd)
    finally:
        os.close(dirfd)
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
            os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    json.dumps(sqlite_child.encode(null, tables, parts))


def _reap_finished(live: set[int]) -> None:
    for pid in list(live):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            live.discard(pid)
