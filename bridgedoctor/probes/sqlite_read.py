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

The child prints one JSON object; the parent turns it back into DbFacts or a ProbeError.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..facts import DbFacts, ProbeError, StoredAccount
from . import bridgefile
from .collect import SQLITE_TABLES_SQL, batch_sql, facts_of, table_names

TIMEOUT = 20.0
MAX_OUTPUT = 8 * 1024 * 1024
_LIMITS_MB = 1024
_CPU_SECONDS = 30


async def probe(path: Path, base: Path, timeout: float = TIMEOUT) -> DbFacts | ProbeError:
    """Run the child on `path` (inside `base`); a ProbeError if it refuses, fails or hangs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-m",
        __name__,
        str(base),
        str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        out = await asyncio.wait_for(_read_all(proc.stdout), timeout)
        await asyncio.wait_for(proc.wait(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError) as e:
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
    return _decode(json.loads(out))


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


def _decode(d: dict[str, Any]) -> DbFacts | ProbeError:
    if "error" in d:
        return ProbeError(str(d["error"]), str(d["message"]))
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


def _encode(f: DbFacts) -> dict[str, Any]:
    d = asdict(f)
    d["tables"] = sorted(f.tables)
    d["accounts"] = [
        {"account_id": a.account_id, "device_id": a.device_id,
         "pickle": base64.b64encode(a.pickle).decode()}
        for a in f.accounts
    ]  # fmt: skip
    d["samples"] = {k: [base64.b64encode(x).decode() for x in v] for k, v in f.samples.items()}
    return d


# --- the child ---------------------------------------------------------------------------------


def _limit() -> None:
    import resource

    mb = _LIMITS_MB * 1024 * 1024
    for what, value in (
        (resource.RLIMIT_AS, mb),
        (resource.RLIMIT_CPU, _CPU_SECONDS),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(what, (value, value))


def _held(path: Path, base: Path) -> dict[str, os.stat_result]:
    """Open and check the store and its -wal/-shm; keep them open; their identities by name."""
    rest = bridgefile.inside(path, base)
    dirfd = bridgefile.open_dir(base, rest[:-1], path)
    owner = os.fstat(dirfd).st_uid
    held: dict[str, os.stat_result] = {}
    try:
        for suffix in ("", "-wal", "-shm"):
            name = rest[-1] + suffix
            try:
                fd = bridgefile.openat(dirfd, name, os.O_RDONLY | os.O_NONBLOCK, path, path)
            except bridgefile.Refused as r:
                if suffix and r.code == "missing":
                    continue
                raise
            st = os.fstat(fd)
            bridgefile.check_file(st, Path(f"{path}{suffix}"), owner)
            held[f"{path}{suffix}"] = st  # the descriptor stays open until the child exits
    finally:
        os.close(dirfd)
    return held


def _opened_only(held: dict[str, os.stat_result], path: Path) -> None:
    """Every regular file SQLite has open is the store or its -wal/-shm, checked above (a
    -wal/-shm made since must be a plain file under its own name)."""
    ids = {(st.st_dev, st.st_ino) for st in held.values()}
    seen_store = False
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if not os.path.isabs(target) or not _is_reg(st):
            continue
        ident = (st.st_dev, st.st_ino)
        if ident == (held[str(path)].st_dev, held[str(path)].st_ino):
            seen_store = True
        if ident in ids:
            continue
        if target in (f"{path}-wal", f"{path}-shm") and st.st_nlink == 1:
            continue
        raise bridgefile.Refused(
            "refused", f"{path} changed while it was read; nothing is reported."
        )
    if not seen_store:
        raise bridgefile.Refused(
            "refused", f"{path} changed while it was read; nothing is reported."
        )


def _is_reg(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def _read(path: Path) -> DbFacts:
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5.0)
    try:
        tables = table_names(conn.execute(SQLITE_TABLES_SQL))
        sql = batch_sql(tables, "BLOB")
        rows = conn.execute(sql).fetchall() if sql else []
        _opened_only(_HELD, path)  # while SQLite still holds its descriptors
        return facts_of("sqlite", str(path), tables, rows)
    finally:
        conn.close()


_HELD: dict[str, os.stat_result] = {}


def main(argv: list[str]) -> int:
    _limit()
    base, path = Path(argv[0]), Path(argv[1])
    try:
        _HELD.update(_held(path, base))
        result: dict[str, Any] = _encode(_read(path))
    except bridgefile.Refused as r:
        code = "db_unreachable" if r.code == "missing" else "db_refused"
        message = (
            r.message if r.code != "missing" else f"the SQLite database {path} does not exist."
        )
        result = {"error": code, "message": message}
    except (sqlite3.Error, ValueError, OverflowError, MemoryError) as e:
        result = {"error": "db_unreachable", "message": f"reading {path} failed ({_why(e)})."}
    sys.stdout.write(json.dumps(result))
    return 0


def _why(e: Exception) -> str:
    text = str(e) if isinstance(e, sqlite3.Error) else type(e).__name__
    return text.encode("unicode_escape").decode("ascii")[:120].rstrip(".")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
