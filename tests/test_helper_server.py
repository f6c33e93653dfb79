"""bridgedoctor-helper's server, in-process over a real Unix socket, against an MDAD-shaped host
with real crypto stores in a real PostgreSQL.

The server runs in its own thread and event loop, exactly as in production; the tests talk to it
with plain blocking sockets, so every byte goes through the kernel the way the plugin's would.
"""

from __future__ import annotations

import asyncio
import grp
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bridgedoctor.helper import listen, ops
from bridgedoctor.helper.config import HelperConfig, parse
from bridgedoctor.helper.listen import StartupError
from bridgedoctor.helper.server import Helper
from bridgedoctor.protocol import MAX_REQUEST_BYTES, VERSION
from tests.support.fleet import SECRETS, Host, mdad_default_key
from tests.support.inventory import SECRETS as INVENTORY_SECRETS
from tests.support.inventory import pin_variable, write_inventory
from tests.support.pg import PgServer
from tests.support.store import StoreSpec

T = TypeVar("T")
_hosts = itertools.count()
TOKEN = "t0k3n-" + secrets.token_hex(24)
ERROR_CODES = {
    "bad_request",
    "unauthorized",
    "unknown_op",
    "unknown_bridge",
    "busy",
    "timeout",
    "internal",
    "reset_refused",
}


# --- a sample host, built once per module: two PostgreSQL bridges and one SQLite bridge --------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pg: PgServer) -> Host:
    host = Host.at(tmp_path_factory.mktemp("helperhost"), pg)
    prefix = f"h{os.getpid()}_{next(_hosts)}_"  # one PostgreSQL cluster serves every test
    host.add_broken_gmessages_healthy_whatsapp(prefix)
    host.add(
        "signal", StoreSpec("signal", account_key=mdad_default_key("signal")), engine="sqlite"
    )
    return host


def make_config(host: Host, sockdir: Path, **overrides: Any) -> HelperConfig:
    return parse(raw_config(host, sockdir, **overrides), sockdir / "helper.yaml")


def raw_config(host: Host, sockdir: Path, **overrides: Any) -> dict[str, Any]:
    token_file = sockdir / "token"
    if not token_file.exists():
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o640)
    raw: dict[str, Any] = {
        "root": str(host.root),
        "systemd_dir": str(host.systemd),
        "db_host": f"{host.pg.host}:{host.pg.port}" if host.pg else None,
        "socket": str(sockdir / "h.sock"),
        "token_file": str(token_file),
        "backup_dir": str(sockdir / "backups"),
        "databases": dict(host.databases),
    }
    raw.update(overrides)
    return raw


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Not tmp_path: a Unix socket path must fit in 107 bytes, and pytest's paths can be long.
    d = Path(tempfile.mkdtemp(prefix="bdh-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- the server in a thread ----------------------------------------------------------------------


class Running:
    """A Helper serving on its own event loop in a background thread."""

    def __init__(self, cfg: HelperConfig) -> None:
        self.cfg = cfg
        self.path = str(cfg.socket)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.helper: Helper = self.call(self._start())
        self.closed = False

    async def _start(self) -> Helper:
        helper = Helper(self.cfg)
        await helper.start()
        return helper

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if not self.closed:
            self.closed = True
            self.call(self.helper.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def raw(self, data: bytes, *, eof: bool = True, timeout: float = 30) -> bytes:
        return exchange(self.path, data, eof=eof, timeout=timeout)

    def ask(self, body: Any, **kw: Any) -> dict[str, Any]:
        return answer(self.raw(json.dumps(body).encode() + b"\n", **kw))

    def req(self, op: str, bridge: str | None = None, token: str = TOKEN) -> dict[str, Any]:
        body: dict[str, Any] = {"v": VERSION, "token": token, "op": op}
        if bridge is not None:
            body["bridge"] = bridge
        return self.ask(body)


def exchange(path: str, data: bytes, *, eof: bool = True, timeout: float = 30) -> bytes:
    """Send data, optionally half-close, and read until the helper closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        if data:
            s.sendall(data)
        if eof:
            s.shutdown(socket.SHUT_WR)
        return read_all(s)


def read_all(s: socket.socket, *, reset_ends: bool = False) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        # Linux reports ECONNRESET once the queued answer is read if the helper closed with our
        # unread bytes still in its buffer, which is what refusing an oversized line means.
        if not reset_ends:
            raise
    return b"".join(chunks)


def answer(raw: bytes) -> dict[str, Any]:
    """Check that raw is exactly one valid protocol response line, and return it."""
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw[:200]
    body = json.loads(raw)
    assert body["v"] == VERSION
    if body["ok"] is True:
        assert set(body) == {"v", "ok", "result"} and isinstance(body["result"], dict)
    else:
        assert body["ok"] is False and set(body) == {"v", "ok", "error"}
        assert body["error"]["code"] in ERROR_CODES
        message = body["error"]["message"]
        assert isinstance(message, str) and message.endswith(".") and "\n" not in message
    text = raw.decode()
    for secret in (TOKEN, *SECRETS):
        assert secret not in text, "a secret leaked into an answer"
    return body


def error_code(body: dict[str, Any]) -> str:
    assert body["ok"] is False, body
    return body["error"]["code"]


@pytest.fixture
def start(fleet: Host, sockdir: Path) -> Iterator[Any]:
    """start(**config overrides) -> Running; stopped at the end of the test."""
    started: list[Running] = []

    def _start(**overrides: Any) -> Running:
        r = Running(make_config(fleet, sockdir, **overrides))
        started.append(r)
        return r

    yield _start
    for r in started:
        r.stop()


@pytest.fixture
def helper(start: Any) -> Running:
    return start()


# --- operations ----------------------------------------------------------------------------------


def test_list_names_the_discovered_bridges(helper: Running) -> None:
    body = helper.req("list")
    assert body["ok"] is True
    assert sorted(body["result"]["bridges"]) == ["gmessages", "signal", "whatsapp"]


def test_check_proves_the_wrong_pickle_key(helper: Running) -> None:
    body = helper.req("check", "gmessages")
    report = body["result"]
    assert report["bridge"] == "gmessages" and report["status"] == "broken"
    mismatch = next(f for f in report["findings"] if f["code"] == "pickle_key_mismatch")
    assert mismatch["fix"]["vars_yml"] == (
        'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "go.mau.fi/mautrix-gmessages"'
    )


def test_check_healthy_bridges(helper: Running) -> None:
    assert helper.req("check", "whatsapp")["result"]["status"] == "ok"
    sqlite = helper.req("check", "signal")["result"]
    assert sqlite["status"] == "ok" and sqlite["facts"]["database"].startswith("sqlite ")


def test_check_all_is_the_fleet_report(helper: Running) -> None:
    result = helper.req("check_all")["result"]
    statuses = {r["bridge"]: r["status"] for r in result["bridges"]}
    assert statuses == {"gmessages": "broken", "whatsapp": "ok", "signal": "ok"}


def test_the_inventory_setting_reaches_the_rules(start: Any, sockdir: Path) -> None:
    # whatsapp runs on MDAD's default key; a vars.yml pinning another breaks it at the next run.
    inv = write_inventory(sockdir, pin_variable("whatsapp", "mautrix.bridge.e2ee"))
    report = start(inventory=str(inv)).req("check", "whatsapp")["result"]
    assert report["status"] == "warning"
    wrong = next(f for f in report["findings"] if f["code"] == "pickle_key_pin_wrong")
    assert "breaks at the next playbook run" in wrong["summary"]
    assert INVENTORY_SECRETS[0] not in json.dumps(report)


def _tool(bindir: Path, name: str, script: str) -> None:
    """A stand-in for a host tool at the process boundary (first on PATH)."""
    bindir.mkdir(exist_ok=True)
    tool = bindir / name
    tool.write_text("#!/bin/sh\n" + script + "\n")
    tool.chmod(0o755)


def test_logs_and_verify_follow_the_named_bridge(
    start: Any, sockdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`logs` and `verify` read the unit (systemctl show) and its journal, here a running unit
    whose current run logged a fatal line: what a plugin shows after `apply`."""
    bindir = sockdir / "bin"
    props = (
        "Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nResult=success\\n"
        "NRestarts=0\\nExecMainStartTimestampMonotonic=1000\\nInvocationID=abc\\n"
    )
    _tool(bindir, "systemctl", f"printf '{props}' \"$3\"")
    entry = {
        "MESSAGE": "FTL Failed to open the crypto store",
        "__MONOTONIC_TIMESTAMP": "2000",
        "__REALTIME_TIMESTAMP": "1796006297205426",
        "_SYSTEMD_INVOCATION_ID": "abc",
        "_PID": "7",
    }
    _tool(bindir, "journalctl", f"echo '{json.dumps(entry)}'")
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    helper = start(verify_seconds=1)
    unit = "matrix-mautrix-gmessages.service"
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper.audit"):
        logs = helper.req("logs", "gmessages")["result"]
        started = time.monotonic()
        verified = helper.req("verify", "gmessages")["result"]
        waited = time.monotonic() - started
    assert logs == {
        "bridge": "gmessages",
        "status": "errors",
        "unit": unit,
        "state": "active (running)",
        "run": "current run",
        "lines": ["2026-11-30T02:38:17Z FTL Failed to open the crypto store"],
        "truncated": False,
        "problem": None,
    }
    # Followed for verify_seconds, then judged by the fatal line, with the check's cause.
    assert waited >= 1
    assert {k: v for k, v in verified.items() if k != "finding"} == {
        "bridge": "gmessages",
        "unit": unit,
        "state": "failing",
        "seconds": 1,
        "fatal": "FTL Failed to open the crypto store",
        "restarts": 0,
        "detail": "active (running)",
    }
    assert verified["finding"]["code"] == "pickle_key_mismatch"
    audit = [r.getMessage() for r in caplog.records if r.name == "bridgedoctor.helper.audit"]
    assert [line.split(" uid=")[0] for line in audit] == [
        "request op=logs bridge=gmessages",
        "request op=verify bridge=gmessages",
    ]
    assert [line.split(" result=")[1].split()[0] for line in audit] == ["errors", "failing"]
    ms = int(audit[1].split(" ms=")[1])  # the request's duration, in milliseconds
    assert 1000 <= ms <= waited * 1000 + 1


def test_the_audit_line_says_each_operations_outcome(
    start: Any, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (sockdir / "empty" / "systemd").mkdir(parents=True)
    full, empty = (
        start(),
        start(
            socket=str(sockdir / "e.sock"),
            root=str(sockdir / "empty"),
            systemd_dir=str(sockdir / "empty" / "systemd"),
        ),
    )
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper.audit"):
        full.req("list")
        full.req("check_all")
        assert empty.req("check_all")["result"]["bridges"] == []
    audit = [r.getMessage() for r in caplog.records if r.name == "bridgedoctor.helper.audit"]
    assert [line.split(" result=")[1].split()[0] for line in audit] == [
        "ok",
        "broken,ok",  # every status of the fleet, once each
        "empty",
    ]


def test_check_all_answers_within_the_request_limit(start: Any) -> None:
    """A database that never answers: each of its bridges is given up at 80% of the request's
    limit, so the fleet report still arrives, with the other bridges checked."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        helper = start(request_timeout=2.5, db_host=f"127.0.0.1:{mute.getsockname()[1]}")
        body = helper.req("check_all")
    reports = {r["bridge"]: r for r in body["result"]["bridges"]}
    assert reports["signal"]["status"] == "ok"  # SQLite: no server to wait for
    for name in ("gmessages", "whatsapp"):
        (finding,) = reports[name]["findings"]
        assert finding["code"] == "check_timeout"
        assert finding["summary"].startswith(f"Checking {name} took longer than 2 s and was")


def test_the_naming_setting_reaches_the_fix(start: Any) -> None:
    """naming: legacy (an older MDAD checkout) gives the snippet in that checkout's variables."""
    report = start(naming="legacy").req("check", "gmessages")["result"]
    mismatch = next(f for f in report["findings"] if f["code"] == "pickle_key_mismatch")
    assert mismatch["fix"]["vars_yml"].startswith(
        "# MDAD checkouts from 2024-10-11 to 2026-07-15:\n"
        'matrix_mautrix_gmessages_bridge_encryption_pickle_key: "go.mau.fi/mautrix-gmessages"\n'
    )


# --- refusals ------------------------------------------------------------------------------------


def test_wrong_token_is_unauthorized(helper: Running) -> None:
    assert error_code(helper.req("list", token="not-" + TOKEN)) == "unauthorized"
    # A non-ASCII token must not break the constant-time comparison.
    assert error_code(helper.req("list", token="\u00e9\ud800")) == "unauthorized"


def test_missing_token_is_unauthorized(helper: Running) -> None:
    assert error_code(helper.ask({"v": 1, "op": "list"})) == "unauthorized"


def test_unknown_op(helper: Running) -> None:
    assert error_code(helper.ask({"v": 1, "token": TOKEN, "op": "shell"})) == "unknown_op"


@pytest.mark.parametrize("bridge", ["../../etc", "whatsapp/../../etc", "slack", "zz-not-one"])
def test_only_discovered_bridges_are_checked(helper: Running, bridge: str) -> None:
    # slack is a real bridge, just not deployed on this host: still not the client's choice.
    assert error_code(helper.req("check", bridge)) == "unknown_bridge"


def test_truncated_request(helper: Running) -> None:
    body = answer(helper.raw(b'{"v": 1, "token": "x", "op": "li'))
    assert error_code(body) == "bad_request" and "truncated" in body["error"]["message"]


def test_empty_connection(helper: Running) -> None:
    assert error_code(answer(helper.raw(b""))) == "bad_request"


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe\x00\x01garbage\n", b"\x00" * 100 + b"\n", b"[" * 4000 + b"\n", b"null\n"],
    ids=["binary", "nul", "deep-nesting", "null"],
)
def test_garbage_is_a_bad_request(helper: Running, data: bytes) -> None:
    assert error_code(answer(helper.raw(data))) == "bad_request"
    assert helper.req("list")["ok"] is True


def test_line_just_over_the_limit(helper: Running) -> None:
    pad = "x" * MAX_REQUEST_BYTES
    assert error_code(helper.ask({"v": 1, "token": TOKEN, "op": "list", "pad": pad})) == (
        "bad_request"
    )


def test_endless_line_is_refused_without_reading_it_all(helper: Running) -> None:
    """A writer that never stops: if the helper tried to read the whole line, no answer would
    ever come. It answers after at most a few KiB, and the writer then hits a closed socket."""
    sent = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(helper.path)
        stop = threading.Event()

        def flood() -> None:
            nonlocal sent
            chunk = b"A" * 65536
            try:
                while not stop.is_set() and sent < 1 << 30:
                    sent += s.send(chunk)
            except OSError:
                pass  # the helper closed its end: what we want

        writer = threading.Thread(target=flood, daemon=True)
        writer.start()
        raw = read_all(s, reset_ends=True)
        stop.set()
        writer.join(30)
    body = answer(raw)
    assert error_code(body) == "bad_request" and "too large" in body["error"]["message"]
    assert sent < 1 << 30


def test_a_line_past_the_limit_is_refused_before_it_ends(start: Any) -> None:
    """The reader's own limit is MAX_REQUEST_BYTES: past it the helper answers at once, without
    waiting for the line's end (which may never come) or for read_timeout."""
    helper = start(read_timeout=30)
    started = time.monotonic()
    body = answer(helper.raw(b"A" * (4 * MAX_REQUEST_BYTES), eof=False, timeout=60))
    assert body["error"] == {"code": "bad_request", "message": "The request is too large."}
    assert time.monotonic() - started < 20


def test_silent_client_is_dropped_after_read_timeout(start: Any) -> None:
    helper = start(read_timeout=0.3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)  # far above read_timeout: the helper, not this timeout, ends the wait
        s.connect(helper.path)
        t0 = time.monotonic()
        raw = read_all(s)  # never sends, never half-closes
        waited = time.monotonic() - t0
    assert error_code(answer(raw)) == "timeout"
    assert waited >= 0.25


def test_busy_when_all_slots_are_taken(start: Any) -> None:
    helper = start(max_concurrent=2)
    sem = helper.helper.slots
    for _ in range(2):
        helper.call(sem.acquire())  # two checks "in flight", deterministically
    assert error_code(helper.req("list")) == "busy"
    helper.loop.call_soon_threadsafe(sem.release)
    assert helper.req("list")["ok"] is True  # one free slot again


def test_request_timeout(start: Any) -> None:
    # A "PostgreSQL" that accepts connections and never answers: the check hangs in the probe.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        helper = start(request_timeout=0.3, db_host=f"127.0.0.1:{mute.getsockname()[1]}")
        body = helper.req("check", "gmessages")
        assert error_code(body) == "timeout"
        assert helper.req("list")["ok"] is True


def test_allowed_uids_refuses_other_users(start: Any) -> None:
    helper = start(allowed_uids=[os.getuid() + 1])
    assert error_code(helper.req("list")) == "unauthorized"


def test_allowed_uids_admits_listed_users(start: Any) -> None:
    helper = start(allowed_uids=[os.getuid()])
    assert helper.req("list")["ok"] is True


def test_unexpected_error_is_generic(
    helper: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: Any) -> Any:
        raise RuntimeError(f"exploded near {SECRETS[0]} with {TOKEN}")

    monkeypatch.setattr(ops, "run", broken)
    with caplog.at_level(logging.INFO, logger="bridgedoctor.helper"):
        body = helper.req("list")
    assert error_code(body) == "internal"
    (audit,) = [r.getMessage() for r in caplog.records if r.name == "bridgedoctor.helper.audit"]
    assert " result=internal ms=" in audit
    assert "exploded" not in json.dumps(body)
    assert "RuntimeError" in caplog.text and TOKEN not in caplog.text
    # The admin's log has the whole traceback, line by line, with the token replaced.
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.startswith(
        "internal error answering a request:\nTraceback (most recent call last):\n  File "
    )
    assert logged.endswith(f"RuntimeError: exploded near {SECRETS[0]} with <token>")
    monkeypatch.undo()
    assert helper.req("list")["ok"] is True


# --- audit ---------------------------------------------------------------------------------------


def test_one_audit_line_per_request(helper: Running, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="bridgedoctor.helper.audit"),
        caplog.at_level(logging.DEBUG, logger="asyncio"),
    ):
        helper.req("check", "gmessages")
        helper.req("list", token="wrong-token-123456")
        helper.raw(b"\xff\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "bridgedoctor.helper.audit"]
    assert len(lines) == 3
    uid, pid = os.getuid(), os.getpid()
    assert lines[0].startswith(
        f"request op=check bridge=gmessages uid={uid} pid={pid} result=broken ms="
    )
    assert lines[1].startswith(f"request op=list bridge=- uid={uid} pid={pid} result=unauthorized")
    assert lines[2].startswith(f"request op=- bridge=- uid={uid} pid={pid} result=bad_request")
    # Nothing else went wrong on the way (asyncio logs a connection task's exception).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    for secret in (TOKEN, "wrong-token-123456", *SECRETS, "postgres://"):
        assert secret not in caplog.text


# --- the socket file -----------------------------------------------------------------------------


def _other_group() -> int:
    """A group other than ours that we may chown to (any group, as root)."""
    if os.geteuid() == 0:
        return next(g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getegid())
    others = [g for g in os.getgroups() if g != os.getegid()]
    if not others:
        pytest.skip("this user belongs to one group only")
    return others[0]


def test_socket_mode_and_group_are_applied(start: Any) -> None:
    gid = _other_group()
    helper = start(socket_mode=0o640, socket_group=gid)
    st = os.stat(helper.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == gid
    # Only its group changes: another owner could chmod the socket open to everyone.
    assert st.st_uid == os.geteuid()


def test_default_socket_mode(helper: Running) -> None:
    assert stat.S_IMODE(os.stat(helper.path).st_mode) == 0o660


def test_stale_socket_is_replaced(fleet: Host, sockdir: Path, start: Any) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sockdir / "h.sock"))
    stale.close()  # a crashed helper leaves exactly this: a socket nobody listens on
    assert start().req("list")["ok"] is True


def test_refuses_to_replace_a_non_socket(fleet: Host, sockdir: Path) -> None:
    (sockdir / "h.sock").write_text("precious")
    with pytest.raises(StartupError, match="not a socket"):
        Running(make_config(fleet, sockdir))
    assert (sockdir / "h.sock").read_text() == "precious"


def test_refuses_to_steal_a_live_socket(helper: Running, fleet: Host, sockdir: Path) -> None:
    with pytest.raises(StartupError, match="already listening"):
        Running(make_config(fleet, sockdir))
    assert helper.req("list")["ok"] is True


def test_close_finishes_in_flight_requests(
    helper: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown begins while a request is being worked on: it is answered, then the socket goes."""
    closing: list[asyncio.Task[None]] = []

    async def slow(*_: Any) -> tuple[dict[str, Any], str]:
        closing.append(asyncio.get_running_loop().create_task(helper.helper.close()))
        await asyncio.sleep(0)  # let close() stop the listener while we are still in flight
        assert not os.path.exists(helper.path) or not helper.helper._server.is_serving()
        await asyncio.sleep(0.05)
        return {"bridges": ["late"]}, "ok"

    monkeypatch.setattr(ops, "run", slow)
    body = helper.req("list")
    assert body["result"] == {"bridges": ["late"]}
    helper.call(_wait(closing))
    helper.closed = True
    assert not os.path.exists(helper.path)
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as s:
        s.connect(helper.path)


async def _wait(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks)


def test_a_socket_that_cannot_be_made_is_one_sentence_and_nothing_is_left(
    fleet: Host, sockdir: Path
) -> None:
    """Its directory is gone (no tmpfiles.d entry, say): the admin reads why, in a sentence."""
    cfg = make_config(fleet, sockdir, socket=str(sockdir / "gone" / "h.sock"))
    with pytest.raises(StartupError) as refused:
        Running(cfg)
    assert str(refused.value) == (
        f"cannot create the socket {cfg.socket}: No such file or directory."
    )
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_a_socket_whose_group_cannot_be_set_is_removed(fleet: Host, sockdir: Path) -> None:
    """The helper runs in a user namespace (a container, systemd's PrivateUsers=) where the
    configured socket_group is not mapped: bind() made the socket, chown() then fails. The
    admin reads why in a sentence, and the half-made socket (mode set, wrong group) is gone."""
    gid = next(g.gr_gid for g in grp.getgrall() if g.gr_gid != 0)  # only gid 0 is mapped
    raw = raw_config(fleet, sockdir, socket_group=gid)
    (sockdir / "raw.json").write_text(json.dumps(raw))
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from bridgedoctor.helper.config import parse\n"
        "from bridgedoctor.helper.listen import StartupError, bind\n"
        "d = Path(sys.argv[1])\n"
        "try:\n"
        "    bind(parse(json.loads((d / 'raw.json').read_text()), d / 'h.yaml'))\n"
        "except StartupError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--", sys.executable, "-c", code, str(sockdir)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"cannot create the socket {raw['socket']}: Invalid argument.\n"
    assert not os.path.lexists(raw["socket"])


def test_a_listener_with_a_full_queue_is_not_replaced(fleet: Host, sockdir: Path) -> None:
    """A helper too busy to accept still listens: its socket is not stale. (Connecting to a
    Unix socket whose queue is full fails at once with EAGAIN, whatever the timeout.)"""
    path = str(sockdir / "h.sock")
    queued: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
        busy.bind(path)
        busy.listen(0)
        inode = os.stat(path).st_ino
        try:
            with pytest.raises(BlockingIOError):  # fill its queue: connections never accepted
                for _ in range(64):
                    queued.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
                    queued[-1].setblocking(False)
                    queued[-1].connect(path)
            with pytest.raises(StartupError, match="already listening"):
                Running(make_config(fleet, sockdir))
            assert os.lstat(path).st_ino == inode
        finally:
            for s in queued:
                s.close()


def test_closing_leaves_a_newer_helpers_socket(start: Any) -> None:
    old = start()
    os.unlink(old.path)  # the admin removed it, and a new helper now serves at the same path
    new = start()
    old.call(old.helper.close())
    old.closed = True
    assert new.req("list")["ok"] is True


def test_closing_after_the_socket_went_away(helper: Running) -> None:
    os.unlink(helper.path)
    helper.call(helper.helper.close())
    helper.closed = True
    assert not os.path.exists(helper.path)


def test_without_its_inode_only_a_socket_is_removed(sockdir: Path) -> None:
    kept = sockdir / "file"
    kept.write_text("precious")
    listen.unlink_if_ours(kept, None)
    assert kept.read_text() == "precious"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(sockdir / "sock"))
    listen.unlink_if_ours(sockdir / "sock", None)
    assert not (sockdir / "sock").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_helper_and_removes_its_socket(
    fleet: Host, sockdir: Path, sig: signal.Signals
) -> None:
    """As systemd stops it: the helper answers, gets the signal, closes and removes its socket.
    Served here on the test's main thread, where signal handlers live."""
    helper = Helper(make_config(fleet, sockdir))
    path = str(helper.cfg.socket)
    answers: list[dict[str, Any]] = []

    def client() -> None:
        line = json.dumps({"v": VERSION, "token": TOKEN, "op": "list"}).encode() + b"\n"
        answers.append(answer(exchange(path, line)))
        os.kill(os.getpid(), sig)

    async def serve() -> None:
        await helper.start()
        threading.Thread(target=client, daemon=True).start()
        await helper.run_until_signal()  # the handlers are set before the loop reads the request

    asyncio.run(asyncio.wait_for(serve(), 60))
    assert [a["ok"] for a in answers] == [True]
    assert not os.path.exists(path)


def test_a_request_without_end_of_file_is_answered_at_its_newline(start: Any) -> None:
    """The line ends the request: a client that keeps its side open (as the plugin may) gets
    its answer at once, not after read_timeout."""
    helper = start(read_timeout=30)
    line = json.dumps({"v": VERSION, "token": TOKEN, "op": "list"}).encode() + b"\n"
    started = time.monotonic()
    body = answer(helper.raw(line, eof=False, timeout=60))
    assert body["ok"] is True and time.monotonic() - started < 20


def test_a_client_gone_before_its_answer_costs_nothing(
    helper: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """The client sends its request and closes at once: the answer (a fleet check takes a
    while) cannot be delivered, which the helper notes (debug) and gets over: one audit line
    each, nothing logged as a problem, and it serves the next request."""
    line = json.dumps({"v": VERSION, "token": TOKEN, "op": "check_all"}).encode() + b"\n"

    def audit() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "bridgedoctor.helper.audit"]

    with (
        caplog.at_level(logging.DEBUG, logger="bridgedoctor.helper"),
        caplog.at_level(logging.DEBUG, logger="asyncio"),
    ):
        for _ in range(2):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(helper.path)
                s.sendall(line)
        deadline = time.monotonic() + 60
        while len(audit()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # what follows an audit line: the send, and its failure
        assert helper.req("list")["ok"] is True
    said = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert len(audit()) == 3 and all(" result=broken,ok ms=" in m for m in audit()[:2])
    gone = ("bridgedoctor.helper", logging.DEBUG, "client went away before the answer was sent")
    assert said.count(gone) == 2
    assert [m for _, level, m in said if level >= logging.WARNING] == []


def test_a_client_that_stops_reading_does_not_pin_the_answer(
    fleet: Host, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends its request and then never reads: the answer (larger than both
    sockets' buffers here) can neither be flushed nor the connection closed cleanly. Each wait is
    bounded by read_timeout, and neither time-out escapes: on Python 3.10 asyncio's TimeoutError
    is not an OSError, so both must be named."""
    helper = Helper(make_config(fleet, sockdir, read_timeout=0.3))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    async def send() -> tuple[float, bool]:
        _, writer = await asyncio.open_unix_connection(sock=ours)
        started = time.monotonic()
        await helper._send(writer, b"x" * (16 << 20))
        return time.monotonic() - started, writer.is_closing()

    try:
        with caplog.at_level(logging.DEBUG, logger="bridgedoctor.helper"):
            took, closing = asyncio.run(asyncio.wait_for(send(), 30))
    finally:
        theirs.close()
    assert closing and 0.5 <= took < 10, took
    said = [r.getMessage() for r in caplog.records if r.name == "bridgedoctor.helper"]
    assert said == ["client went away before the answer was sent"]


def test_a_backup_dir_the_helper_cannot_list_hides_neither_kind(
    fleet: Host, sockdir: Path
) -> None:
    """Root that may not read every directory (a backup share exported with root_squash; here,
    a helper without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH) cannot list a backup directory
    another user owns: recovery at start says so once for each kind, the resets' failure does
    not stop the applies from being tried, and recovery returns (the helper then serves)."""
    raw = raw_config(fleet, sockdir, allow_reset=True)
    backups = Path(raw["backup_dir"])
    backups.mkdir(mode=0o700)
    os.chown(backups, 65534, 65534)
    (sockdir / "raw.json").write_text(json.dumps(raw))
    code = (
        "import asyncio, json, logging, sys\n"
        "from pathlib import Path\n"
        "from bridgedoctor.helper.config import parse\n"
        "from bridgedoctor.helper.server import Helper\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "d = Path(sys.argv[1])\n"
        "asyncio.run(Helper(parse(json.loads((d / 'raw.json').read_text()), d / 'h.yaml')).recover())\n"
    )
    drop = "-dac_override,-dac_read_search"
    done = subprocess.run(
        ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", "--",
         sys.executable, "-c", code, str(sockdir)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    denied = f"[Errno 13] Permission denied: '{backups}'"
    assert done.stdout.splitlines() == [
        f"ERROR could not recover interrupted resets in {backups}: {denied}",
        f"ERROR could not recover interrupted applies in {backups}: {denied}",
    ], done.stdout + done.stderr
