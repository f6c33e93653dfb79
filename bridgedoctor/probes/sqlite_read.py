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
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..bulk_verify import Tally
from ..facts import DbFacts, ProbeError, StoredAccount

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


async def _child(
    path: Path, base: Path, timeout: float, job: str, stdin: bytes
) -> dict[str, Any] | ProbeError:
    # -I: no environment, no user site, no current directory on the path (it could be a
    # bridge's data directory); our own import path is handed over explicitly instead.
    code = f"import sys; sys.path[:0] = {_import_path()!r}; from {CHILD} import main; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
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
        return ProbeError(
            "db_unreachable",
            f"reading {path} took longer than {timeout:.0f} s and was stopped (a FIFO or a "
            "file system that hangs?).",
        )
    if proc.returncode != 0 or len(out) > MAX_OUTPUT:
        return ProbeError(
            "db_unreachable",
            f"reading {path} failed (the reader exited with status {proc.returncode}).",
        )
    d = json.loads(out)
    if "error" in d:
        return ProbeError(str(d["error"]), str(d["message"]))
    return d["result"]


def _import_path() -> list[str]:
    """The directories this process imports from (absolute only), for the child."""
    return [p for p in sys.path if os.path.isabs(p)]


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
