"""A bridge's own last words: its journal lines since its main process last started.

Only the current run counts (a bridge that crashed earlier and runs fine now is healthy): the
window starts at the unit's ExecMainStartTimestampMonotonic, and journal entries carry the same
monotonic clock, so no wall-clock parsing or time zone is involved. The run before is kept too,
for a caller that finds the current run too young to have said anything yet.

Bounded: the last MAX_ENTRIES entries of this boot, each message cut to logline.MAX_LINE, the
whole answer to command.DEFAULT_MAX_BYTES, within a timeout. Every line is scrubbed of secrets
(logline.parse) before it is kept. systemd's own messages about the unit ("Started ...",
"Main process exited ...") are left out: the exit status comes from `systemctl show`.

`-o json` because pretty-colored lines hold ANSI escapes, which journalctl prints as
"[123B blob data]" in its text formats unless asked for all; in JSON such a MESSAGE is an array of
byte values, decoded here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .. import logline
from ..facts import JournalFacts, LogLine, ProbeError, ServiceFacts
from .command import ended, run
from .service import now_mono

MAX_ENTRIES = 400
# journalctl walks the journal files; on a busy host that takes longer than a systemctl answer.
TIMEOUT = 10.0
FIELDS = (
    "MESSAGE",
    "_BOOT_ID",
    "_PID",
    "SYSLOG_IDENTIFIER",
    "_SYSTEMD_INVOCATION_ID",
    "EXIT_CODE",
    "EXIT_STATUS",
)
# systemd's own line when a unit's main process ends (src/core/service.c, stable wording).
_EXITED = re.compile(r"Main process exited, code=(?P<code>\w+), status=(?P<status>\d+)")
_SIGNAL_NUMBERS = {
    "HUP": 1,
    "INT": 2,
    "QUIT": 3,
    "ILL": 4,
    "ABRT": 6,
    "KILL": 9,
    "SEGV": 11,
    "TERM": 15,
}
CODE = "journal_unknown"
# journalctl's words for a journal it cannot read (src/shared/journal-util.c): it may still
# exit 0, and they need not come first: the multi-line "Hint: You are currently not seeing
# messages from other users and the system." (the unit's lines are among those hidden), and
# warnings about single journal files it skips ("Journal file ... corrupted, ignoring file."),
# which alone are harmless. --quiet silences the hint and "No journal files were found." in
# systemd 252, not in every version or wrapper. The first sentence said, in this order, is why.
_NO_ACCESS = (
    "No journal files were found",
    "insufficient permissions",
    "No journal files were opened",
    "You are currently not seeing messages from",
)


@dataclass(frozen=True)
class Entry:
    message: str
    mono: int  # µs, CLOCK_MONOTONIC of this boot
    at: float  # seconds since the epoch
    invocation: str  # the unit run it belongs to ("" when journald did not record one)
    manager: bool  # systemd's own message about the unit, not the bridge's
    exit: tuple[str, int] | None = None  # a manager message saying how the main process ended
    boot: str = ""  # _BOOT_ID


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], int):
        try:  # bytes() checks every item is an int in 0..255, in C
            return bytes(value).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return None
    if isinstance(value, list):  # a field logged twice: journalctl gives every value
        parts = [_text(v) for v in value]
        return "\n".join(p for p in parts if p is not None)
    return None


def decode(line: bytes) -> Entry | None:
    """One `journalctl -o json` line, or None if it is not an entry with a message."""
    try:
        body = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    message = _text(body.get("MESSAGE"))
    if message is None:
        return None
    try:
        mono = int(body.get("__MONOTONIC_TIMESTAMP", 0))
        at = int(body.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    except (TypeError, ValueError):
        return None
    pid = body.get("_PID")
    manager = pid == "1" or body.get("SYSLOG_IDENTIFIER") in ("systemd", "init")
    invocation = body.get("_SYSTEMD_INVOCATION_ID")
    return Entry(
        message[: logline.MAX_LINE * 2],
        mono,
        at,
        invocation if isinstance(invocation, str) else "",
        manager,
        (_structured_exit(body) or _exit(message)) if manager else None,
        body.get("_BOOT_ID") if isinstance(body.get("_BOOT_ID"), str) else "",
    )


def _structured_exit(body: dict) -> tuple[str, int] | None:
    """EXIT_CODE/EXIT_STATUS, which newer systemd versions attach to that message."""
    code, status = body.get("EXIT_CODE"), body.get("EXIT_STATUS")
    if isinstance(code, str) and isinstance(status, str) and status.isdigit():
        return code, int(status)
    return None


def _exit(message: str) -> tuple[str, int] | None:
    """("exited", 16) from "...: Main process exited, code=exited, status=16/n/a"; signals
    come as status=9/KILL or, in some versions, as the name alone."""
    m = _EXITED.search(message)
    if m is not None:
        return m.group("code"), int(m.group("status"))
    m = re.search(r"Main process exited, code=(\w+), status=(?:SIG)?([A-Z]+)", message)
    if m is not None and m.group(2) in _SIGNAL_NUMBERS:
        return m.group(1), _SIGNAL_NUMBERS[m.group(2)]
    return None


async def entries(
    unit: str, *, max_entries: int = MAX_ENTRIES, timeout: float = TIMEOUT
) -> tuple[list[Entry], bool] | ProbeError:
    """The unit's last `max_entries` journal entries of its newest boot, oldest first, and
    whether the byte bound cut the answer short.

    Not `journalctl -b`: that needs /proc/sys/kernel/random/boot_id, which the helper's unit
    hides (ProcSubset=pid). The newest entry is of this boot whenever the unit started in it
    (systemd logs "Starting ..."), so entries of other boots are dropped by its _BOOT_ID."""
    out = await run(
        [
            "journalctl",
            "--no-pager",
            "--quiet",
            "-u",
            unit,
            "-o",
            "json",
            "-n",
            str(max_entries),
            f"--output-fields={','.join(FIELDS)}",
        ],
        code=CODE,
        timeout=timeout,
    )
    if isinstance(out, ProbeError):
        return out
    # Every line said: an access diagnosis after a warning still counts. Otherwise a failing
    # journalctl says what went wrong last; a killed one said nothing about why. A cut
    # answer's exit status is whatever the race with our kill left: not a failure.
    why = next((line for s in _NO_ACCESS for line in out.stderr if s in line), None)
    if why is None and out.returncode != 0 and not out.truncated:
        why = out.stderr[-1] if out.stderr and out.returncode > 0 else ended(out.returncode)
    if why is not None:
        return ProbeError(CODE, f"journalctl -u {unit} failed: {why}")
    found = [e for e in (decode(raw) for raw in out.stdout.splitlines()) if e is not None]
    if found and found[-1].boot:
        found = [e for e in found if e.boot == found[-1].boot]
    return found, out.truncated


def lines(found: Iterable[Entry], known_secrets: Iterable[str] = ()) -> tuple[LogLine, ...]:
    """The bridge's entries as scrubbed LogLines, tracebacks folded into their line."""
    secrets = tuple(known_secrets)
    parsed = (logline.parse(e.message, secrets, e.mono, e.at) for e in found if not e.manager)
    return tuple(logline.group(parsed))


def split(found: list[Entry], start_mono: int) -> tuple[list[Entry], list[Entry]]:
    """(entries of the run that started at start_mono, entries of the run before it).

    start_mono 0 (no main process yet: the next start is under way, ExecStartPre running) makes
    every entry read "before". The run before is told apart by its invocation id when journald
    recorded one; otherwise every earlier entry read counts."""
    current = [e for e in found if start_mono and e.mono >= start_mono]
    earlier = [e for e in found if (not start_mono or e.mono < start_mono) and not e.manager]
    if earlier and earlier[-1].invocation:
        last = earlier[-1].invocation
        earlier = [e for e in earlier if e.invocation == last]
    return current, earlier


async def read(
    service: ServiceFacts,
    *,
    known_secrets: Iterable[str] = (),
    max_entries: int = MAX_ENTRIES,
    timeout: float = TIMEOUT,
) -> JournalFacts | ProbeError:
    """The bridge's lines since its main process last started (and of the run before)."""
    got = await entries(service.unit, max_entries=max_entries, timeout=timeout)
    if isinstance(got, ProbeError):
        return got
    found, cut = got
    current, earlier = split(found, service.main_start_mono)
    # Every entry read belongs to this run: there may have been more before the first one.
    truncated = cut or (len(found) >= max_entries and bool(current) and current[0] is found[0])
    exits = [e.exit for e in found if e.exit is not None]
    return JournalFacts(
        unit=service.unit,
        lines=lines(current, known_secrets),
        previous=lines(earlier, known_secrets),
        read_mono=now_mono(),
        truncated=truncated,
        last_exit=exits[-1] if exits else None,
    )
