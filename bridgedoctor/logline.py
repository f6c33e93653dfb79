"""Read one line a bridge wrote to its journal: level, message, the printable text.

The formats MDAD's bridges log in (mdad.md §2.1 "Tags, groups, logging"):
- zerolog's console writer, `format: pretty` and `pretty-colored` (ANSI escapes):
  `2026-08-22T10:00:00.123Z FTL Failed to start bridge error="..."` (timestamp optional);
- zerolog JSON (`format: json`): `{"level":"fatal","error":"...","message":"..."}`;
- mautrix-python's formatter (googlechat, old telegram):
  `[2026-08-22 10:00:00,123] [CRITICAL@mau.init] The as_token was not accepted...`,
  the level and logger name wrapped in ANSI colours, tracebacks on the following lines;
- raw stderr: Go panics (`panic: ...`), messages printed before the logger exists.
Every line is stripped of ANSI escapes and scrubbed (scrub.py) before anything keeps it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import replace

from .facts import Level, LogLine
from .scrub import scrub

# A line longer than this is cut: evidence must fit a chat message, and nothing we match needs more.
MAX_LINE = 2000
# Continuation lines (a traceback, a goroutine dump) kept per line.
MAX_DETAIL = 30

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ZEROLOG = re.compile(
    r"^(?:(?P<ts>\d{4}-\d\d-\d\d[T ][^ ]+|\d{1,2}:\d\d(?:AM|PM)|<nil>)\s+)?"
    r"(?P<lvl>TRC|DBG|INF|WRN|ERR|FTL|PNC|\?\?\?)\s(?P<rest>.*)$"
)
_PYTHON = re.compile(
    r"^\[(?P<ts>[^\]]{8,40})\]\s\[(?P<lvl>[A-Z]+)@(?P<name>[^\]]{1,120})\]\s?(?P<rest>.*)$"
)
_GO_PANIC = re.compile(r"^(?:panic|fatal error): (?P<rest>.*)$")
_ZEROLOG_LEVELS: dict[str, Level] = {
    "TRC": "trace",
    "DBG": "debug",
    "INF": "info",
    "WRN": "warning",
    "ERR": "error",
    "FTL": "fatal",
    "PNC": "panic",
    "???": "none",
}
_JSON_LEVELS: dict[str, Level] = {
    "trace": "trace",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "fatal",
    "panic": "panic",
}
_PYTHON_LEVELS: dict[str, Level] = {
    "TRACE": "trace",
    "DEBUG": "debug",
    "INFO": "info",
    "WARNING": "warning",
    "WARN": "warning",
    "ERROR": "error",
    "CRITICAL": "fatal",
    "FATAL": "fatal",
}
SHORT: dict[Level, str] = {
    "panic": "PNC",
    "fatal": "FTL",
    "error": "ERR",
    "warning": "WRN",
    "info": "INF",
    "debug": "DBG",
    "trace": "TRC",
    "none": "",
}
# Worse is larger; "none" (raw stderr) ranks with errors: panics and pre-logger messages land there.
RANK: dict[Level, int] = {
    "trace": 0,
    "debug": 1,
    "info": 2,
    "warning": 3,
    "none": 4,
    "error": 4,
    "fatal": 5,
    "panic": 5,
}


def clean(raw: str) -> str:
    """Drop ANSI escapes and other control characters; cut to MAX_LINE. Leading blanks stay:
    they mark a traceback's lines."""
    text = _CONTROL.sub("", _ANSI.sub("", raw)).rstrip()
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"


def _json_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value) if re.search(r"[\s\"\\]", value) or not value else value
    return json.dumps(value, separators=(",", ":"))


def _from_json(text: str) -> tuple[Level, str, str] | None:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("level"), str):
        return None
    level = _JSON_LEVELS.get(body["level"].lower(), "none")
    message = str(body.get("message", body.get("msg", "")))
    skip = {"level", "message", "msg", "time", "timestamp"}
    # The console writer's order: error first, then the other fields sorted.
    names = sorted(k for k in body if k not in skip)
    if "error" in names:
        names.remove("error")
        names.insert(0, "error")
    fields = " ".join(f"{k}={_json_value(body[k])}" for k in names)
    return level, message, f"{message} {fields}".strip()


def parse(raw: str, known_secrets: Iterable[str] = (), mono: int = 0, at: float = 0.0) -> LogLine:
    """One journal MESSAGE as a LogLine: level, scrubbed message and printable text."""
    indented = clean(raw)
    text = indented.lstrip()
    level: Level = "none"
    body = indented
    if text.startswith("{"):
        parsed = _from_json(text)
        if parsed is not None:
            level, _, body = parsed
    elif m := _ZEROLOG.match(text):
        level, body = _ZEROLOG_LEVELS[m.group("lvl")], m.group("rest")
    elif m := _PYTHON.match(text):
        level = _PYTHON_LEVELS.get(m.group("lvl"), "none")
        body = f"[{m.group('name')}] {m.group('rest')}"
    elif m := _GO_PANIC.match(text):
        level = "panic"
    body = scrub(body, known_secrets)
    short = SHORT[level]
    return LogLine(
        level=level, text=f"{short} {body}" if short else body, message=body, mono=mono, at=at
    )


_BLOCK_START = ("Traceback (", "goroutine ", "During handling", "The above exception")


def continues(line: LogLine, previous: LogLine | None) -> bool:
    """Whether `line` belongs to `previous`: a Python traceback under a record, a goroutine
    dump under a panic. A block starts with an indented or a known first line; once started,
    it runs on (its last line, `module.Error: message`, is not indented)."""
    if previous is None or line.level != "none" or not line.text:
        return False
    if previous.detail or previous.level == "panic":
        return True
    starts = line.text.startswith((" ", "\t")) or line.text.startswith(_BLOCK_START)
    return starts and previous.level in ("fatal", "error", "warning")


def group(lines: Iterable[LogLine]) -> list[LogLine]:
    """Fold continuation lines into the line they belong to (at most MAX_DETAIL each)."""
    out: list[LogLine] = []
    for line in lines:
        if not line.text.strip():  # blank lines say nothing (a panic has one before its dump)
            continue
        prev = out[-1] if out else None
        if prev is not None and continues(line, prev):
            if len(prev.detail) < MAX_DETAIL and line.text:
                out[-1] = replace(prev, detail=(*prev.detail, line.text))
            continue
        out.append(line)
    return out


def worst_last(lines: Iterable[LogLine], minimum: Level = "error") -> LogLine | None:
    """The last line at `minimum` or worse (a bridge's last words), if any."""
    found = None
    for line in lines:
        if RANK[line.level] >= RANK[minimum]:
            found = line
        if line.level in ("fatal", "panic"):
            found = line
    return found
