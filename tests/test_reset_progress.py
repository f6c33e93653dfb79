"""Progress of a long reset or restore: the steps in order and the rows streamed so far, from
the engine to the helper's socket (progress lines before the one answer)."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bridgedoctor.reset import progress as progress_mod
from bridgedoctor.reset import run as runner
from bridgedoctor.reset.engine import RESET_STEPS, RESTORE_STEPS
from bridgedoctor.reset.errors import ResetError
from tests.support.fleet import Host
from tests.support.pg import PgServer
from tests.support.reset_env import RESET_BRIDGE, RESET_UNIT, Systemd, options
from tests.support.store import StoreSpec, session_rows
from tests.test_helper_reset import ADMIN, helper, host, run_plan
from tests.test_helper_server import TOKEN, sockdir
from tests.test_reset import engine

__all__ = ["engine", "helper", "host", "sockdir"]  # fixtures used by name below
INBOUND = 1500
_counter = itertools.count()


@pytest.fixture
def big(tmp_path: Path, pg: PgServer, engine: str) -> Host:
    host = Host.at(tmp_path / "big", pg if engine == "postgres" else None)
    spec = StoreSpec(RESET_BRIDGE, extra=session_rows("mautrix.bridge.e2ee", inbound=INBOUND))
    host.add(RESET_BRIDGE, spec, engine=engine, db_prefix=f"p{next(_counter)}_")
    return host


def test_steps_in_order_and_rows_as_they_stream(
    big: Host, systemd: Systemd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_mod, "EVERY", 0.0)  # every chunk reported, not every 2 s
    estimate = None  # SQLite keeps no row estimate
    if big.pg is not None:  # PostgreSQL's planner has one once the table is analyzed
        (name,) = big.databases.values()
        estimate = asyncio.run(_analyze(big.pg.dsn(name), "crypto_megolm_inbound_session"))
        assert estimate == INBOUND + 1
    seen: list[dict[str, Any]] = []
    backups = tmp_path / "backups"
    m = asyncio.run(
        runner.reset(RESET_BRIDGE, "crypto", options(big), backups, lambda p: True, "t",
                     progress=seen.append)
    )  # fmt: skip
    steps = [(s["step"], s["index"], s["steps"]) for s in seen if "table" not in s]
    assert steps == [(name, i, 5) for i, name in enumerate(RESET_STEPS["crypto"], 1)]
    inbound = [s for s in seen if s.get("table") == "crypto_megolm_inbound_session"]
    assert {s["step"] for s in inbound} == {"backup"}
    counts = [s["rows"] for s in inbound]
    assert counts == sorted(counts) and counts[-1] == INBOUND + 1  # StoreSpec adds one
    # A backup's total is the planner's estimate, said to be one.
    assert {(s["of"], s["approx"]) for s in inbound} == {(estimate, True)}
    assert m.tables["crypto_megolm_inbound_session"]["rows"] == INBOUND + 1

    seen.clear()
    asyncio.run(
        runner.restore(RESET_BRIDGE, m.id, options(big), backups, lambda p: True, "t",
                       progress=seen.append)
    )  # fmt: skip
    steps = [s["step"] for s in seen if "table" not in s]
    assert steps == list(RESTORE_STEPS["crypto"])
    last = [s for s in seen if s.get("table") == "crypto_megolm_inbound_session"][-1]
    # A restore knows every total exactly: the manifest's count.
    assert (last["step"], last["rows"], last["of"], last["approx"]) == (
        "restore_db",
        INBOUND + 1,
        INBOUND + 1,
        False,
    )


async def _analyze(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ANALYZE {table}")
        return int(
            await conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE relname = $1", table)
        )
    finally:
        await conn.close()


def test_a_sink_that_fails_never_fails_the_reset(
    big: Host, systemd: Systemd, tmp_path: Path
) -> None:
    calls = []

    def broken(state: dict[str, Any]) -> None:
        calls.append(state)
        raise OSError("the client went away")

    m = asyncio.run(
        runner.reset(RESET_BRIDGE, "crypto", options(big), tmp_path / "b", lambda p: True, "t",
                     progress=broken)
    )  # fmt: skip
    assert m.state == "done" and len(calls) == 1  # dropped after its first failure


def test_helper_sends_progress_lines_before_the_answer(helper, host: Host) -> None:  # noqa: F811
    plan = helper.ask({"v": 1, "token": TOKEN, "op": "reset_plan", "bridge": RESET_BRIDGE,
                       "mode": "crypto"})["result"]  # fmt: skip
    body = {"v": 1, "token": TOKEN, "op": "reset", "bridge": RESET_BRIDGE, "mode": "crypto",
            "plan": plan["id"], "digest": plan["digest"], "requested_by": ADMIN,
            "progress": True}  # fmt: skip
    lines = helper.raw(json.dumps(body).encode() + b"\n").splitlines()
    *progress, answer = [json.loads(x) for x in lines]
    assert answer["ok"] is True and answer["result"]["state"] == "done"
    assert [p["progress"]["step"] for p in progress] == list(RESET_STEPS["crypto"])
    assert all(set(p) == {"v", "progress"} for p in progress)
    # Without the flag: exactly the one answer line, as every client before progress expects.
    rplan = helper.ask({"v": 1, "token": TOKEN, "op": "restore_plan", "bridge": RESET_BRIDGE,
                        "backup": plan["id"]})["result"]  # fmt: skip
    assert run_plan(helper, rplan)["ok"] is True


def test_a_restore_over_the_socket_sends_its_progress_too(helper, host: Host) -> None:  # noqa: F811
    plan = helper.ask({"v": 1, "token": TOKEN, "op": "reset_plan", "bridge": RESET_BRIDGE,
                       "mode": "crypto"})["result"]  # fmt: skip
    assert run_plan(helper, plan)["ok"] is True
    rplan = helper.ask({"v": 1, "token": TOKEN, "op": "restore_plan", "bridge": RESET_BRIDGE,
                        "backup": plan["id"]})["result"]  # fmt: skip
    body = {"v": 1, "token": TOKEN, "op": "restore", "bridge": RESET_BRIDGE,
            "backup": plan["id"], "digest": rplan["digest"], "requested_by": ADMIN,
            "progress": True}  # fmt: skip
    *progress, answer = [
        json.loads(x) for x in helper.raw(json.dumps(body).encode() + b"\n").splitlines()
    ]
    assert answer["ok"] is True and answer["result"]["kind"] == "restore"
    assert [p["progress"]["step"] for p in progress] == list(RESTORE_STEPS["crypto"])


def test_a_step_says_what_it_does_in_words() -> None:
    seen: list[dict[str, Any]] = []
    report = progress_mod.Progress(seen.append)
    report.step("backup", 2, 5)
    report.step("a_step_of_tomorrow", 3, 5)  # a newer engine's step: its own name, not nothing
    assert seen == [
        {"step": "backup", "doing": "backing up", "index": 2, "steps": 5},
        {"step": "a_step_of_tomorrow", "doing": "a_step_of_tomorrow", "index": 3, "steps": 5},
    ]


def test_rows_are_reported_at_most_once_per_interval_and_steps_always() -> None:
    seen: list[dict[str, Any]] = []
    report = progress_mod.Progress(seen.append, every=3600.0)
    report.rows("crypto_olm_session", 10)  # the first report of a run goes out at once
    report.rows("crypto_olm_session", 20)
    report.rows("crypto_olm_session", 30, of=40, approx=True)
    report.step("verify", 3, 5)
    report.rows("crypto_olm_session", 40)
    assert seen == [
        {"table": "crypto_olm_session", "rows": 10, "of": None, "approx": False},
        {"step": "verify", "doing": "verifying the backup", "index": 3, "steps": 5},
    ]


def test_a_failed_sink_is_dropped_and_the_report_goes_silent() -> None:
    calls: list[dict[str, Any]] = []

    def broken(state: dict[str, Any]) -> None:
        calls.append(state)
        raise BrokenPipeError

    report = progress_mod.Progress(broken, every=0.0)
    assert not report.silent
    report.step("stop", 1, 5)
    assert report.silent and len(calls) == 1
    report.step("backup", 2, 5)
    assert len(calls) == 1
    assert progress_mod.counter(report, "crypto_olm_session", None) is None


def test_an_interval_of_nothing_reports_every_chunk() -> None:
    seen: list[dict[str, Any]] = []
    report = progress_mod.Progress(seen.append, every=0.0)
    for done in (1, 2, 3):
        report.rows("crypto_olm_session", done)
    assert [s["rows"] for s in seen] == [1, 2, 3]


def test_a_reset_putting_its_backup_back_reports_that_too(
    big: Host, systemd: Systemd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crypto store is cleared, then the unit will not start: the reset puts its backup
    back, and the room sees that step and its rows like any other (it may be the long one)."""
    monkeypatch.setattr(progress_mod, "EVERY", 0.0)
    systemd.refuse_start_once(RESET_UNIT)
    seen: list[dict[str, Any]] = []
    with pytest.raises(ResetError, match="its backup was put back"):
        asyncio.run(
            runner.reset(RESET_BRIDGE, "crypto", options(big), tmp_path / "b", lambda p: True,
                         "t", progress=seen.append)
        )  # fmt: skip
    steps = [s["step"] for s in seen if "table" not in s]
    assert steps == [*RESET_STEPS["crypto"], "restore_db"]
    last = [s for s in seen if s.get("table") == "crypto_megolm_inbound_session"][-1]
    assert (last["step"], last["rows"], last["of"]) == ("restore_db", INBOUND + 1, INBOUND + 1)
