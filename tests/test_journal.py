"""Reading what a bridge wrote: scrubbing, the log formats, journalctl's JSON, systemctl show."""
# ruff: noqa: E501 - log lines are quoted whole

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bridgedoctor import logline
from bridgedoctor.facts import ProbeError, ServiceFacts
from bridgedoctor.probes import journal, service
from bridgedoctor.scrub import scrub
from tests.support.facts import service as facts_service

ESC = "\x1b"


# ---- scrubbing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "GET https://hs/_matrix/client/v3/sync?since=s1&access_token=syt_YWxpY2U_abcdefghijkl_0",
            "syt_YWxpY2U",
        ),
        ('error="dial: postgres://mautrix:Db-Pa55word-7f3c@matrix-postgres/db"', "Db-Pa55word"),
        ("Authorization: Bearer mct_0123456789abcdefABCDEF", "mct_0123"),
        ("password=hunter2hunter2 user=bob", "hunter2"),
        ('"as_token": "5c0a3f8e-tok-value"', "tok-value"),
        ("hs_token: abc-def-ghi-jkl", "abc-def"),
        ("pickle_key=go.mau.fi/secretish-key", "secretish"),
        ("shared_secret='quoted secret value'", "quoted secret"),
        (
            "token 3f2a1b4c-9d8e-4f70-8a6b-5c4d3e2f1a0b rejected",
            "3f2a1b4c",
        ),  # MDAD's tokens are UUIDs
        ("cookie=sessionid%3Dabc123", "sessionid"),
        (
            "recovery key EsTy 8Q2s Zx4a 9k3L long=EsTy8Q2sZx4a9k3LmN7pQ2rS5tU8vW1xY4zA",
            "EsTy8Q2sZx4a9k3L",
        ),
    ],
)
def test_secrets_are_scrubbed(text: str, secret: str) -> None:
    out = scrub(text)
    assert secret not in out and "<redacted>" in out


def test_known_secret_values_are_scrubbed_wherever_they_appear() -> None:
    out = scrub(
        "registered with plainword-that-is-secret in the middle", ["plainword-that-is-secret"]
    )
    assert out == "registered with <redacted> in the middle"
    assert scrub("short", ["short"]) == "short"  # a few letters are not a secret worth a mask


@pytest.mark.parametrize(
    "text",
    [
        'FTL Failed to start bridge error="failed to start Matrix connector: the supplied account key is invalid"',
        "M_UNKNOWN_TOKEN (HTTP 401): Unknown access token",
        "Server already has cross-signing keys, but no key in database. Add `recovery_key` to `kv_store`",
        "Configuration error: appservice.as_token not configured",
        "the database is owned by megabridge/mautrix-whatsapp",
        "maunium.net/go/mautrix-whatsapp",
        "txn_id=1724062800123",
    ],
)
def test_words_that_name_secrets_are_not_secrets(text: str) -> None:
    assert scrub(text) == text


# ---- log formats ------------------------------------------------------------------------------
def test_pretty_colored_zerolog() -> None:
    raw = (
        f"{ESC}[90m2026-08-22T10:00:00.123Z{ESC}[0m {ESC}[31mFTL{ESC}[0m {ESC}[1mFailed to start bridge{ESC}[0m "
        f'{ESC}[36merror={ESC}[0m{ESC}[31m{ESC}[1m"failed: the supplied account key is invalid"{ESC}[0m{ESC}[0m'
    )
    line = logline.parse(raw)
    assert line.level == "fatal"
    assert (
        line.text
        == 'FTL Failed to start bridge error="failed: the supplied account key is invalid"'
    )


def test_pretty_without_timestamp_and_levels() -> None:
    assert logline.parse("WRN careful").level == "warning"
    assert logline.parse("2026-08-22T10:00:00Z ERR boom").text == "ERR boom"
    assert logline.parse("2026-08-22T10:00:00Z INF fine").level == "info"


def test_json_zerolog_puts_error_first() -> None:
    raw = json.dumps(
        {"level": "error", "z": 1, "error": "boom x", "message": "Failed", "time": "t"}
    )
    line = logline.parse(raw)
    assert (line.level, line.text) == ("error", 'ERR Failed error="boom x" z=1')


def test_python_coloured_record_with_traceback() -> None:
    raws = [
        f"[2026-08-22 10:00:00,123] [{ESC}[37;1m{ESC}[41mCRITICAL{ESC}[0m@{ESC}[32mmau.init{ESC}[0m] Failed to initialize database",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "mautrix.util.async_db.errors.UnsupportedDatabaseVersion: Unsupported main schema version v12 (latest known is v10)",
        "[2026-08-22 10:00:01,000] [WARNING@mau.as] next record",
    ]
    lines = logline.group(logline.parse(r) for r in raws)
    assert [ln.level for ln in lines] == ["fatal", "warning"]
    assert lines[0].text == "FTL [mau.init] Failed to initialize database"
    assert (
        lines[0].detail[-1].startswith("mautrix.util.async_db.errors.UnsupportedDatabaseVersion")
    )


def test_go_panic_with_goroutine_dump() -> None:
    raws = [
        "panic: CryptoPickleKey not set",
        "",
        "goroutine 1 [running]:",
        "main.main()",
        "\t/build/main.go:12",
    ]
    (line,) = logline.group(logline.parse(r) for r in raws)
    assert line.level == "panic" and line.detail[:2] == ("goroutine 1 [running]:", "main.main()")


def test_a_huge_line_is_cut() -> None:
    line = logline.parse("ERR " + "x" * 100_000)
    assert len(line.text) <= logline.MAX_LINE + 4


# ---- journalctl -o json -----------------------------------------------------------------------
def _entry(**fields: object) -> bytes:
    base: dict[str, object] = {
        "__MONOTONIC_TIMESTAMP": "100",
        "__REALTIME_TIMESTAMP": "1796006297205426",
    }
    return json.dumps({**base, **fields}).encode()


def test_binary_message_is_decoded() -> None:
    text = f"{ESC}[31mFTL{ESC}[0m boom"
    e = journal.decode(
        _entry(MESSAGE=list(text.encode()), _PID="68", _SYSTEMD_INVOCATION_ID="abc")
    )
    assert e is not None and e.message == text and not e.manager and e.invocation == "abc"
    assert logline.parse(e.message).text == "FTL boom"


def test_manager_messages_and_exit_status() -> None:
    e = journal.decode(
        _entry(
            MESSAGE="x.service: Main process exited, code=exited, status=16/n/a",
            _PID="1",
            SYSLOG_IDENTIFIER="systemd",
        )
    )
    assert e is not None and e.manager and e.exit == ("exited", 16)
    k = journal.decode(
        _entry(MESSAGE="x.service: Main process exited, code=killed, status=9/KILL", _PID="1")
    )
    assert k is not None and k.exit == ("killed", 9)
    s = journal.decode(_entry(MESSAGE="exited", _PID="1", EXIT_CODE="exited", EXIT_STATUS="13"))
    assert s is not None and s.exit == ("exited", 13)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'{"MESSAGE": 5}', b'{"x": 1}'])
def test_garbage_is_skipped(raw: bytes) -> None:
    assert journal.decode(raw) is None


def test_runs_are_split_by_start_and_invocation() -> None:
    def e(mono: int, inv: str, manager: bool = False) -> journal.Entry:
        return journal.Entry(f"m{mono}", mono, 0.0, inv, manager)

    found = [e(10, "a"), e(20, "b"), e(25, "", True), e(30, "b"), e(40, "c"), e(50, "c")]
    current, before = journal.split(found, 40)
    assert [x.mono for x in current] == [40, 50]
    assert [x.mono for x in before] == [20, 30]  # run b only; systemd's line left out
    current, before = journal.split(found, 0)  # the next start is under way
    assert current == [] and [x.mono for x in before] == [40, 50]


# ---- systemctl show ---------------------------------------------------------------------------
SHOW = """Id=matrix-mautrix-x.service
LoadState=loaded
ActiveState=activating
SubState=auto-restart
Result=exit-code
ExecMainCode=1
ExecMainStatus=16
NRestarts=7
ExecMainStartTimestampMonotonic=1000000
ActiveEnterTimestampMonotonic=1000000
InvocationID=abc
"""


def test_show_is_parsed() -> None:
    s = service.parse("x.service", SHOW, now=31_000_000)
    assert not isinstance(s, ProbeError)
    assert (s.active_state, s.sub_state, s.restarts, s.exit_text, s.age) == (
        "activating",
        "auto-restart",
        7,
        "exit status 16",
        30.0,
    )
    killed = service.parse(
        "x", SHOW.replace("ExecMainCode=1", "ExecMainCode=2").replace("=16", "=9"), 0
    )
    assert not isinstance(killed, ProbeError) and killed.exit_text == "killed by signal 9"


def test_show_without_state_could_not_determine() -> None:
    out = service.parse("x.service", "inactive\n", 0)  # e.g. a fake systemctl's answer
    assert isinstance(out, ProbeError) and out.code == "service_unknown"


async def test_a_missing_tool_could_not_determine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    out = await service.show("x.service")
    assert isinstance(out, ProbeError) and "not installed" in out.message


def _tool(tmp_path, name: str, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for a host tool at the process boundary (first on PATH)."""
    tool = tmp_path / name
    tool.write_text("#!/bin/sh\n" + script + "\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


async def test_a_hanging_tool_is_could_not_determine_not_a_hang(tmp_path, monkeypatch) -> None:
    import time

    _tool(tmp_path, "systemctl", "sleep 30", monkeypatch)
    started = time.monotonic()
    out = await service.show("x.service", timeout=0.5)
    assert isinstance(out, ProbeError) and out.message == "systemctl did not answer within 0.5 s."
    assert time.monotonic() - started < 3


async def test_a_flood_is_cut_at_the_byte_bound(tmp_path, monkeypatch) -> None:
    from bridgedoctor.probes.command import run

    _tool(
        tmp_path,
        "journalctl",
        'yes \'{"MESSAGE": "ERR again", "__MONOTONIC_TIMESTAMP": "5"}\'',
        monkeypatch,
    )
    # Generous timeouts: this is about the byte bound, and a loaded CI machine may take seconds
    # to decode 4 MiB of lines (a hanging tool has its own test).
    out = await run(["journalctl"], code="journal_unknown", timeout=30, max_bytes=100_000)
    assert not isinstance(out, ProbeError)
    assert out.truncated and len(out.stdout) == 100_000
    got = await journal.entries("x.service", timeout=30)  # the 4 MiB bound: read, cut, decoded
    assert not isinstance(got, ProbeError)
    found, cut = got
    assert cut and found and found[0].message == "ERR again"


async def test_output_past_the_bound_that_waits_in_the_pipe_is_still_an_answer(
    tmp_path, monkeypatch
) -> None:
    """Two megabytes written at once, then the tool waits: the reader's buffer is full (paused)
    when the bound is reached, and asyncio wakes wait() only when every pipe has closed. Cut at
    the bound and answered, not "did not answer" at the timeout."""
    from bridgedoctor.probes.command import run

    _tool(tmp_path, "journalctl", "head -c 2000000 /dev/zero; sleep 60", monkeypatch)
    # Whether the buffer is full at the cut is a race (lost in about half the runs of this test
    # without the drain, more often on a loaded machine): 20 tries.
    for _ in range(20):
        out = await run(["journalctl"], code="journal_unknown", timeout=5, max_bytes=100_000)
        assert not isinstance(out, ProbeError), out
        assert out.truncated and out.stdout == bytes(100_000)


async def test_a_fleet_asks_systemctl_once(tmp_path, monkeypatch) -> None:
    """One `systemctl show` for all the units; a unit whose block is missing is asked alone."""
    log = tmp_path / "calls"
    _tool(
        tmp_path,
        "systemctl",
        f"""echo "$*" >> {log}
shift
n=0
for u in "$@"; do case "$u" in --*) ;; *) n=$((n+1)) ;; esac; done
sep=""
for u in "$@"; do
  case "$u" in --*) continue ;; esac
  if [ "$u" = b.service ] && [ "$n" -gt 1 ]; then continue; fi
  printf "${{sep}}Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=%s\\nNRestarts=%s\\n" \\
    "$u" "${{u%.service}}-sub" "${{#u}}"
  sep="\\n"
done""",
        monkeypatch,
    )
    states = await service.show_many(["a.service", "b.service", "ccc.service"])
    assert {u: (s.unit, s.sub_state, s.restarts) for u, s in states.items()} == {  # type: ignore[union-attr]
        "a.service": ("a.service", "a-sub", 9),
        "b.service": ("b.service", "b-sub", 9),
        "ccc.service": ("ccc.service", "ccc-sub", 11),
    }
    calls = log.read_text().splitlines()
    assert [c.split(" --")[0] for c in calls] == [
        "show a.service b.service ccc.service",
        "show b.service",
    ]


async def test_a_fleet_whose_systemctl_fails_says_so_for_each_unit(tmp_path, monkeypatch) -> None:
    _tool(
        tmp_path,
        "systemctl",
        "echo 'Failed to connect to bus: Host is down' >&2; exit 1",
        monkeypatch,
    )
    states = await service.show_many(["a.service", "b.service"])
    assert [(s.code, s.message) for s in states.values()] == [  # type: ignore[union-attr]
        ("service_unknown", f"systemctl show {u} failed: Failed to connect to bus: Host is down")
        for u in ("a.service", "b.service")
    ]


# ---- command.run: the bounds, the environment, the answer ------------------------------------
async def test_a_tool_sees_only_path_and_systemds_quiet_settings(tmp_path, monkeypatch) -> None:
    """No pager, no colours, no localisation, and nothing else of the caller's environment."""
    from bridgedoctor.probes.command import run

    _tool(tmp_path, "systemctl", "env", monkeypatch)
    monkeypatch.setenv("BD_CALLER_SECRET", "s3cret")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    out = await run(["systemctl"], code="service_unknown")
    assert not isinstance(out, ProbeError)
    env = dict(line.split("=", 1) for line in out.stdout.decode().splitlines())
    env.pop("PWD", None)  # the shell sets it itself
    env.pop("SHLVL", None)
    env.pop("_", None)
    assert env == {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "SYSTEMD_PAGER": "",
        "SYSTEMD_COLORS": "0",
        "SYSTEMD_LOG_COLOR": "0",
    }


async def test_a_tool_gets_its_arguments_and_an_empty_stdin(tmp_path, monkeypatch) -> None:
    from bridgedoctor.probes.command import Output, run

    _tool(tmp_path, "journalctl", 'printf "%s|" "$@"; cat; echo end', monkeypatch)
    out = await run(["journalctl", "-u", "a b", "--x=1"], code="journal_unknown")
    assert out == Output(0, b"-u|a b|--x=1|end\n", (), False)


async def test_the_exit_status_and_every_line_of_stderr_are_kept(tmp_path, monkeypatch) -> None:
    from bridgedoctor.probes.command import Output, run

    long = "y" * 300
    _tool(
        tmp_path,
        "systemctl",
        f"printf 'out'; printf '\\n\\n  first \\n{long}\\n \\n\\tlast' >&2; exit 3",
        monkeypatch,
    )
    out = await run(["systemctl"], code="service_unknown")
    assert out == Output(3, b"out", ("first", "y" * 200, "last"), False)
    _tool(tmp_path, "systemctl", "printf 'bad \\377 byte' >&2", monkeypatch)
    out = await run(["systemctl"], code="service_unknown")
    assert out == Output(0, b"", ("bad \ufffd byte",), False)


def test_how_a_tool_ended_in_words() -> None:
    from bridgedoctor.probes.command import ended

    assert [ended(n) for n in (0, 3, 255, -9)] == [
        "exit status 0",
        "exit status 3",
        "exit status 255",
        "killed by signal 9",
    ]


async def test_output_of_exactly_the_bound_is_not_cut(tmp_path, monkeypatch) -> None:
    from bridgedoctor.probes.command import run

    for size, cut in ((100_000, False), (100_001, True), (65_536, False), (65_537, True)):
        _tool(tmp_path, "journalctl", f"head -c {size} /dev/zero", monkeypatch)
        limit = 100_000 if size > 65_537 else 65_536
        out = await run(["journalctl"], code="journal_unknown", max_bytes=limit)
        assert not isinstance(out, ProbeError)
        assert (out.truncated, out.stdout) == (cut, bytes(min(size, limit))), size


async def test_a_tool_that_cannot_be_started_could_not_determine(tmp_path, monkeypatch) -> None:
    from bridgedoctor.probes.command import run

    _tool(tmp_path, "systemctl", "", monkeypatch)
    (tmp_path / "systemctl").write_text("#!/nonexistent/interpreter\n")
    out = await run(["systemctl", "show"], code="service_unknown")
    assert out == ProbeError("service_unknown", "systemctl could not be run (FileNotFoundError).")
    monkeypatch.setenv("PATH", "/nonexistent")
    out = await run(["journalctl"], code="journal_unknown")
    assert out == ProbeError("journal_unknown", "journalctl is not installed or not on PATH.")


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of a process that was not ours to reap still answers kill(0): read its state.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


async def test_a_timeout_kills_what_the_tool_started_too(tmp_path, monkeypatch) -> None:
    """The tool runs in its own process group, and the kill reaches the whole group."""
    import asyncio

    from bridgedoctor.probes.command import run

    pidfile = tmp_path / "child"
    _tool(tmp_path, "systemctl", f"sleep 60 & echo $! > {pidfile}; wait", monkeypatch)
    out = await run(["systemctl"], code="service_unknown", timeout=1.0)
    assert out == ProbeError("service_unknown", "systemctl did not answer within 1 s.")
    child = int(pidfile.read_text())
    for _ in range(50):
        if _gone(child):
            break
        await asyncio.sleep(0.1)
    assert _gone(child), "the tool's own child outlived the timeout"


async def test_a_cut_kills_what_the_tool_started_too(tmp_path, monkeypatch) -> None:
    import asyncio

    from bridgedoctor.probes.command import run

    pidfile = tmp_path / "child"
    _tool(
        tmp_path,
        "journalctl",
        f"(sleep 60; echo late) & echo $! > {pidfile}; head -c 200000 /dev/zero; wait",
        monkeypatch,
    )
    out = await run(["journalctl"], code="journal_unknown", timeout=10, max_bytes=1000)
    assert not isinstance(out, ProbeError) and out.truncated and out.stdout == bytes(1000)
    child = int(pidfile.read_text())
    for _ in range(50):
        if _gone(child):
            break
        await asyncio.sleep(0.1)
    assert _gone(child), "the tool's own child outlived the cut"


async def test_a_child_holding_stderr_open_does_not_hold_the_answer(tmp_path, monkeypatch) -> None:
    """The tool has answered and exited; something it left behind keeps stderr open. (asyncio's
    own wait() waits for every pipe it watches to close: its stderr pipe made this answer wait
    for the child, up to the timeout, whenever the tool was still running when waited for.)"""
    import time

    from bridgedoctor.probes.command import Output, run

    _tool(
        tmp_path,
        "systemctl",
        "sleep 30 >/dev/null & echo done; echo warned >&2; exec >&-; sleep 0.5",
        monkeypatch,
    )
    started = time.monotonic()
    out = await run(["systemctl"], code="service_unknown", timeout=20)
    assert out == Output(0, b"done\n", ("warned",), False)
    assert time.monotonic() - started < 15


async def test_a_tool_that_says_much_on_stderr_is_not_stalled(tmp_path, monkeypatch) -> None:
    """Its stderr is read as it comes: 1 MB there neither fills the pipe nor the answer."""
    from bridgedoctor.probes.command import Output, run

    _tool(
        tmp_path,
        "journalctl",
        "echo first >&2; head -c 1000000 /dev/zero | tr '\\0' x >&2; echo answered",
        monkeypatch,
    )
    out = await run(["journalctl"], code="journal_unknown", timeout=20)
    assert out == Output(0, b"answered\n", ("first", "x" * 200), False)
    _tool(tmp_path, "journalctl", "head -c 5000 /dev/zero | tr '\\0' x >&2", monkeypatch)
    out = await run(["journalctl"], code="journal_unknown")
    assert out == Output(0, b"", ("x" * 200,), False)


# ---- service: systemctl show, field by field ------------------------------------------------
PROPS = (
    "Id,LoadState,ActiveState,SubState,Result,ExecMainCode,ExecMainStatus,NRestarts,"
    "ExecMainStartTimestampMonotonic,ActiveEnterTimestampMonotonic,InvocationID"
)


def test_now_mono_is_the_monotonic_clock_in_microseconds() -> None:
    import time

    before = time.monotonic_ns() // 1000
    now = service.now_mono()
    after = time.monotonic_ns() // 1000
    assert type(now) is int and before <= now <= after


def test_show_is_parsed_field_by_field() -> None:
    from bridgedoctor.facts import ServiceFacts

    text = SHOW.replace("ActiveEnterTimestampMonotonic=1000000", "ActiveEnterTimestampMonotonic=7")
    assert service.parse("x.service", text, now=31_000_000) == ServiceFacts(
        unit="x.service",
        load_state="loaded",
        active_state="activating",
        sub_state="auto-restart",
        result="exit-code",
        exit_code="exited",
        exit_status=16,
        restarts=7,
        main_start_mono=1_000_000,
        active_enter_mono=7,
        age=30.0,
        invocation="abc",
    )


def test_show_of_a_unit_that_never_ran() -> None:
    """No main process yet: no exit, no age; absent, empty and odd numbers read as 0."""
    from bridgedoctor.facts import ServiceFacts

    text = "LoadState=loaded\nActiveState=inactive\nSubState=dead\nNRestarts=\nExecMainStatus=x\n"
    assert service.parse("y.service", text, now=5) == ServiceFacts(
        unit="y.service",
        load_state="loaded",
        active_state="inactive",
        sub_state="dead",
        result="",
        exit_code="",
        exit_status=None,
        restarts=0,
        main_start_mono=0,
        active_enter_mono=0,
        age=None,
        invocation="",
    )
    odd = service.parse("y", text + "NRestarts=many\nExecMainCode=1\nExecMainStatus=-\n", 5)
    assert not isinstance(odd, ProbeError)
    assert (odd.restarts, odd.exit_code, odd.exit_status) == (0, "exited", 0)
    # An ExecMainCode systemd does not define (0: no process has ended) says nothing.
    none = service.parse("y", text + "ExecMainCode=0\nExecMainStatus=3\n", 5)
    assert not isinstance(none, ProbeError) and (none.exit_code, none.exit_status) == ("", None)


def test_show_values_holding_equals_signs_and_clock_skew() -> None:
    text = SHOW.replace("InvocationID=abc", "InvocationID=a=b=c").replace(
        "Result=exit-code", "Result=x=y"
    )
    s = service.parse("x.service", text, now=400_000)  # read before the start was stamped
    assert not isinstance(s, ProbeError)
    assert (s.invocation, s.result, s.age) == ("a=b=c", "x=y", 0.0)


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("", "LoadState, ActiveState, SubState"),
        ("LoadState=loaded\nActiveState=active\nSubState=\n", "SubState"),
        ("ActiveState=active\nSubState=running\n", "LoadState"),
        ("LoadState=loaded\nSubState=running\n", "ActiveState"),
    ],
)
def test_show_says_which_state_is_missing(text: str, missing: str) -> None:
    assert service.parse("x.service", text, 0) == ProbeError(
        "service_unknown", f"systemctl show x.service did not report {missing}."
    )


def _systemctl(tmp_path, monkeypatch, body: str) -> Path:
    """A systemctl that logs its arguments, one call a line, then runs `body`."""
    log = tmp_path / "calls"
    _tool(tmp_path, "systemctl", f'echo "$*" >> {log}\n{body}', monkeypatch)
    return log


async def test_show_asks_for_its_properties_and_nothing_else(tmp_path, monkeypatch) -> None:
    start = service.now_mono() - 5_000_000
    log = _systemctl(
        tmp_path,
        monkeypatch,
        "printf 'Id=x.service\\nLoadState=loaded\\nActiveState=active\\nSubState=r\\377n\\n"
        f"ExecMainStartTimestampMonotonic={start}\\n'",
    )
    s = await service.show("x.service")
    assert not isinstance(s, ProbeError)
    assert s.sub_state == "r\ufffdn" and s.main_start_mono == start
    assert s.age is not None and 5.0 <= s.age < 60
    assert log.read_text() == f"show x.service --no-pager --property={PROPS}\n"


async def test_show_of_a_failing_systemctl_without_a_word(tmp_path, monkeypatch) -> None:
    _systemctl(tmp_path, monkeypatch, "exit 4")
    assert await service.show("x.service") == ProbeError(
        "service_unknown", "systemctl show x.service failed: exit status 4"
    )


def _padded(unit: str) -> str:
    """A `systemctl show` block whose SubState starts exactly 64 KiB into the answer."""
    head = f"Id={unit}\nLoadState=loaded\nActiveState=active\n"
    pad = 64 * 1024 - len(head) - len("Description=\n")
    return f"printf '{head}Description=%s\\nSubState=running\\n' \"$(head -c {pad} /dev/zero | tr '\\0' x)\""


async def test_an_answer_is_read_to_64_kib_a_unit(tmp_path, monkeypatch) -> None:
    """Past the bound the answer is cut (and systemctl killed): could not determine, however
    the cut reads (the tool may or may not have exited before the kill)."""
    _systemctl(tmp_path, monkeypatch, _padded("x.service"))
    cut = ProbeError(
        "service_unknown",
        "systemctl show x.service did not answer completely: its answer passed 64 KiB and was cut.",
    )
    assert await service.show("x.service") == cut
    assert await service.show_many(["x.service"]) == {"x.service": cut}
    # Two units may take 128 KiB: one long block is read whole.
    _systemctl(
        tmp_path,
        monkeypatch,
        _padded("a.service")
        + "; printf '\\nId=b.service\\nLoadState=loaded\\nActiveState=active\\nSubState=x\\n'",
    )
    states = await service.show_many(["a.service", "b.service"])
    a = states["a.service"]
    assert not isinstance(a, ProbeError) and a.sub_state == "running"


# A block whose states come first and whose NRestarts lies past the bound of two units.
_LONG_BLOCK = (
    "printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\n"
    'Description=%s\\nNRestarts=7\\n\' "$1" "$(head -c 140000 /dev/zero | tr \'\\0\' x)"'
)


async def test_a_cut_answer_is_never_read_as_a_state(tmp_path, monkeypatch) -> None:
    """systemctl gone with status 0 before the cut (here its child writes the answer): the
    states before the cut are there, NRestarts is not. Not a running unit that never
    restarted: it did not answer completely, whatever its exit status. The same in a fleet
    for the unit whose block was cut, while the blocks before it stand."""
    _systemctl(
        tmp_path,
        monkeypatch,
        f"long() {{ {_LONG_BLOCK}; }}\n"
        'if [ "$3" = b.service ]; then\n'
        "  (printf 'Id=a.service\\nLoadState=loaded\\nActiveState=active\\nSubState=a\\n\\n'"
        "; long b.service) &\n"
        "else (long $2) & fi\n"
        "exit 0",
    )
    cut = ProbeError(
        "service_unknown",
        "systemctl show b.service did not answer completely: its answer passed 64 KiB and was cut.",
    )
    for _ in range(3):  # the exit status is a race, the outcome is not
        assert await service.show("b.service") == cut
        states = await service.show_many(["a.service", "b.service"])
        a = states["a.service"]
        assert not isinstance(a, ProbeError) and a.sub_state == "a"
        assert states["b.service"] == cut


async def test_a_systemctl_killed_part_way_did_not_answer_completely(
    tmp_path, monkeypatch
) -> None:
    """Killed in the middle of a state (the OOM killer, say): not "exit status -9", and not a
    unit in state "runn". In a fleet the whole blocks before stand and the unit of the cut one
    is asked alone."""
    log = _systemctl(
        tmp_path,
        monkeypatch,
        'if [ "$3" = b.service ] || [ -e ' + str(tmp_path / "kill") + " ]; then\n"
        "  printf 'Id=a.service\\nLoadState=loaded\\nActiveState=active\\nSubState=a\\n\\n"
        "Id=b.service\\nLoadState=loaded\\nActiveState=active\\nSubState=runn'\n"
        "  kill -9 $$\n"
        "fi\n"
        "printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\n' $2",
    )
    states = await service.show_many(["a.service", "b.service"])
    assert {u: getattr(s, "sub_state", s) for u, s in states.items()} == {
        "a.service": "a",
        "b.service": "running",
    }
    assert [c.split(" --")[0] for c in log.read_text().splitlines()] == [
        "show a.service b.service",
        "show b.service",
    ]
    (tmp_path / "kill").touch()
    assert await service.show("b.service") == ProbeError(
        "service_unknown",
        "systemctl show b.service did not answer completely: it was killed by signal 9.",
    )


async def test_a_failing_systemctl_says_its_last_word(tmp_path, monkeypatch) -> None:
    """systemd's tools warn first and say what went wrong last."""
    _systemctl(
        tmp_path,
        monkeypatch,
        "echo 'Warning: something minor' >&2; echo 'Failed to connect to bus: Host is down' >&2"
        "; exit 1",
    )
    why = "Failed to connect to bus: Host is down"
    assert await service.show("x.service") == ProbeError(
        "service_unknown", f"systemctl show x.service failed: {why}"
    )
    assert await service.show_many(["a.service"]) == {
        "a.service": ProbeError("service_unknown", f"systemctl show a.service failed: {why}")
    }


async def test_a_fleet_without_systemctl_could_not_determine_each(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = ProbeError("service_unknown", "systemctl is not installed or not on PATH.")
    assert await service.show_many(["a.service", "b.service"]) == {
        "a.service": missing,
        "b.service": missing,
    }


async def test_a_fleet_of_none_starts_nothing(tmp_path, monkeypatch) -> None:
    log = _systemctl(tmp_path, monkeypatch, "echo Id=x")
    assert await service.show_many([]) == {}
    assert not log.exists()


async def test_a_fleet_answer_keeps_only_the_units_asked(tmp_path, monkeypatch) -> None:
    """Blocks without an Id, for units not asked, or twice for one unit: the first answer of
    each unit asked counts. Its age is measured against the clock when the answer came."""
    start = service.now_mono() - 5_000_000
    log = _systemctl(
        tmp_path,
        monkeypatch,
        "printf 'LoadState=loaded\\n\\n"
        "Id=zzz.service\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\n\\n"
        "Id=a.service\\nLoadState=loaded\\nActiveState=active\\nSubState=fir\\377st\\n"
        f"ExecMainStartTimestampMonotonic={start}\\n\\n"
        "Id=a.service\\nLoadState=loaded\\nActiveState=active\\nSubState=second\\n\\n'",
    )
    states = await service.show_many(["a.service"])
    assert list(states) == ["a.service"]
    a = states["a.service"]
    assert not isinstance(a, ProbeError) and a.sub_state == "fir\ufffdst"
    assert a.age is not None and 5.0 <= a.age < 60
    assert log.read_text() == f"show a.service --no-pager --property={PROPS}\n"


async def test_a_fleet_is_bounded_in_time_and_so_is_each_unit_asked_alone(
    tmp_path, monkeypatch
) -> None:
    import time

    _systemctl(tmp_path, monkeypatch, "sleep 10")
    late = ProbeError("service_unknown", "systemctl did not answer within 0.5 s.")
    started = time.monotonic()
    assert await service.show_many(["a.service"], timeout=0.5) == {"a.service": late}
    assert time.monotonic() - started < 5
    # Asked together it answers at once, but not for b; asked alone about b it hangs.
    _systemctl(
        tmp_path,
        monkeypatch,
        'if [ "$2" = b.service ]; then sleep 5; fi\n'
        "printf 'Id=a.service\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\n'",
    )
    states = await service.show_many(["a.service", "b.service"], timeout=0.5)
    assert states["b.service"] == late
    assert not isinstance(states["a.service"], ProbeError)


# ---- journal: entries decoded field by field, read through journalctl ------------------------
def test_an_entry_is_decoded_field_by_field() -> None:
    e = journal.decode(
        json.dumps(
            {
                "MESSAGE": "ERR x",
                "__MONOTONIC_TIMESTAMP": "1234",
                "__REALTIME_TIMESTAMP": "1796006297205426",
                "_SYSTEMD_INVOCATION_ID": "inv",
                "_BOOT_ID": "boot",
                "_PID": "68",
            }
        ).encode()
    )
    assert e == journal.Entry("ERR x", 1234, 1796006297.205426, "inv", False, None, "boot")


def test_an_entry_without_stamps_or_with_odd_fields() -> None:
    e = journal.decode(b'{"MESSAGE": "hi", "_SYSTEMD_INVOCATION_ID": 5, "_BOOT_ID": ["b"]}')
    assert e == journal.Entry("hi", 0, 0.0, "", False, None, "")
    for bad in ('"abc"', "null", "[1]"):
        assert (
            journal.decode(f'{{"MESSAGE": "hi", "__MONOTONIC_TIMESTAMP": {bad}}}'.encode()) is None
        )
        assert (
            journal.decode(f'{{"MESSAGE": "hi", "__REALTIME_TIMESTAMP": {bad}}}'.encode()) is None
        )


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (list(b"caf\xc3\xa9 \xff"), "café \ufffd"),  # bytes, not all UTF-8
        (["first", "second"], "first\nsecond"),  # a field logged twice
        ([list(b"bin"), "text", 7], "bin\ntext"),
        ([], ""),
    ],
)
def test_messages_journalctl_gives_as_arrays(message: object, text: str) -> None:
    e = journal.decode(json.dumps({"MESSAGE": message}).encode())
    assert e is not None and e.message == text


@pytest.mark.parametrize("message", [[300, 1], [104, "i"], [-1]])
def test_an_array_that_is_not_bytes_is_no_message(message: object) -> None:
    assert journal.decode(json.dumps({"MESSAGE": message}).encode()) is None


def test_a_deeply_nested_line_is_skipped() -> None:
    assert journal.decode(b"[" * 100_000 + b"]" * 100_000) is None


def test_a_long_message_is_cut_at_twice_a_line() -> None:
    from bridgedoctor import logline

    e = journal.decode(json.dumps({"MESSAGE": "x" * 10_000}).encode())
    assert e is not None and e.message == "x" * (2 * logline.MAX_LINE)


@pytest.mark.parametrize(
    ("fields", "manager"),
    [
        ({"_PID": "1"}, True),
        ({"SYSLOG_IDENTIFIER": "systemd", "_PID": "5"}, True),
        ({"SYSLOG_IDENTIFIER": "init", "_PID": "5"}, True),
        ({"SYSLOG_IDENTIFIER": "mautrix-whatsapp", "_PID": "5"}, False),
        ({"_PID": 1}, False),
        ({}, False),
    ],
)
def test_systemds_own_messages_are_told_apart(fields: dict, manager: bool) -> None:
    msg = "x.service: Main process exited, code=exited, status=2/INVALIDARGUMENT"
    e = journal.decode(json.dumps({"MESSAGE": msg, **fields}).encode())
    assert e is not None and e.manager is manager
    # Only systemd's word on how the main process ended counts, not a bridge quoting it.
    assert e.exit == (("exited", 2) if manager else None)


@pytest.mark.parametrize(
    ("message", "fields", "exit"),
    [
        ("Main process exited, code=killed, status=SIGTERM", {}, ("killed", 15)),
        ("Main process exited, code=killed, status=SEGV", {}, ("killed", 11)),
        ("Main process exited, code=dumped, status=ABRT/x", {}, ("dumped", 6)),
        ("Main process exited, code=killed, status=SIGFOO", {}, None),
        ("Main process exited, code=killed, status=sigterm", {}, None),
        ("Started x.service.", {}, None),
        ("x", {"EXIT_CODE": "killed", "EXIT_STATUS": "9"}, ("killed", 9)),
        ("code=exited, status=4", {"EXIT_CODE": "exited", "EXIT_STATUS": "4"}, ("exited", 4)),
        # A structured field that does not hold a status: the sentence decides.
        (
            "Main process exited, code=exited, status=3/NOTIMPLEMENTED",
            {"EXIT_CODE": "exited", "EXIT_STATUS": "n/a"},
            ("exited", 3),
        ),
        (
            "Main process exited, code=exited, status=3/x",
            {"EXIT_CODE": 1, "EXIT_STATUS": "9"},
            ("exited", 3),
        ),
        (
            "Main process exited, code=exited, status=3/x",
            {"EXIT_CODE": "exited", "EXIT_STATUS": 9},
            ("exited", 3),
        ),
        ("x", {"EXIT_CODE": 1, "EXIT_STATUS": "9"}, None),
    ],
)
def test_how_the_main_process_ended(message: str, fields: dict, exit: object) -> None:
    e = journal.decode(json.dumps({"MESSAGE": message, "_PID": "1", **fields}).encode())
    assert e is not None and e.exit == exit


def test_the_run_before_without_invocation_ids_is_every_earlier_line() -> None:
    def e(mono: int, inv: str = "") -> journal.Entry:
        return journal.Entry(f"m{mono}", mono, 0.0, inv, False)

    found = [e(10, "a"), e(20, "b"), e(30), e(40)]
    assert journal.split(found, 40) == ([found[3]], found[:3])
    found = [e(10, "a"), e(20, "b"), e(30, "c"), e(35, "c"), e(40)]
    assert journal.split(found, 40) == ([found[4]], found[2:4])


def _journalctl(tmp_path, monkeypatch, entries: list[dict], extra: str = "") -> Path:
    """A journalctl that logs its arguments and prints these entries as `-o json` lines."""
    data = tmp_path / "journal.json"
    data.write_text("".join(json.dumps(x) + "\n" for x in entries))
    log = tmp_path / "calls"
    _tool(tmp_path, "journalctl", f'echo "$*" >> {log}\ncat {data}\n{extra}', monkeypatch)
    return log


FIELDS = "MESSAGE,_BOOT_ID,_PID,SYSLOG_IDENTIFIER,_SYSTEMD_INVOCATION_ID,EXIT_CODE,EXIT_STATUS"


async def test_entries_asks_journalctl_for_the_unit_and_keeps_the_newest_boot(
    tmp_path, monkeypatch
) -> None:
    log = _journalctl(
        tmp_path,
        monkeypatch,
        [
            {"MESSAGE": "old boot", "_BOOT_ID": "b1", "__MONOTONIC_TIMESTAMP": "900"},
            {"MESSAGE": "this boot", "_BOOT_ID": "b2", "__MONOTONIC_TIMESTAMP": "10"},
            {"MESSAGE": 5},
            {"MESSAGE": "also this", "_BOOT_ID": "b2", "__MONOTONIC_TIMESTAMP": "20"},
        ],
    )
    got = await journal.entries("x.service", max_entries=7)
    assert not isinstance(got, ProbeError)
    found, cut = got
    assert [e.message for e in found] == ["this boot", "also this"] and cut is False
    assert log.read_text() == (
        f"--no-pager --quiet -u x.service -o json -n 7 --output-fields={FIELDS}\n"
    )


async def test_entries_without_boot_ids_are_all_kept(tmp_path, monkeypatch) -> None:
    _journalctl(
        tmp_path,
        monkeypatch,
        [
            {"MESSAGE": "a", "_BOOT_ID": "b1"},
            {"MESSAGE": "b", "_BOOT_ID": "b2"},
            {"MESSAGE": "c"},
        ],
    )
    got = await journal.entries("x.service")
    assert not isinstance(got, ProbeError)
    assert [e.message for e in got[0]] == ["a", "b", "c"]
    _journalctl(
        tmp_path,
        monkeypatch,
        [
            {"MESSAGE": "a", "_BOOT_ID": "b1"},
            {"MESSAGE": "b", "_BOOT_ID": "b1"},
            {"MESSAGE": "c", "_BOOT_ID": "b2"},
        ],
    )
    got = await journal.entries("x.service")
    assert not isinstance(got, ProbeError) and [e.message for e in got[0]] == ["c"]
    _journalctl(tmp_path, monkeypatch, [])
    assert await journal.entries("x.service") == ([], False)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("echo 'No journal files were found.' >&2", "No journal files were found."),
        (
            "echo 'No journal files were opened due to insufficient permissions.' >&2",
            "No journal files were opened due to insufficient permissions.",
        ),
        ("echo 'Failed: insufficient permissions' >&2", "Failed: insufficient permissions"),
        ("echo 'Failed to parse timestamp' >&2; exit 1", "Failed to parse timestamp"),
        ("exit 1", "exit status 1"),
        ("exit 3", "exit status 3"),
    ],
)
async def test_journalctl_that_cannot_read_the_journal_could_not_determine(
    tmp_path, monkeypatch, extra: str, why: str
) -> None:
    _journalctl(tmp_path, monkeypatch, [{"MESSAGE": "a"}], extra)
    assert await journal.entries("x.service") == ProbeError(
        "journal_unknown", f"journalctl -u x.service failed: {why}"
    )


async def test_journalctl_that_warns_and_answers_is_an_answer(tmp_path, monkeypatch) -> None:
    _journalctl(tmp_path, monkeypatch, [{"MESSAGE": "a"}], "echo 'Journal file corrupted' >&2")
    got = await journal.entries("x.service")
    assert not isinstance(got, ProbeError) and [e.message for e in got[0]] == ["a"]


# journalctl 252's own words (src/shared/journal-util.c), warnings before the verdict.
_SKIPPED = (
    "Journal file /var/log/journal/0f/system@0005-0001.journal~ is truncated, ignoring file.\\n"
    "Journal file /var/log/journal/0f/user-1000.journal corrupted, ignoring file.\\n"
)
_HINT = (
    "Hint: You are currently not seeing messages from other users and the system.\\n"
    "      Users in groups 'adm', 'systemd-journal' can see all messages.\\n"
    "      Pass -q to turn off this notice.\\n"
)
_DENIED = "No journal files were opened due to insufficient permissions."


@pytest.mark.parametrize(
    ("said", "status", "why"),
    [
        # Whatever comes first, the access diagnosis is the reason.
        (_SKIPPED + _DENIED + "\\n", 1, _DENIED),
        (_HINT + _DENIED + "\\n" + _SKIPPED, 1, _DENIED),
        # The hint alone, with an answer: the system's messages, the bridge's among them, are
        # hidden; "no lines" would be a wrong answer.
        (
            _SKIPPED + _HINT,
            0,
            "Hint: You are currently not seeing messages from other users and the system.",
        ),
        # Otherwise a failing journalctl's reason is its last word, not a warning before it.
        (
            _SKIPPED + "Failed to add match x: Invalid argument\\n",
            1,
            "Failed to add match x: Invalid argument",
        ),
    ],
)
async def test_every_line_journalctl_says_is_read_for_why(
    tmp_path, monkeypatch, said: str, status: int, why: str
) -> None:
    _journalctl(tmp_path, monkeypatch, [{"MESSAGE": "a"}], f"printf '{said}' >&2; exit {status}")
    assert await journal.entries("x.service") == ProbeError(
        "journal_unknown", f"journalctl -u x.service failed: {why}"
    )


async def test_journalctl_warnings_about_files_it_skips_are_harmless(
    tmp_path, monkeypatch
) -> None:
    _journalctl(tmp_path, monkeypatch, [{"MESSAGE": "a"}], f"printf '{_SKIPPED}' >&2")
    got = await journal.entries("x.service")
    assert not isinstance(got, ProbeError) and [e.message for e in got[0]] == ["a"]


async def test_a_journalctl_killed_after_a_warning_says_it_was_killed(
    tmp_path, monkeypatch
) -> None:
    _journalctl(tmp_path, monkeypatch, [{"MESSAGE": "a"}], f"printf '{_SKIPPED}' >&2; kill -9 $$")
    assert await journal.entries("x.service") == ProbeError(
        "journal_unknown", "journalctl -u x.service failed: killed by signal 9"
    )


async def test_a_hanging_journalctl_is_bounded(tmp_path, monkeypatch) -> None:
    _journalctl(tmp_path, monkeypatch, [], "sleep 5")
    assert await journal.entries("x.service", timeout=0.5) == ProbeError(
        "journal_unknown", "journalctl did not answer within 0.5 s."
    )
    svc = _svc(0)
    assert await journal.read(svc, timeout=0.5) == ProbeError(
        "journal_unknown", "journalctl did not answer within 0.5 s."
    )


def _svc(start: int) -> ServiceFacts:
    return replace(facts_service(), unit="x.service", main_start_mono=start)


def _e(mono: int, msg: str, **fields: object) -> dict:
    return {"MESSAGE": msg, "__MONOTONIC_TIMESTAMP": str(mono), **fields}


async def test_read_splits_the_runs_scrubs_and_says_how_the_last_ended(
    tmp_path, monkeypatch
) -> None:
    from bridgedoctor.facts import LogLine

    log = _journalctl(
        tmp_path,
        monkeypatch,
        [
            _e(4, "x: Main process exited, code=exited, status=2/INVALIDARGUMENT", _PID="1"),
            _e(5, "ERR before hush-hush-value", _SYSTEMD_INVOCATION_ID="r1"),
            _e(6, "x: Main process exited, code=exited, status=1/FAILURE", _PID="1"),
            _e(7, "x: Main process exited, code=killed, status=9/KILL", _PID="1"),
            _e(10, "Started x.service.", _PID="1"),
            _e(
                11,
                "ERR now: password=hunter2hunter2 and hush-hush-value",
                _SYSTEMD_INVOCATION_ID="r2",
                __REALTIME_TIMESTAMP="1796006297500000",
            ),
        ],
    )
    before = service.now_mono()
    facts = await journal.read(_svc(10), known_secrets=["hush-hush-value"], max_entries=9)
    after = service.now_mono()
    assert not isinstance(facts, ProbeError)
    assert facts.unit == "x.service" and before <= facts.read_mono <= after
    assert facts.lines == (
        LogLine(
            "error",
            "ERR now: password=<redacted> and <redacted>",
            "now: password=<redacted> and <redacted>",
            11,
            at=1796006297.5,
        ),
    )
    assert [ln.text for ln in facts.previous] == ["ERR before <redacted>"]
    assert facts.last_exit == ("killed", 9) and facts.truncated is False
    assert " -n 9 " in log.read_text()


@pytest.mark.parametrize(
    ("monos", "start", "truncated"),
    [
        ((10, 11, 12), 10, True),  # all of the bound, all of this run: there may be more
        ((10, 11), 10, False),  # fewer than the bound: all of it
        ((9, 11, 12), 10, False),  # the run's start is among them
        ((10, 11, 12), 0, False),  # nothing of a current run
    ],
)
async def test_read_says_when_the_run_may_have_said_more(
    tmp_path, monkeypatch, monos: tuple[int, ...], start: int, truncated: bool
) -> None:
    _journalctl(tmp_path, monkeypatch, [_e(m, f"INF m{m}") for m in monos])
    facts = await journal.read(_svc(start), max_entries=3)
    assert not isinstance(facts, ProbeError)
    assert facts.truncated is truncated and facts.last_exit is None


async def test_read_of_a_cut_answer_is_truncated(tmp_path, monkeypatch) -> None:
    _tool(
        tmp_path,
        "journalctl",
        'yes \'{"MESSAGE": "ERR again", "__MONOTONIC_TIMESTAMP": "5"}\'',
        monkeypatch,
    )
    facts = await journal.read(_svc(1), timeout=30)
    assert not isinstance(facts, ProbeError) and facts.truncated
    assert facts.lines and facts.lines[0].text == "ERR again"


async def test_a_tool_that_said_too_much_and_is_gone_is_still_cut(tmp_path, monkeypatch) -> None:
    """The tool has written past the bound and exited (reaped, its process group gone) before
    the cut: killing it finds nothing, and the answer is the cut one."""
    from bridgedoctor.probes.command import Output, run

    _tool(tmp_path, "journalctl", "head -c 3000 /dev/zero", monkeypatch)
    for _ in range(20):
        out = await run(["journalctl"], code="journal_unknown", max_bytes=1000)
        # Its exit status is whatever the race left (0, -9, or asyncio's 255 when the kill's
        # own poll reaped it first): a cut answer is judged by its bytes alone.
        assert isinstance(out, Output) and (out.stdout, out.truncated) == (bytes(1000), True)


async def test_only_the_first_4_kib_of_stderr_are_looked_at(tmp_path, monkeypatch) -> None:
    """A line that starts past them is not the tool's word, however it arrives."""
    from bridgedoctor.probes.command import Output, run

    (tmp_path / "a").write_text("\n" * 100)
    (tmp_path / "b").write_text("\n" * 3996 + "late\n")
    (tmp_path / "c").write_text("\n" * 4095 + "in\n")
    _tool(
        tmp_path,
        "journalctl",
        f"cat {tmp_path}/a >&2; sleep 0.3; cat {tmp_path}/b >&2",
        monkeypatch,
    )
    assert await run(["journalctl"], code="journal_unknown") == Output(0, b"", (), False)
    _tool(tmp_path, "journalctl", f"cat {tmp_path}/c >&2", monkeypatch)
    assert await run(["journalctl"], code="journal_unknown") == Output(0, b"", ("i",), False)


async def test_a_tool_whose_caller_gives_up_is_killed(tmp_path, monkeypatch) -> None:
    """A helper request past its deadline is cancelled: the tool it was waiting for (a
    systemctl hung on a stuck D-Bus) goes with it rather than living on unwatched."""
    import asyncio
    import os
    import time

    from bridgedoctor.probes.command import run

    pidfile = tmp_path / "tool"
    _tool(tmp_path, "systemctl", f"echo $$ > {pidfile}; exec sleep 30", monkeypatch)
    task = asyncio.ensure_future(run(["systemctl"], code="service_unknown", timeout=20))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                state = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() or ["?"])[
                    0
                ]
            except FileNotFoundError:
                break  # ended and reaped
            if state == "Z":
                break  # ended, not yet reaped
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the tool {pid} still runs after its caller gave up")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


@contextlib.contextmanager
def _tool_leaving_a_child(tmp_path, monkeypatch, then: str) -> Iterator[None]:
    """A systemctl that first starts a child in a session of its own (out of reach of a kill
    of the tool's process group) holding its stdout, then runs `then`. The child is killed
    at the end."""
    import os
    import signal
    import time

    pidfile = tmp_path / "child"
    _tool(
        tmp_path,
        "systemctl",
        f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' &"
        f" while [ ! -s {pidfile} ]; do sleep 0.01; done; {then}",
        monkeypatch,
    )
    try:
        yield
    finally:
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.05)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _open_descriptors() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


async def test_a_cut_answer_is_not_held_by_a_child_that_left_the_tools_group(
    tmp_path, monkeypatch
) -> None:
    """Past the byte bound the tool is killed and its answer is out at once, cut: a child in a
    session of its own that still holds stdout open neither delays it nor keeps a descriptor."""
    import time

    from bridgedoctor.probes.command import run

    with _tool_leaving_a_child(tmp_path, monkeypatch, "head -c 100000 /dev/zero; sleep 30"):
        before = _open_descriptors()
        started = time.monotonic()
        out = await run(["systemctl"], code="service_unknown", timeout=20, max_bytes=1000)
        assert time.monotonic() - started < 10
        assert not isinstance(out, ProbeError) and (out.truncated, out.stdout) == (
            True,
            bytes(1000),
        )
        assert _open_descriptors() == before


async def test_a_child_that_left_the_tools_group_does_not_hold_a_timeout(
    tmp_path, monkeypatch
) -> None:
    """The kill reaches the tool's process group; a child that left it (a session of its own)
    and holds stdout open is not waited for past a second after the timeout, and what the tool
    was given is closed when the answer is out (the helper lives long: nothing may pile up)."""
    import time

    from bridgedoctor.probes.command import run

    with _tool_leaving_a_child(tmp_path, monkeypatch, "sleep 30"):
        before = _open_descriptors()
        started = time.monotonic()
        out = await run(["systemctl"], code="service_unknown", timeout=0.5)
        assert out == ProbeError("service_unknown", "systemctl did not answer within 0.5 s.")
        assert time.monotonic() - started < 10
        assert _open_descriptors() == before
