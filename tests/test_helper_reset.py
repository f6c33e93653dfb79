"""The helper's reset, backups and restore operations over its real socket: real PostgreSQL and
SQLite bridges, a fake systemctl on PATH, the plan-then-confirm protocol the plugin uses."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bridgedoctor.apply.record import ApplyRecord
from bridgedoctor.helper.server import INTERNAL_MESSAGE
from bridgedoctor.protocol import MAX_RESPONSE_BYTES
from bridgedoctor.reset.manifest import Manifest, all_for
from tests.support.disks import read_only, tmpfs
from tests.support.fleet import Host
from tests.support.reset_env import RESET_BRIDGE, RESET_UNIT, Systemd, state
from tests.support.store import StoreSpec
from tests.test_helper_server import TOKEN, Running, answer, make_config, sockdir
from tests.test_reset import CRYPTO_GONE, deploy, engine
from tests.test_reset_faults import cli

ADMIN = "@admin:example.com"
BRIDGE = RESET_BRIDGE


@pytest.fixture
def host(tmp_path: Path, pg, engine: str) -> Host:
    return deploy(tmp_path / "host", pg, engine)


@pytest.fixture
def helper(host: Host, systemd: Systemd, sockdir: Path) -> Iterator[Running]:
    r = Running(make_config(host, sockdir, allow_reset=True))
    yield r
    r.stop()


def ask(helper: Running, op: str, **fields: Any) -> dict[str, Any]:
    return helper.ask({"v": 1, "token": TOKEN, "op": op, **fields})


def ok(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["ok"] is True, answer
    return answer["result"]


def refused(answer: dict[str, Any]) -> str:
    assert answer["ok"] is False, answer
    message = answer["error"]["message"]
    assert message.endswith(".") and "\n" not in message and TOKEN not in message
    return message


def stale(what: str) -> str:
    """The refusal of a confirmation whose plan changed; `what` names the change."""
    return f"The bridge changed since the plan was shown ({what}); nothing was changed. Ask again."


def run_plan(helper: Running, plan: dict[str, Any]) -> dict[str, Any]:
    """Confirm a plan as the plugin does: send back its id (or backup) and digest, by ADMIN.
    Works for a reset plan and for a restore plan; returns the raw answer."""
    if "backup" in plan:  # a restore plan
        fields = {"op": "restore", "backup": plan["backup"]}
    else:
        fields = {"op": "reset", "mode": plan["mode"], "plan": plan["id"]}
    return helper.ask(
        {"v": 1, "token": TOKEN, "bridge": BRIDGE, "digest": plan["digest"],
         "requested_by": ADMIN, **fields}
    )  # fmt: skip


def crypto_rows(host: Host) -> dict[str, int]:
    tables = state(host, BRIDGE)["tables"]
    assert isinstance(tables, dict)
    return {t: tables[t][0] for t in CRYPTO_GONE if t in tables}


def test_plan_then_confirmed_reset_then_restore(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    before = state(host, BRIDGE)
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    assert plan["bridge"] == BRIDGE and plan["unit"] == RESET_UNIT and plan["was_active"]
    assert any("crypto_account" in line for line in plan["removed"])
    # Planning changed nothing: no stop, no backup directory, same rows.
    assert not [c for c in systemd.calls() if c.startswith(("stop", "start"))]
    assert not (helper.cfg.backup_dir / BRIDGE / plan["id"]).exists()
    assert state(host, BRIDGE) == before

    done = ok(run_plan(helper, plan))
    assert done["id"] == plan["id"] and done["state"] == "done"
    assert done["requested_by"] == ADMIN and done["after"]
    assert set(crypto_rows(host).values()) == {0}
    assert systemd.get(RESET_UNIT) == "active"
    assert f"stop {RESET_UNIT}" in systemd.calls()

    listed = ok(ask(helper, "backups", bridge=BRIDGE))["backups"]
    assert [(b["id"], b["mode"], b["state"]) for b in listed] == [(plan["id"], "crypto", "done")]

    rplan = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
    assert rplan["backup"] == plan["id"] and "crypto rows" in rplan["put_back"]
    restored = ok(run_plan(helper, rplan))
    assert restored["kind"] == "restore" and restored["state"] == "done"
    # Every table, by checksum (a SQLite file's bytes change on any write, so not the dir).
    assert state(host, BRIDGE)["tables"] == before["tables"]


def test_full_reset_over_the_socket(helper: Running, host: Host) -> None:
    before = state(host, BRIDGE)
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="full"))
    assert any("log in" in a for a in plan["after"])
    ok(run_plan(helper, plan))
    after = state(host, BRIDGE)
    assert after["tables"] == {} and after != before
    rplan = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
    ok(run_plan(helper, rplan))
    assert state(host, BRIDGE) == before


def test_stale_digest_changes_nothing(helper: Running, host: Host, systemd: Systemd) -> None:
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    # Between plan and confirmation, the admin stops the bridge by hand: the plan said "start
    # it again", which is no longer what would happen, so the confirmation is void.
    systemd.set(RESET_UNIT, "inactive")
    before = state(host, BRIDGE)
    message = refused(run_plan(helper, plan))
    assert message == stale(f"{RESET_UNIT} was running and is stopped now")
    assert state(host, BRIDGE) == before
    assert not [c for c in systemd.calls() if c.startswith("stop")]
    assert not (helper.cfg.backup_dir / BRIDGE / plan["id"]).exists()


def test_a_restore_plan_gone_stale_names_the_change(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    ok(run_plan(helper, plan))
    rplan = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
    systemd.set(RESET_UNIT, "inactive")
    after_reset = state(host, BRIDGE)
    message = refused(run_plan(helper, rplan))
    assert message == stale(f"{RESET_UNIT} was running and is stopped now")
    assert state(host, BRIDGE) == after_reset


def test_restore_with_another_digest_changes_nothing(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    """A restore runs only the plan whose digest the admin confirmed, like a reset."""
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    ok(run_plan(helper, plan))
    after_reset, calls = state(host, BRIDGE), len(systemd.calls())
    rplan = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
    other = "0" * 16 if rplan["digest"] != "0" * 16 else "1" * 16
    message = refused(run_plan(helper, {**rplan, "digest": other}))
    # A digest this helper never showed: nothing to compare with.
    assert message == stale("the restore plan differs")
    assert state(host, BRIDGE) == after_reset
    assert not [c for c in systemd.calls()[calls:] if c.startswith(("stop", "start"))]
    assert [m.kind for m in all_for(helper.cfg.backup_dir / BRIDGE)] == ["reset"]


def test_refusals_are_plain(helper: Running, host: Host) -> None:
    assert "No such bridge" in refused(ask(helper, "reset_plan", bridge="slack", mode="crypto"))
    assert "No backup 20200101T000000Z-crypto of gmessages" in refused(
        ask(helper, "restore_plan", bridge=BRIDGE, backup="20200101T000000Z-crypto")
    )
    bad = ask(helper, "reset_plan", bridge=BRIDGE, mode="everything")
    assert bad["error"]["code"] == "bad_request"
    missing = ask(helper, "reset", bridge=BRIDGE, mode="crypto")  # no plan, digest, requester
    assert missing["error"]["code"] == "bad_request"
    assert ok(ask(helper, "backups", bridge=BRIDGE)) == {
        "bridge": BRIDGE,
        "backups": [],
        "recovered": [],
    }


def test_audit_line_names_who_confirmed(
    helper: Running, host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    with caplog.at_level("INFO", logger="bridgedoctor.helper"):
        ok(run_plan(helper, plan))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request op=")]
    assert any(f"op=reset bridge={BRIDGE}" in x and f"by={ADMIN}" in x for x in lines), lines
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_helper_start_recovers_an_interrupted_reset(
    host: Host,
    systemd: Systemd,
    sockdir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reset killed after its verified backup and the clearing, before the manifest says so
    (the unit stopped, the manifest 'backed_up'), is finished by the next helper start, before
    the helper serves anything."""
    cfg = make_config(host, sockdir, allow_reset=True)
    code = cli(host.args(), cfg.backup_dir, "reset", BRIDGE, "--yes", crash="apply")
    assert code == 137
    (m,) = all_for(cfg.backup_dir / BRIDGE)
    assert m.state == "backed_up" and systemd.get(RESET_UNIT) == "inactive"

    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
        r = Running(cfg)  # start() runs recovery before listening
    try:
        m = Manifest.load(m.dir / "manifest.json")
        assert m.state == "done", json.dumps(m.steps)
        said = caplog.records[0]  # before "listening on"
        assert said.levelno == logging.WARNING
        assert said.getMessage().startswith(
            f"recovered: the interrupted reset {m.id} of {BRIDGE} was finished: done"
        )
        assert set(crypto_rows(host).values()) == {0}
        assert systemd.get(RESET_UNIT) == "active"
        assert ok(ask(r, "backups", bridge=BRIDGE))["backups"][0]["state"] == "done"
    finally:
        r.stop()


def test_resets_are_off_unless_allowed(host: Host, systemd: Systemd, sockdir: Path) -> None:
    r = Running(make_config(host, sockdir))  # allow_reset defaults to false
    try:
        before = state(host, BRIDGE)
        for op, fields in (
            ("reset_plan", {"mode": "crypto"}),
            ("restore_plan", {"backup": "20261126T064500Z-crypto"}),
        ):
            message = refused(ask(r, op, bridge=BRIDGE, **fields))
            assert message.startswith(
                "Resets, restores and applies are turned off on this host: set allow_reset: true"
            )
        assert ok(ask(r, "backups", bridge=BRIDGE))["backups"] == []  # read-only: allowed
        assert systemd.calls() == [] and state(host, BRIDGE) == before
    finally:
        r.stop()


def test_listing_backups_over_the_socket_recovers(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    """A reset killed after its delete, while the helper runs: the room's `backups` finishes it
    (the helper may: resets are allowed) and says so."""
    code = cli(host.args(), helper.cfg.backup_dir, "reset", BRIDGE, "--yes", crash="apply")
    assert code == 137 and systemd.get(RESET_UNIT) == "inactive"
    listed = ok(ask(helper, "backups", bridge=BRIDGE))
    (item,) = listed["backups"]
    assert item["state"] == "done" and not item["error"]
    assert listed["recovered"] and "was finished: done" in listed["recovered"][0]
    assert systemd.get(RESET_UNIT) == "active"


def test_listing_backups_without_resets_says_where_to_finish(
    host: Host, systemd: Systemd, sockdir: Path
) -> None:
    r = Running(make_config(host, sockdir))  # allow_reset off: the helper may not recover
    try:
        backups = r.cfg.backup_dir
        assert cli(host.args(), backups, "reset", BRIDGE, "--yes", crash="apply") == 137
        listed = ok(ask(r, "backups", bridge=BRIDGE))
        (item,) = listed["backups"]
        assert item["state"] == "backed_up" and listed["recovered"] == []
        assert item["error"].endswith(f"on the host: bridgedoctor backups {BRIDGE}")
        assert systemd.get(RESET_UNIT) == "inactive"  # untouched: not the helper's to do
    finally:
        r.stop()


def until(done: Callable[[], bool], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def planned(host: Host, sockdir: Path) -> dict[str, Any]:
    """A crypto reset's plan from a helper with the usual limits, stopped since: the plans
    shown are remembered in the process, so a helper with other limits takes the confirmation."""
    first = Running(make_config(host, sockdir, allow_reset=True))
    try:
        return ok(ask(first, "reset_plan", bridge=BRIDGE, mode="crypto"))
    finally:
        first.stop()


def send_confirmation(helper: Running, plan: dict[str, Any]) -> socket.socket:
    """Confirm a reset plan on a connection left open (its answer is not waited for)."""
    body = {"v": 1, "token": TOKEN, "op": "reset", "bridge": BRIDGE, "mode": plan["mode"],
            "plan": plan["id"], "digest": plan["digest"], "requested_by": ADMIN}  # fmt: skip
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(helper.path)
    client.sendall(json.dumps(body).encode() + b"\n")
    return client


@pytest.mark.parametrize("engine", ["sqlite"])
def test_shutdown_gives_up_on_a_reset_after_its_grace(
    host: Host, systemd: Systemd, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping the helper waits request_timeout + 2 read_timeouts for the requests in flight
    (a reset has no limit of its own), then cancels what is left: its audit line says so,
    before the helper's last line. The reset's own thread is not stopped; it finishes."""
    plan = planned(host, sockdir)
    r = Running(make_config(host, sockdir, allow_reset=True, request_timeout=0.1, read_timeout=2))
    systemd.hang_start(RESET_UNIT)  # the reset's last step waits until this is off
    client = send_confirmation(r, plan)
    try:
        until(lambda: f"start {RESET_UNIT}" in systemd.calls(), "the reset's start")
        with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
            started = time.monotonic()
            r.call(r.helper.close(), timeout=30)
            waited = time.monotonic() - started
        r.closed = True
        assert 4.1 <= waited < 5.5  # 0.1 + 2 * 2 s
        said = [x.getMessage() for x in caplog.records if x.name.startswith("bridgedoctor.helper")]
        (line,) = [x for x in said if x.startswith("request op=reset ")]
        assert line.startswith(f"request op=reset bridge={BRIDGE} uid=")
        assert " result=cancelled ms=" in line and line.endswith(f" by={ADMIN}")
        assert 4100 <= int(line.split(" ms=")[1].split()[0]) < 600_000  # from its connection
        assert said[-2:] == [line, "stopped"]
    finally:
        client.close()
        systemd.hang_start(RESET_UNIT, on=False)
        backups = r.cfg.backup_dir / BRIDGE
        until(lambda: [m.state for m in all_for(backups)] == ["done"], "the reset's end")
        r.stop()


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_reset_is_not_bound_by_the_request_timeout(
    host: Host, systemd: Systemd, sockdir: Path
) -> None:
    """A check is cut off at request_timeout; a reset never is (half a reset is worse than a
    slow one): here its start waits a second, ten times the limit."""
    plan = planned(host, sockdir)
    r = Running(make_config(host, sockdir, allow_reset=True, request_timeout=0.1))
    try:
        systemd.hang_start(RESET_UNIT)
        release = threading.Timer(1.0, systemd.hang_start, (RESET_UNIT, False))
        release.start()
        done = ok(run_plan(r, plan))
        release.join()
        assert done["state"] == "done" and systemd.get(RESET_UNIT) == "active"
    finally:
        r.stop()


@pytest.mark.parametrize("engine", ["postgres"])
def test_helper_start_says_what_it_could_not_recover(
    host: Host, systemd: Systemd, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The unit was started again after the crash and will not stop: recovery changes nothing,
    says so in the helper's log, and the helper serves anyway."""
    cfg = make_config(host, sockdir, allow_reset=True)
    assert cli(host.args(), cfg.backup_dir, "reset", BRIDGE, "--yes", crash="apply") == 137
    systemd.set(RESET_UNIT, "active")
    systemd.refuse_stop_once(RESET_UNIT)
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
        r = Running(cfg)
    try:
        (m,) = all_for(cfg.backup_dir / BRIDGE)
        assert m.state == "backed_up"
        (said,) = [x for x in caplog.records if x.getMessage().startswith("not recovered yet: ")]
        assert said.levelno == logging.ERROR
        assert said.getMessage() == (
            f"not recovered yet: the interrupted reset {m.id} of {BRIDGE} could not be finished "
            f"({RESET_UNIT} is still active after systemctl stop; nothing was changed); nothing "
            "more was changed. The next bridgedoctor command tries again."
        )
        assert ok(ask(r, "list"))["bridges"] == [BRIDGE]
    finally:
        r.stop()


@pytest.mark.parametrize("engine", ["postgres"])
def test_a_read_only_backup_disk_hides_no_interrupted_reset(
    host: Host, systemd: Systemd, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The backup disk went read-only (ext4's errors=remount-ro) under an interrupted reset
    and an interrupted apply, with the disk's lost+found beside the bridges. The apply's
    record cannot be brought up to date: that failure is logged, and neither hides what the
    resets' recovery found nor keeps the helper from serving. lost+found is left alone."""
    cfg = make_config(host, sockdir, allow_reset=True)
    with tmpfs(cfg.backup_dir, "16m"):
        assert cli(host.args(), cfg.backup_dir, "reset", BRIDGE, "--yes", crash="apply") == 137
        (m,) = all_for(cfg.backup_dir / BRIDGE)
        applied = interrupted_apply(host, cfg.backup_dir)
        (cfg.backup_dir / "lost+found").mkdir(mode=0o700)
        read_only(cfg.backup_dir)
        with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
            r = Running(cfg)
        try:
            assert [(x.levelno, x.getMessage()) for x in caplog.records] == [
                (logging.ERROR,
                 f"not recovered yet: the interrupted reset {m.id} of {BRIDGE} was finished: "
                 f"done; its record could not be updated (cannot write {m.dir}/manifest.json "
                 "(Read-only file system)), the next command does it."),
                (logging.ERROR,
                 f"could not recover interrupted applies in {cfg.backup_dir}: cannot write "
                 f"{applied.dir}/apply.json (Read-only file system)"),
                (logging.INFO, f"listening on {cfg.socket} (max_concurrent={cfg.max_concurrent})"),
            ]  # fmt: skip
            assert list((cfg.backup_dir / "lost+found").iterdir()) == []
            assert ok(ask(r, "list"))["bridges"] == [BRIDGE]
        finally:
            r.stop()


def interrupted_apply(host: Host, backup_dir: Path) -> ApplyRecord:
    """What an apply killed after its backup leaves on disk: its record at backed_up, the
    bridge's config.yaml not yet written (apply/run.py saves the record after every step)."""
    config = next(host.root.glob(f"mautrix-{BRIDGE}/config/config.yaml"))
    sha = hashlib.sha256(config.read_bytes()).hexdigest()
    ident = "20261201T000000Z-apply"
    r = ApplyRecord(
        id=ident, bridge=BRIDGE, unit=RESET_UNIT, requested_by="root", created_at=ident[:16],
        location=str(backup_dir / BRIDGE / ident), config=str(config), base=str(config.parent),
        was_active=True, before_sha256=sha, after_sha256="0" * 64, uid=0, gid=0,
        file_mode=0o600, key_from="a", key_to="b", state="backed_up",
    )  # fmt: skip
    r.dir.mkdir(parents=True)
    r.save()
    return r


@pytest.mark.parametrize("engine", ["sqlite"])
def test_helper_start_recovers_nothing_unless_resets_are_allowed(
    host: Host, systemd: Systemd, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without allow_reset the unit may lack the rights: the host's CLI recovers instead."""
    cfg = make_config(host, sockdir)
    assert cli(host.args(), cfg.backup_dir, "reset", BRIDGE, "--yes", crash="apply") == 137
    calls = len(systemd.calls())
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
        Running(cfg).stop()
    assert [m.state for m in all_for(cfg.backup_dir / BRIDGE)] == ["backed_up"]
    assert systemd.calls()[calls:] == [] and systemd.get(RESET_UNIT) == "inactive"
    assert [x.getMessage() for x in caplog.records] == [
        f"listening on {cfg.socket} (max_concurrent={cfg.max_concurrent})",
        "stopped",
    ]


def with_error(helper: Running, size: int) -> bytes:
    """The answer to `backups` once the one backup's record carries an error of `size` bytes
    (what makes a listing large: the records are the helper's own, each field unbounded)."""
    (m,) = all_for(helper.cfg.backup_dir / BRIDGE)
    path = m.dir / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "error": "x" * size}))
    line = json.dumps({"v": 1, "token": TOKEN, "op": "backups", "bridge": BRIDGE}).encode()
    return helper.raw(line + b"\n")


@pytest.mark.parametrize("engine", ["sqlite"])
def test_an_answer_may_be_as_large_as_the_protocol_allows_and_no_larger(
    helper: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """What the plugin's reader takes (MAX_RESPONSE_BYTES, its newline included) is sent; one
    byte more is an internal error, said in the helper's log, not an answer cut short."""
    ok(run_plan(helper, ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))))
    base = len(with_error(helper, 0))
    largest = with_error(helper, MAX_RESPONSE_BYTES - base)
    assert len(largest) == MAX_RESPONSE_BYTES and answer(largest)["ok"] is True
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
        over = answer(with_error(helper, MAX_RESPONSE_BYTES - base + 1))
    assert over["error"] == {"code": "internal", "message": INTERNAL_MESSAGE}
    said = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert said[0] == (
        "bridgedoctor.helper",
        logging.ERROR,
        f"a response of {MAX_RESPONSE_BYTES + 1} bytes exceeds the protocol limit",
    )
    assert " result=internal ms=" in said[1][2]


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_client_that_stops_reading_is_given_up_after_read_timeout(
    host: Host, systemd: Systemd, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that asks for a large answer and never reads it must not pin the helper: the
    flush and the close are each bounded by read_timeout, so the connection's task ends and
    stopping the helper has nothing to wait for (its grace here is 6 s)."""
    r = Running(make_config(host, sockdir, allow_reset=True, request_timeout=5, read_timeout=0.5))
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        ok(run_plan(r, ok(ask(r, "reset_plan", bridge=BRIDGE, mode="crypto"))))
        with_error(r, 3 * 1024 * 1024)  # far more than the socket's buffers hold
        line = json.dumps({"v": 1, "token": TOKEN, "op": "backups", "bridge": BRIDGE}).encode()
        with (
            caplog.at_level(logging.DEBUG, logger="bridgedoctor.helper"),
            caplog.at_level(logging.DEBUG, logger="asyncio"),
        ):
            caplog.clear()
            client.connect(r.path)
            client.sendall(line + b"\n")
            client.shutdown(socket.SHUT_WR)  # and never reads
            until(lambda: "op=backups" in caplog.text, "the audit line")
            time.sleep(2)  # 2 * read_timeout, and a margin
            started = time.monotonic()
            r.call(r.helper.close())
            assert time.monotonic() - started < 3
        r.closed = True
        assert [x.getMessage() for x in caplog.records if x.levelno >= logging.WARNING] == []
    finally:
        client.close()
        r.stop()


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_reset_and_its_restore_answer_every_field_audit_and_log_who_confirmed(
    helper: Running, host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    """What the plugin renders after a reset, a listing and a restore, field by field; each
    request's audit outcome; the log line naming who confirmed each change. A restore's own
    record is not listed, and a reset after it still is."""
    backups = helper.cfg.backup_dir / BRIDGE
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
        plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
        done = ok(run_plan(helper, plan))
        listed = ok(ask(helper, "backups", bridge=BRIDGE))
        rplan = ok(ask(helper, "restore_plan", bridge=BRIDGE, backup=plan["id"]))
        back = ok(run_plan(helper, rplan))
    reset, restore = all_for(backups)
    assert (reset.id, restore.kind) == (plan["id"], "restore")
    common = {"bridge": BRIDGE, "mode": "crypto", "state": "done", "requested_by": ADMIN,
              "error": ""}  # fmt: skip
    summary = {**common, "id": plan["id"], "kind": "reset", "created_at": reset.created_at,
               "location": str(backups / plan["id"]), "source": "",
               "steps": ["stop", "backup", "verify", "apply", "start"]}  # fmt: skip
    assert done == {**summary, "after": plan["after"]} and plan["after"]
    assert listed == {"bridge": BRIDGE, "backups": [summary], "recovered": []}
    assert back == {**common, "id": restore.id, "kind": "restore",
                    "created_at": restore.created_at, "location": str(backups / plan["id"]),
                    "source": plan["id"], "steps": ["stop", "restore_db", "start"]}  # fmt: skip
    assert back["id"] != plan["id"]

    assert audit_results(caplog) == [
        "planned",
        "done",
        "1 backups",
        "planned",
        "done",
    ]
    assert warnings_said(caplog) == [
        f"reset of {BRIDGE} (crypto) confirmed by {ADMIN}",
        f"restore of {BRIDGE} from {plan['id']} confirmed by {ADMIN}",
    ]

    again = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="full"))
    assert again["mode"] == "full" and again["id"].split("-")[1].startswith("full")
    ok(run_plan(helper, again))
    listed = ok(ask(helper, "backups", bridge=BRIDGE))["backups"]
    assert [(b["id"], b["mode"]) for b in listed] == [
        (plan["id"], "crypto"),
        (again["id"], "full"),
    ]


@pytest.mark.parametrize("engine", ["sqlite"])
def test_listing_one_bridges_backups_finishes_only_its_own(
    host: Host, systemd: Systemd, sockdir: Path
) -> None:
    """A reset of gmessages interrupted on the host: listing whatsapp's backups neither
    finishes it nor reports it; listing gmessages' does both."""
    host.add("whatsapp", StoreSpec("whatsapp"), engine="sqlite")
    r = Running(make_config(host, sockdir, allow_reset=True))
    try:
        assert cli(host.args(), r.cfg.backup_dir, "reset", BRIDGE, "--yes", crash="apply") == 137
        other = ok(ask(r, "backups", bridge="whatsapp"))
        assert other == {"bridge": "whatsapp", "backups": [], "recovered": []}
        (m,) = all_for(r.cfg.backup_dir / BRIDGE)
        assert m.state == "backed_up" and systemd.get(RESET_UNIT) == "inactive"
        listed = ok(ask(r, "backups", bridge=BRIDGE))
        assert [b["state"] for b in listed["backups"]] == ["done"]
        assert len(listed["recovered"]) == 1 and "was finished: done" in listed["recovered"][0]
    finally:
        r.stop()


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_plan_id_with_a_counter_still_names_its_mode(helper: Running, host: Host) -> None:
    """A second plan in the same second gets `.2` after its mode: its confirmation is still
    a crypto reset's (the id's kind is read before the counter)."""
    backups = helper.cfg.backup_dir / BRIDGE
    now = datetime.now(timezone.utc)
    for s in range(60):  # the base ids of the next minute, taken (directories, no manifest)
        stamp = (now + timedelta(seconds=s)).strftime("%Y%m%dT%H%M%SZ")
        (backups / f"{stamp}-crypto").mkdir(parents=True, exist_ok=True)
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    assert plan["id"].endswith("-crypto.2")
    done = ok(run_plan(helper, plan))
    assert (done["id"], done["mode"], done["state"]) == (plan["id"], "crypto", "done")


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_confirmation_seconds_after_the_plan_resets_under_the_plans_id(
    helper: Running, host: Host
) -> None:
    """Ids are stamped to the second: the reset re-plans under the id it showed, so a
    confirmation in a later second still matches its digest and records under that id."""
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    time.sleep(1.1)  # the next second's id would differ, and with it the digest
    done = ok(run_plan(helper, plan))
    assert (done["id"], done["state"]) == (plan["id"], "done")
    assert [m.id for m in all_for(helper.cfg.backup_dir / BRIDGE)] == [plan["id"]]


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_reset_confirmed_with_a_digest_never_shown_says_its_plan_differs(
    helper: Running, host: Host, systemd: Systemd
) -> None:
    plan = ok(ask(helper, "reset_plan", bridge=BRIDGE, mode="crypto"))
    before = state(host, BRIDGE)
    message = refused(run_plan(helper, {**plan, "digest": "0" * 16}))
    assert message == stale("its plan differs")
    assert state(host, BRIDGE) == before
    assert not [c for c in systemd.calls() if c.startswith(("stop", "start"))]
    assert not (helper.cfg.backup_dir / BRIDGE / plan["id"]).exists()


def audit_results(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The result of each audit line the helper logged, in order ("planned", "1 backups")."""
    lines = [x.getMessage() for x in caplog.records if x.name == "bridgedoctor.helper.audit"]
    return [line.split(" result=")[1].split(" ms=")[0] for line in lines]


def warnings_said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the helper's own logger said at WARNING (who confirmed what)."""
    return [
        x.getMessage()
        for x in caplog.records
        if (x.name, x.levelno) == ("bridgedoctor.helper", logging.WARNING)
    ]
