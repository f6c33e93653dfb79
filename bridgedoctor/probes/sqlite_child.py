"""The child side of probes/sqlite_read.py: one SQLite store read under limits, answered as one
JSON object on stdout. Imports no event loop and nothing heavy (no YAML, no dataclasses, no
typing, not the facts classes): it starts once per read, or once per process as the fork
server (probes/sqlite_zygote.py)."""

from __future__ import annotations

import binascii
import json
import os
import sqlite3
import stat
import sys
from pathlib import Path
from urllib.parse import quote

from . import bridgefile
from .collect import PICKLED, SQLITE_TABLES_SQL, batch_sql, parts_of, table_names

# Not typing's TYPE_CHECKING: the SQLite reader's fork server imports this module, and
# importing typing is a tenth of its start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .collect import Parts

SCAN_ROWS = 2000
_LIMITS_MB = 1024
_CPU_SECONDS = 30
_SCAN_CPU_SECONDS = 900


def encode(path: Path, tables: frozenset[str], parts: Parts) -> dict[str, Any]:
    """The wire form sqlite_read._decode turns back into DbFacts."""
    versions, owner, accounts, samples = parts

    def b64(b: bytes) -> str:  # base64.b64encode without importing base64 (the child's start)
        return binascii.b2a_base64(b, newline=False).decode("ascii")

    return {
        "location": str(path),
        "tables": sorted(tables),
        "versions": versions,
        "owner": owner,
        "accounts": [{"account_id": a, "device_id": d, "pickle": b64(p)} for a, d, p in accounts],
        "samples": {k: [b64(x) for x in v] for k, v in samples.items()},
    }


def _limit(cpu: int) -> None:
    import resource

    mb = _LIMITS_MB * 1024 * 1024
    for what, value in (
        (resource.RLIMIT_AS, mb),
        (resource.RLIMIT_CPU, cpu),
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
            name, named = rest[-1] + suffix, Path(f"{path}{suffix}")
            try:
                fd = bridgefile.openat(dirfd, name, os.O_RDONLY | os.O_NONBLOCK, named, named)
            except bridgefile.Refused as r:
                if suffix and r.code == "missing":
                    continue
                raise
            st = os.fstat(fd)
            bridgefile.check_file(st, named, owner)
            held[str(named)] = st  # the descriptor stays open until the child exits
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
    return stat.S_ISREG(st.st_mode)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5.0)
    # The bridge writes these texts: bytes that are not UTF-8 are replaced, not a failed read
    # (sqlite3's own decoding raises, and the whole store would read as unreachable).
    conn.text_factory = _text
    return conn


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _facts(path: Path) -> dict[str, Any]:
    conn = _connect(path)
    try:
        tables = table_names(conn.execute(SQLITE_TABLES_SQL))
        sql = batch_sql(tables, "BLOB")
        rows = conn.execute(sql).fetchall() if sql else []
        _opened_only(_HELD, path)  # while SQLite still holds its descriptors
        return encode(path, tables, parts_of(tables, rows))
    finally:
        conn.close()


def _scan(path: Path) -> dict[str, Any]:
    from dataclasses import asdict

    from ..bulk_verify import BulkVerifier, Tally

    verifier = BulkVerifier(json.loads(sys.stdin.read()))
    conn = _connect(path)
    try:
        tables = {str(r[0]) for r in conn.execute(SQLITE_TABLES_SQL)}
        out: dict[str, Tally] = {}
        for kind, (table, col) in PICKLED.items():
            if table in tables:
                tally = out[kind] = Tally()
                # Names come from the PICKLED constants, never from the store.
                cur = conn.execute(f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL")
                while rows := cur.fetchmany(SCAN_ROWS):
                    verifier.feed(kind, [r[0] for r in rows], tally)
        _opened_only(_HELD, path)
        return {k: asdict(t) for k, t in out.items()}
    finally:
        conn.close()


_HELD: dict[str, os.stat_result] = {}
_JOBS = {"facts": (_facts, _CPU_SECONDS), "scan": (_scan, _SCAN_CPU_SECONDS)}


def main(argv: list[str] | None = None) -> int:
    base, path, job = list(argv or sys.argv[1:])  # both callers name the job
    run, cpu = _JOBS[job]
    _limit(cpu)
    try:
        _HELD.update(_held(Path(path), Path(base)))
        result: dict[str, Any] = {"result": run(Path(path))}
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
    raise SystemExit(main())
