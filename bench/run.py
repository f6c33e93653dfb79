"""Benchmark for issue #11: every figure beside its floor, both measured in the same run.

    .venv/bin/python bench/run.py [--rows 1000000] [--rounds 9] [--only check,deep,reset,memory,helper]

Builds, in a throwaway PostgreSQL cluster (or BRIDGEDOCTOR_TEST_PG): the 13 bridges MDAD knows,
whatsapp's store with ROWS inbound Megolm and ROWS/10 Olm sessions; a whatsapp-only host with a
tenth of that (the 100k memory point) and one with an empty store; and an SQLite fleet of the 11
bridges MDAD can run on SQLite. Then prints each figure, its floor (bench/floors.py), the ratio
and the target. A script that prints figures: it asserts nothing and is not part of the tests.
Ours and the floor alternate, so load on the machine hits both alike; figures are medians.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from bench import bulk, floors  # noqa: E402
from bench.fleet import BIG, Fleet, build_one, build_pg, build_sqlite, key_of  # noqa: E402
from bench.measure import Figure, load, machine, median, paired, run_child  # noqa: E402
from bridgedoctor.diagnose import check, check_all  # noqa: E402
from bridgedoctor.probes import sqlite_read  # noqa: E402
from bridgedoctor.probes.store_scan import FETCH_ROWS  # noqa: E402
from bridgedoctor.reset import crypto  # noqa: E402
from bridgedoctor.reset import run as runner  # noqa: E402
from tests.fixtures import mdad  # noqa: E402
from tests.support.fleet import DB_PASSWORD  # noqa: E402
from tests.support.pg import PgServer, TempCluster, from_env  # noqa: E402
from tests.support.reset_env import fake_systemd  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "bridgedoctor.cli.main"]
SECTIONS = ("check", "deep", "reset", "memory", "helper")


def say(text: str) -> None:
    print(text, flush=True)


def ms(xs: list[float]) -> float:
    return median(xs) * 1000


# --- check ---------------------------------------------------------------------------------


def bench_check(pg: Fleet, empty: Fleet, sq: Fleet, server: PgServer, rounds: int) -> list[Figure]:
    out = []
    host, port = server.host, server.port
    pgb, sqb = pg.floor_bridges(), sq.floor_bridges()
    assert all(asyncio.run(floors.pg_fleet(pgb, host, port))) and all(floors.sqlite_fleet(sqb))
    a, b = paired(
        rounds,
        lambda: asyncio.run(check_all(pg.opts)),
        lambda: asyncio.run(floors.pg_fleet(pgb, host, port)),
    )
    out.append(
        Figure(f"check all, {len(pgb)} bridges, PostgreSQL, in-process", ms(a), ms(b), "ms", 1.5)
    )
    a, b = paired(
        rounds, lambda: asyncio.run(check_all(sq.opts)), lambda: floors.sqlite_fleet(sqb)
    )
    out.append(
        Figure(f"check all, {len(sqb)} bridges, SQLite, in-process", ms(a), ms(b), "ms", 1.5)
    )
    ours_cpu = cpu_ms(rounds, lambda: asyncio.run(check_all(sq.opts)), with_reader=True)
    floor_cpu = cpu_ms(rounds, lambda: floors.sqlite_fleet(sqb))
    NOTES.append(
        f"CPU time of that SQLite check all (no target): {ours_cpu:.1f} ms, this process plus "
        f"the reader's fork server and its readers, vs {floor_cpu:.1f} ms for the floor "
        f"({ours_cpu / floor_cpu:.2f}x): each store read in a process of its own costs CPU that "
        "2 idle cores hide and a busy machine does not"
    )
    for fleet, label, tail in (
        (pg, "PostgreSQL", ["pg", host, str(port)]),
        (sq, "SQLite", ["sqlite"]),
    ):
        spec = Path(tempfile.mkstemp(suffix=".json")[1])
        spec.write_text(
            json.dumps([[str(x.config), str(x.data_dir), x.key] for x in fleet.floor_bridges()])
        )
        ours = [*CLI, "check", "all", "--json", *fleet.cli_args()]
        floor = [sys.executable, str(REPO / "bench/floor_check.py"), str(spec), *tail]
        first = run_child(ours)
        assert first.returncode == 1 and '"status": "broken"' in first.output, first.output[-400:]
        assert run_child(floor).returncode == 0
        a, b = paired(rounds, lambda o=ours: run_child(o), lambda f=floor: run_child(f))
        n = len(fleet.floor_bridges())
        out.append(
            Figure(f"check all, {n} bridges, {label}, whole process", ms(a), ms(b), "ms", 1.5)
        )
        spec.unlink()
    a, b = paired(
        rounds,
        lambda: asyncio.run(check(BIG, pg.opts)),
        lambda: asyncio.run(check(BIG, empty.opts)),
    )
    rows = pg_rows(pg)
    out.append(
        Figure(
            f"check {BIG}, {rows:,} pickled rows vs an empty store",
            ms(a),
            ms(b),
            "ms",
            1.2,
            note="floor = the same check on the empty store",
        )  # fmt: skip
    )
    return out


NOTES: list[str] = []


def cpu_ms(rounds: int, run: Callable[[], object], with_reader: bool = False) -> float:
    """Median CPU time (user + system) of one run: this process's, and with `with_reader` the
    SQLite reader's fork server's and its reaped readers' (/proc; the server outlives a run)."""

    def now() -> float:
        t = time.process_time()
        if with_reader and sqlite_read._SERVER is not None:
            f = Path(f"/proc/{sqlite_read._SERVER.proc.pid}/stat").read_text()
            fields = f.rsplit(")", 1)[1].split()
            t += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return t

    xs = []
    for _ in range(rounds):
        run()  # the fork server's readers are reaped at the next request: count them then
        t0 = now()
        run()
        xs.append(now() - t0)
    return median(xs) * 1000


def pg_rows(f: Fleet) -> int:
    async def go() -> int:
        conn = await connect(f)
        try:
            return await floors.fetch_rows(conn, FETCH_ROWS)
        finally:
            await conn.close()

    return asyncio.run(go())


async def connect(f: Fleet) -> asyncpg.Connection:
    """The big bridge's own database, with its own credentials."""
    assert f.host.pg is not None
    db = f.big_db
    return await asyncpg.connect(
        host=f.host.pg.host, port=f.host.pg.port, user=db, password=DB_PASSWORD, database=db
    )


# --- deep ----------------------------------------------------------------------------------


def bench_deep(pg: Fleet, rounds: int) -> list[Figure]:
    from dataclasses import replace

    rows = pg_rows(pg)
    opts = replace(pg.opts, deep=True)

    def ours() -> None:
        report = asyncio.run(check(BIG, opts))
        assert "crypto_store_verified" in [f.code for f in report.findings], report

    def floor() -> None:
        async def go() -> None:
            conn = await connect(pg)
            try:
                assert await floors.fetch_rows(conn, FETCH_ROWS) == rows
            finally:
                await conn.close()

        asyncio.run(go())

    a, b = paired(rounds, ours, floor, warmup=0)
    say(deep_costs(pg, rows / median(b)))
    return [
        Figure(
            f"check {BIG} --deep, {rows:,} rows",
            rows / median(a),
            rows / median(b),
            "rows/s",
            0.5,
            at_least=True,
            note="floor = fetching the same rows (server-side cursor)",
        )  # fmt: skip
    ]


def deep_costs(pg: Fleet, fetch_rate: float) -> str:
    """Where a row's verification goes, on one core, against what fetching it costs: one batch
    of the big store's inbound sessions, verified over and over in this process (no fetch)."""
    import binascii

    from bridgedoctor import bulk_verify

    async def one_batch() -> list[bytes]:
        conn = await connect(pg)
        try:
            got = await conn.fetch(
                "SELECT session FROM crypto_megolm_inbound_session LIMIT $1", FETCH_ROWS
            )
            return [bytes(r[0]) for r in got]
        finally:
            await conn.close()

    batch = asyncio.run(one_batch())
    verifier = bulk_verify.BulkVerifier([key_of(BIG)])
    padded = [v + b"=" * (-len(v) % 4) for v in batch]
    cts = [binascii.a2b_base64(v)[:-8] for v in padded]
    key = verifier.keys[0]

    def per_row(fn: Callable[[], object], repeat: int = 100) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - t) / repeat / len(batch) * 1e6

    whole = per_row(lambda: verifier.feed("megolm_inbound", batch, bulk_verify.Tally()))
    b64 = per_row(lambda: list(map(binascii.a2b_base64, padded)))
    mac = per_row(lambda: list(key.tags(cts)))
    aes = per_row(lambda: key.first_and_last_blocks(cts))
    return (
        f"deep, per row on one core: verifying {whole:.2f} us (base64 decoding alone {b64:.2f}, "
        f"HMAC {mac:.2f}, first and last AES blocks {aes:.2f}); fetching {1e6 / fetch_rate:.2f} us "
        f"(the floor); half the fetch rate leaves {2e6 / fetch_rate:.2f} us for both"
    )


# --- reset and restore ---------------------------------------------------------------------


def bench_reset(pg: Fleet, tmp: Path, rounds: int) -> list[Figure]:
    (tmp / "systemctl").mkdir()
    sd = fake_systemd(tmp / "systemctl")
    os.environ.update(sd.env())
    sd.set(f"matrix-mautrix-{BIG}.service", "active")
    backups, floor_dir = tmp / "backups", tmp / "floor-copy"
    floor_dir.mkdir()

    async def tables() -> list[str]:
        conn = await connect(pg)
        try:
            return [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables")]
        finally:
            await conn.close()

    targets = crypto.targets(asyncio.run(tables()))

    def copy(fn: Callable, *args: object) -> None:
        async def go() -> None:
            conn = await connect(pg)
            try:
                await fn(conn, *args)
            finally:
                await conn.close()

        asyncio.run(go())

    def empty_tables() -> None:
        async def truncate(conn: asyncpg.Connection) -> None:
            await conn.execute("TRUNCATE " + ", ".join(t for t, w, _ in targets if not w))
            for t, w, _ in targets:
                if w:
                    await conn.execute(f"DELETE FROM {t} WHERE {w}")

        copy(truncate)

    reset_s, to_s, restore_s, from_s = [], [], [], []
    for _ in range(rounds):
        shutil.rmtree(backups, ignore_errors=True)
        t0 = time.perf_counter()
        copy(floors.copy_to, targets, floor_dir)
        t1 = time.perf_counter()
        m = asyncio.run(runner.reset(BIG, "crypto", pg.opts, backups, lambda p: True, "bench"))
        t2 = time.perf_counter()
        copy(floors.copy_from, targets, floor_dir)  # into the tables the reset emptied
        t3 = time.perf_counter()
        empty_tables()
        t4 = time.perf_counter()
        asyncio.run(runner.restore(BIG, m.id, pg.opts, backups, lambda p: True, "bench"))
        t5 = time.perf_counter()
        to_s.append(t1 - t0)
        reset_s.append(t2 - t1)
        from_s.append(t3 - t2)
        restore_s.append(t5 - t4)
    shutil.rmtree(backups, ignore_errors=True)
    shutil.rmtree(floor_dir, ignore_errors=True)
    rows = sum(m.tables[s]["rows"] for s in m.tables)
    return [
        Figure(
            f"crypto reset, {rows:,} rows (backup, verify, clear)",
            median(reset_s),
            median(to_s),
            "s",
            1.5,
            note="floor = COPY ... TO file of the same rows, fsynced",
        ),  # fmt: skip
        Figure(
            f"restore of that backup, {rows:,} rows",
            median(restore_s),
            median(from_s),
            "s",
            1.5,
            note="floor = COPY ... FROM file of the same rows",
        ),  # fmt: skip
    ]


# --- memory --------------------------------------------------------------------------------


def bench_memory(pg: Fleet, mid: Fleet, tmp: Path) -> list[Figure]:
    (tmp / "systemctl-mem").mkdir()
    sd = fake_systemd(tmp / "systemctl-mem")
    env = {**os.environ, **sd.env(), "PYTHONPATH": str(REPO)}
    sd.set(f"matrix-mautrix-{BIG}.service", "active")
    peaks: dict[str, dict[str, float]] = {}
    for name, f in (("100k", mid), ("1M", pg)):
        backups = tmp / f"mem-backups-{name}"
        args = [*f.cli_args(), "--backup-dir", str(backups)]
        deep = run_child([*CLI, "check", BIG, "--deep", *f.cli_args()], env, peak=True)
        reset = run_child([*CLI, "reset", BIG, "--yes", *args], env, peak=True)
        assert reset.returncode == 0, reset.output
        ident = reset.output.split(f"bridgedoctor restore {BIG} ")[1].split()[0]
        restore = run_child([*CLI, "restore", BIG, ident, "--yes", *args], env, peak=True)
        assert restore.returncode == 0, restore.output
        shutil.rmtree(backups, ignore_errors=True)
        peaks[name] = {"deep": deep.peak_rss_mib, "reset": reset.peak_rss_mib,
                       "restore": restore.peak_rss_mib}  # fmt: skip
    return [
        Figure(
            f"peak memory, {what}, 1M rows vs 100k rows",
            peaks["1M"][what],
            peaks["100k"][what],
            "MiB",
            1.2,
            note="floor = the same at a tenth of the rows",
        )  # fmt: skip
        for what in ("deep", "reset", "restore")
    ]


# --- helper under load ---------------------------------------------------------------------


def bench_helper(pg: Fleet, requests: int) -> tuple[list[Figure], list[str]]:
    sockdir = Path(tempfile.mkdtemp(prefix="bdb-", dir="/tmp"))
    token = "bench-" + os.urandom(12).hex()
    (sockdir / "token").write_text(token + "\n")
    (sockdir / "token").chmod(0o600)
    cfg = sockdir / "helper.yaml"
    cfg.write_text(
        f"root: {pg.host.root}\nsystemd_dir: {pg.host.systemd}\ndb_host: '{pg.db_host}'\n"
        f"socket: {sockdir / 'h.sock'}\ntoken_file: {sockdir / 'token'}\n"
        f"backup_dir: {sockdir / 'backups'}\nmax_concurrent: 4\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "bridgedoctor.helper", "--config", str(cfg)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    path = str(sockdir / "h.sock")
    try:
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.05)

        def ask(op: str, bridge: str | None = None, **extra: object) -> tuple[dict, float]:
            body: dict[str, object] = {"v": 1, "token": token, "op": op, **extra}
            if bridge:
                body["bridge"] = bridge
            t0 = time.perf_counter()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                s.sendall(json.dumps(body).encode() + b"\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return json.loads(data), time.perf_counter() - t0

        def rss() -> float:
            with open(f"/proc/{proc.pid}/status") as f:
                kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            return kib / 1024

        mix = [("list", None), ("check", "signal"), ("list", None), ("check", "whatsapp")]
        # whatsapp is the 1M-row store: a plain check must cost what it costs on any store.
        warm = min(2000, requests // 5)  # the allocator and caches settle in the first ones
        for i in range(warm):
            assert ask(*mix[i % len(mix)])[0]["ok"]
        after_warm = rss()
        samples = []
        t0 = time.perf_counter()
        errors = 0

        def worker(n: int, k: int) -> None:
            nonlocal errors
            for i in range(n):
                if not ask(*mix[(i + k) % len(mix)])[0]["ok"]:
                    errors += 1

        per = (requests - warm) // 4
        threads = [threading.Thread(target=worker, args=(per, k)) for k in range(4)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            samples.append(rss())
            time.sleep(1)
        for t in threads:
            t.join()
        took = time.perf_counter() - t0
        end = rss()
        # At max_concurrent (4): 12 deep checks of the 1M-row store at once.
        results: list[tuple[dict, float]] = []

        def one() -> None:
            results.append(ask("check", BIG, deep=True))

        burst = [threading.Thread(target=one) for _ in range(12)]
        for t in burst:
            t.start()
        for t in burst:
            t.join()
        ok = sorted(s for r, s in results if r["ok"])
        busy = sorted(s for r, s in results if not r["ok"] and r["error"]["code"] == "busy")
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(sockdir, ignore_errors=True)
    figures = [
        # Flat means: no growth once settled. The allocator's arenas and the caches fill over
        # the first thousands of requests (measured: settled by a quarter of the run), so the
        # figure is the end against the first quarter; the RSS after the warm-up is the note.
        Figure(
            f"helper RSS after {requests:,} requests vs at a quarter",
            end,
            quarters(samples + [end])[0],
            "MiB",
            1.2,
            note=f"after {warm:,}: {after_warm:.1f} MiB; peak {max(samples + [end]):.1f} MiB; "
            f"{errors} errors; RSS by quarter: "
            + ", ".join(f"{x:.1f}" for x in quarters(samples + [end])),
        )  # fmt: skip
    ]
    lines = [
        f"helper: {requests - warm:,} requests from 4 clients in {took:.1f} s "
        f"({(requests - warm) / took:,.0f}/s; list, check signal, check {BIG} "
        f"(the {pg_rows(pg):,}-row store))",
        f"helper at max_concurrent=4, 12 simultaneous deep checks of the big store: "
        f"{len(ok)} answered (median {median(ok):.2f} s), {len(busy)} refused `busy` at once "
        f"(median {median(busy) * 1000:.1f} ms), {12 - len(ok) - len(busy)} other"
        if ok and busy
        else f"helper burst: {len(ok)} ok, {len(busy)} busy",
    ]
    return figures, lines


def quarters(samples: list[float]) -> list[float]:
    """The samples at 25, 50, 75 and 100 % of the run: growing or settled?"""
    return [samples[max(0, len(samples) * q // 4 - 1)] for q in (1, 2, 3, 4)]


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rows", type=int, default=1_000_000, help="inbound Megolm sessions in the big store"
    )
    ap.add_argument("--rounds", type=int, default=9, help="paired rounds for the quick figures")
    ap.add_argument(
        "--heavy-rounds", type=int, default=3, help="paired rounds for deep, reset, restore"
    )
    ap.add_argument("--requests", type=int, default=20_000, help="requests sent to the helper")
    ap.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS)
    )
    args = ap.parse_args()
    only = set(args.only.split(","))
    for line in machine():
        say(line)
    # As an install does (pip compiles the bytecode): with PYTHONDONTWRITEBYTECODE set, as on
    # CI and the dev machines, every whole-process run would compile our sources anew, while
    # the floor's libraries come compiled from their wheels.
    for tree in ("bridgedoctor", "bench"):
        compileall.compile_dir(REPO / tree, quiet=1)
    say("bytecode: bridgedoctor/ and bench/ compiled first, as an install does")
    say(f"before: {load()}")
    server = from_env()
    cluster = None
    if server is None:
        cluster = TempCluster()
        server = cluster.start()
    figures: list[Figure] = []
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="bd-bench-"))
    try:
        say(
            f"PostgreSQL {pg_version(server)} (fsync off, throwaway cluster)"
            if cluster
            else "PostgreSQL from BRIDGEDOCTOR_TEST_PG"
        )
        t0 = time.perf_counter()
        pg = build_pg(tmp, server, args.rows)
        mid = build_one(tmp, server, "mid", args.rows // 10, "m_")
        empty = build_one(tmp, server, "empty", 0, "e_")
        sq = build_sqlite(tmp)
        say(
            f"built in {time.perf_counter() - t0:.0f} s: {len(mdad.BRIDGES)} PostgreSQL bridges "
            f"({BIG}: {args.rows:,} inbound Megolm + {args.rows // 10:,} Olm sessions), "
            f"{BIG} with {args.rows // 10:,} + {args.rows // 100:,}, {BIG} with an empty store, "
            f"{len(sq.host.stores)} SQLite bridges"
        )
        say(
            f"pickles: {bulk.POOL} genuine python-olm pickles per kind, their bytes repeated under "
            "distinct session ids (identical bytes verify identically; making 1M takes minutes)"
        )
        sections: list[tuple[str, Callable[[], list[Figure]]]] = [
            ("check", lambda: bench_check(pg, empty, sq, server, args.rounds)),
            ("deep", lambda: bench_deep(pg, args.heavy_rounds)),
            ("reset", lambda: bench_reset(pg, tmp, args.heavy_rounds)),
            ("memory", lambda: bench_memory(pg, mid, tmp)),
        ]
        for name, measure in sections:
            if name in only:
                for fig in measure():  # each section's figures as soon as they are measured
                    say(fig.line())
                    figures.append(fig)
        notes += NOTES
        if "helper" in only:
            f, lines = bench_helper(pg, args.requests)
            for fig in f:
                say(fig.line())
            figures += f
            notes += lines
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if cluster:
            cluster.stop()
    say("")
    say("summary (medians; ratio = figure / floor):")
    for fig in figures:
        say(fig.line())
    for line in notes:
        say(line)
    say(f"after: {load()}")
    say(f"{sum(f.ok for f in figures)} of {len(figures)} figures within target")
    return 0


def pg_version(server: PgServer) -> str:
    async def go() -> str:
        conn = await asyncpg.connect(server.dsn())
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    return asyncio.run(go())


if __name__ == "__main__":
    raise SystemExit(main())
