"""`--deep`'s second process (probes/scan_worker.py), driven directly: a real worker process fed
real pickles, its answers against this process's own verifier."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from bridgedoctor.bulk_verify import BulkVerifier, Tally
from bridgedoctor.probes import scan_worker
from bridgedoctor.probes.scan_worker import Spread, WorkerGone, _Worker, spare_core
from tests.support.store import seal
from tests.test_bulk_verify import KEYS, make


def batch(n: int, kind: str = "megolm_inbound") -> list[bytes]:
    """Rows under each key in turn, one under no key, one that opens under the second key but
    holds no session (an unknown version), one that is no pickle, one empty."""
    rows = [make(kind, KEYS[i % len(KEYS)]) for i in range(n)]
    bad = seal(b"\x00\x00\x00\x07" + b"r" * 200, KEYS[1])
    return [*rows, make(kind, "nobody's key"), bad, b"not base64 !!", b""]


def here(kind: str, rows: list[bytes]) -> Tally:
    t = Tally()
    BulkVerifier(KEYS).feed(kind, list(rows), t)
    return t


async def test_the_worker_answers_each_batch_in_order_as_this_process_would() -> None:
    inbound, outbound = batch(9), batch(5, "megolm_outbound")
    worker = await _Worker.start(KEYS)
    try:
        first = await worker.send("megolm_inbound", inbound)
        second = await worker.send("megolm_outbound", outbound)
        assert await asyncio.wait_for(first, 20) == here("megolm_inbound", inbound)
        assert await asyncio.wait_for(second, 20) == here("megolm_outbound", outbound)
        got = await first
        assert (got.rows, got.opened, got.bad_plaintext) == (13, {0: 3, 1: 2, 2: 2, 3: 2}, {1: 1})
        assert (got.unknown, got.corrupt) == (1, 2)
        # The keys go through stdin, never argv; the process holds no directory of ours.
        cmdline = Path(f"/proc/{worker.proc.pid}/cmdline").read_bytes()
        assert not any(k.encode() in cmdline for k in KEYS if k)
        assert os.readlink(f"/proc/{worker.proc.pid}/cwd") == "/"
        assert worker.waiting == []
    finally:
        await worker.stop()
    assert worker.proc.returncode is not None


async def test_a_worker_that_dies_fails_every_batch_it_had(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(scan_worker.CRASH_ENV, "1")
    worker = await _Worker.start(KEYS)
    try:
        first = await worker.send("megolm_inbound", batch(2))
        with pytest.raises(WorkerGone):
            await asyncio.wait_for(first, 20)
        await asyncio.wait_for(worker.reader, 20)
        assert worker.proc.returncode == 70 or await worker.proc.wait() == 70
    finally:
        await worker.stop()
    assert worker.proc.stdin is not None and worker.proc.stdin.is_closing()


async def test_stopping_a_worker_ends_it_its_reader_and_its_pipe() -> None:
    worker = await _Worker.start(KEYS)
    answer = await worker.send("megolm_inbound", batch(2))
    await worker.stop()
    assert worker.proc.returncode is not None and worker.reader.done()
    assert worker.proc.stdin is not None and worker.proc.stdin.is_closing()
    assert answer.done()  # answered before the kill, or failed by it: never left waiting


async def test_the_worker_runs_no_code_from_the_environment_and_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """It handles the candidate keys: an isolated interpreter (`-I`: no PYTHONPATH, no user
    site, so no sitecustomize planted there), and its errors go nowhere, not into our output."""
    planted = tmp_path / "ran"
    (tmp_path / "sitecustomize.py").write_text(f"open({str(planted)!r}, 'w').close()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    worker = await _Worker.start(KEYS)
    try:
        rows = batch(2)
        assert await asyncio.wait_for(await worker.send("megolm_inbound", rows), 20) == here(
            "megolm_inbound", rows
        )
        assert not planted.exists()
        assert worker.proc.stdin is not None
        worker.proc.stdin.write(b"not a header\n")  # the worker fails on it, with a traceback
        await worker.proc.stdin.drain()
        assert await asyncio.wait_for(worker.proc.wait(), 20) == 1
    finally:
        await worker.stop()
    assert capfd.readouterr().err == ""


async def spread_over(spread: Spread, batches: list[list[bytes]]) -> Tally:
    into = Tally()
    try:
        for rows in batches:
            await spread.feed("megolm_inbound", list(rows), into)
    finally:
        await spread.finish()
    return into


@pytest.mark.parametrize("crash", [False, True])
async def test_batches_shared_with_a_worker_count_as_one_process_alone(
    monkeypatch: pytest.MonkeyPatch, crash: bool
) -> None:
    monkeypatch.setenv(scan_worker.WORKER_ENV, "on")
    if crash:
        monkeypatch.setenv(scan_worker.CRASH_ENV, "1")
    batches = [batch(n) for n in (4, 3, 5, 2, 6, 1, 3)]
    alone = here("megolm_inbound", [r for b in batches for r in b])
    spread = Spread(KEYS, after=0)
    assert await spread_over(spread, batches) == alone
    assert spread.used_worker and spread.seen == alone.rows
    assert spread._worker is None  # gone once finished


async def test_no_worker_before_enough_rows_or_when_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = [batch(3) for _ in range(4)]
    alone = here("megolm_inbound", [r for b in batches for r in b])
    monkeypatch.setenv(scan_worker.WORKER_ENV, "on")
    few = Spread(KEYS)  # WORKER_AFTER rows: far more than these
    assert await spread_over(few, batches) == alone and not few.used_worker
    late = Spread(KEYS, after=12)  # starts once 12 rows were seen, with the third batch
    assert await spread_over(late, batches) == alone and late.used_worker
    monkeypatch.setenv(scan_worker.WORKER_ENV, "off")
    off = Spread(KEYS, after=0)
    assert await spread_over(off, batches) == alone and not off.used_worker


async def test_the_worker_takes_every_other_batch_and_is_waited_for_when_it_has_two(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Odd batches go to the worker, at most IN_FLIGHT (2) at a time: when both are still being
    verified there, the next odd batch waits for the oldest rather than being verified here."""
    monkeypatch.setenv(scan_worker.WORKER_ENV, "on")
    real_send = _Worker.send
    waiting: list[int] = []

    async def send(self: _Worker, kind: str, rows: list[bytes]) -> asyncio.Future[Tally]:
        waiting.append(len(self.waiting))
        return await real_send(self, kind, rows)

    monkeypatch.setattr(_Worker, "send", send)
    big = batch(60) * 40  # slow for the worker, next to the tiny batches verified here
    batches = [big if i % 2 == 0 else [make("megolm_inbound", KEYS[0])] for i in range(10)]
    alone = here("megolm_inbound", [r for b in batches for r in b])
    spread = Spread(KEYS, after=0)
    assert await spread_over(spread, batches) == alone
    assert len(waiting) == 5 and max(waiting) <= 1, waiting


def test_the_worker_setting_overrides_the_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(scan_worker.WORKER_ENV, "on")
    assert spare_core() is True
    monkeypatch.setenv(scan_worker.WORKER_ENV, "off")
    assert spare_core() is False


async def test_a_batch_sent_to_a_worker_already_gone_is_an_os_error_and_not_waited_for() -> None:
    """Spread.feed takes OSError as "verify this batch here"; anything else would end the scan."""
    worker = await _Worker.start(KEYS)
    try:
        worker.proc.kill()
        await worker.proc.wait()
        await asyncio.wait_for(worker.reader, 20)
        with pytest.raises(OSError):
            for _ in range(50):  # the broken pipe shows at the first write or drain after it
                await worker.send("megolm_inbound", batch(40))
        assert worker.waiting == []
    finally:
        await worker.stop()


@pytest.mark.parametrize(
    ("cpus", "load", "setting", "spare"),
    [
        (None, (0.0, 0.0, 0.0), None, False),  # the CPU count unknown: one
        (1, (0.0, 0.0, 0.0), None, False),
        (2, (1.0, 1.5, 1.5), None, True),  # one CPU idle by the last minute's load
        (2, (1.01, 0.0, 0.0), None, False),
        (4, (2.5, 9.0, 9.0), "auto", True),
        (4, (3.5, 0.0, 0.0), "anything", False),
        (4, (0.0, 0.0, 0.0), "off", False),
        (1, (9.0, 9.0, 9.0), "on", True),
    ],
)
def test_a_worker_is_started_when_a_cpu_is_idle(
    monkeypatch: pytest.MonkeyPatch,
    cpus: int | None,
    load: tuple[float, float, float],
    setting: str | None,
    spare: bool,
) -> None:
    """The host's CPU count and load stand in for a host this test cannot make busy or idle."""
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(os, "getloadavg", lambda: load)
    if setting is None:
        monkeypatch.delenv(scan_worker.WORKER_ENV, raising=False)
    else:
        monkeypatch.setenv(scan_worker.WORKER_ENV, setting)
    assert spare_core() is spare


async def test_the_worker_starts_with_the_batch_that_reaches_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(scan_worker.WORKER_ENV, "on")
    real_send = _Worker.send
    sent: list[int] = []

    async def send(self: _Worker, kind: str, rows: list[bytes]) -> asyncio.Future[Tally]:
        sent.append(len(rows))
        return await real_send(self, kind, rows)

    monkeypatch.setattr(_Worker, "send", send)
    batches = [batch(n) for n in (3, 3, 2, 2)]  # 7, 7, 6, 6 rows
    alone = here("megolm_inbound", [r for b in batches for r in b])
    assert await spread_over(Spread(KEYS, after=7), batches) == alone
    assert sent == [7, 6]  # the first batch already brings `after` rows


async def test_whether_to_use_a_worker_is_decided_once_per_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off when the scan starts: off for the whole scan; a worker that cannot start or that
    dies is not started again."""
    batches = [batch(2) for _ in range(6)]
    alone = here("megolm_inbound", [r for b in batches for r in b])
    monkeypatch.setenv(scan_worker.WORKER_ENV, "off")
    spread, into = Spread(KEYS, after=0), Tally()
    await spread.feed("megolm_inbound", list(batches[0]), into)
    monkeypatch.setenv(scan_worker.WORKER_ENV, "on")
    for rows in batches[1:]:
        await spread.feed("megolm_inbound", list(rows), into)
    await spread.finish()
    assert into == alone and not spread.used_worker

    real_start = _Worker.start.__func__  # type: ignore[attr-defined]
    starts: list[str] = []

    async def start(cls: type[_Worker], keys: list[str]) -> _Worker:
        starts.append(sys.executable)
        return await real_start(cls, keys)

    monkeypatch.setattr(_Worker, "start", classmethod(start))
    with monkeypatch.context() as m:
        m.setattr(sys, "executable", "/nonexistent/python3")  # an OSError from the start
        assert await spread_over(Spread(KEYS, after=0), batches) == alone
    assert len(starts) == 1
    starts.clear()
    monkeypatch.setenv(scan_worker.CRASH_ENV, "1")  # dies at its first batch
    crashed = Spread(KEYS, after=0)
    assert await spread_over(crashed, batches) == alone
    assert len(starts) == 1 and crashed.used_worker


@pytest.mark.parametrize("short", ["lengths", "data"])
def test_a_batch_cut_short_gets_no_answer(short: str) -> None:
    """The parent went away mid-batch (or verifies the batch itself): the worker answers
    nothing for a batch whose lengths or whose bytes stop early, rather than counts of part."""
    import subprocess
    from array import array

    rows = batch(2)
    lengths = array(scan_worker._LEN_TYPE, [len(r) for r in rows]).tobytes()
    data = b"".join(rows)
    head = json.dumps({"kind": "megolm_inbound", "n": len(rows), "bytes": len(data)}).encode()
    head += b"\n"
    one = array(scan_worker._LEN_TYPE).itemsize  # the parent writes whole lengths
    sent = head + (lengths[:one] if short == "lengths" else lengths + data[:-1])
    r = subprocess.run(
        [sys.executable, "-c", "from bridgedoctor.probes.scan_worker import serve; serve()"],
        input=json.dumps(list(KEYS)).encode() + b"\n" + sent,
        capture_output=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    whole = subprocess.run(
        [sys.executable, "-c", "from bridgedoctor.probes.scan_worker import serve; serve()"],
        input=json.dumps(list(KEYS)).encode() + b"\n" + head + lengths + data,
        capture_output=True,
        timeout=60,
    )
    assert json.loads(whole.stdout)["rows"] == len(rows)  # the same batch whole is answered
