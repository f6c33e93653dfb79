"""Typed view of the failure catalogue (data/failures.yaml): log lines and exit statuses -> codes.

All strings and exit statuses live in that data file; this module only loads and checks it, and
answers the two questions rules ask: which entry does a line match, and which does an exit status
name on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from .facts import LogLine
from .probes.bridgefile import parse_yaml

# Our package's own files (not importlib.resources: its import costs the CLI's start more than
# this whole table takes to read).
_DATA = Path(__file__).resolve().parent / "data"

Family = Literal["keys", "config", "registration", "service", "database"]
FAMILIES: tuple[Family, ...] = ("keys", "config", "registration", "service", "database")


@dataclass(frozen=True)
class Entry:
    code: str
    family: Family
    severity: Literal["error", "warning"]
    # Regular expressions, compiled at their first use (re's own cache): a check whose bridges
    # logged nothing compiles none of them.
    lines: tuple[str, ...]
    summary: str
    source: str
    frameworks: frozenset[str] | None = None  # None: every framework
    exit: frozenset[int] = frozenset()
    # framework -> the exit statuses that name this failure on their own
    exit_alone: dict[str, frozenset[int]] = field(default_factory=dict)
    vars: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    explains: frozenset[str] = frozenset()
    corroborates: tuple[str, ...] = ()  # in order of preference
    recent_within: float | None = None  # seconds: a retrying error counts only while this fresh

    def applies(self, framework: str) -> bool:
        return self.frameworks is None or framework in self.frameworks

    def match(self, line: LogLine) -> dict[str, str] | None:
        """The named groups of the first pattern found in the line (or its traceback)."""
        haystack = "\n".join((line.message, *line.detail))
        for pattern in self.lines:
            m = re.search(pattern, haystack)
            if m is not None:
                return {k: v for k, v in m.groupdict().items() if v is not None}
        return None


@dataclass(frozen=True)
class Catalogue:
    entries: dict[str, Entry]  # in file order: the first entry matching a line names it
    exit_meanings: dict[str, dict[int, str]]
    # Causes found in files or the database (not in log lines) -> the codes they explain.
    explains: dict[str, frozenset[str]]
    foreign_tables: dict[str, str]  # table -> the program it belongs to

    def match(self, line: LogLine, framework: str) -> tuple[Entry, dict[str, str]] | None:
        for entry in self.entries.values():
            if entry.applies(framework):
                groups = entry.match(line)
                if groups is not None:
                    return entry, groups
        return None

    def by_exit(self, status: int, framework: str) -> Entry | None:
        """The one entry an exit status names on its own, if it does."""
        found = [
            e
            for e in self.entries.values()
            if status in e.exit_alone.get(framework, ()) and e.applies(framework)
        ]
        return found[0] if len(found) == 1 else None

    def meaning(self, status: int, framework: str) -> str | None:
        return self.exit_meanings.get(framework, {}).get(status)

    def explained(self, cause: str) -> frozenset[str]:
        """Every code `cause` is the cause of."""
        entry = self.entries.get(cause)
        return self.explains.get(cause, frozenset()) | (entry.explains if entry else frozenset())


def _alone(value: object, exits: frozenset[int]) -> dict[str, frozenset[int]]:
    if value is True:
        return {fw: exits for fw in ("bridgev2", "legacy-go", "python")}
    if isinstance(value, dict):
        return {str(fw): frozenset(int(x) for x in xs) for fw, xs in value.items()}
    return {}


def _entry(code: str, raw: dict) -> Entry:
    if raw["family"] not in FAMILIES:
        raise ValueError(f"failures.yaml: {code} has an unknown family {raw['family']!r}")
    return Entry(
        code=code,
        family=raw["family"],
        severity=raw["severity"],
        lines=tuple(str(p) for p in raw.get("lines") or ()),
        summary=" ".join(str(raw["summary"]).split()),
        source=str(raw["source"]),
        frameworks=frozenset(raw["frameworks"]) if raw.get("frameworks") else None,
        exit=frozenset(int(x) for x in raw.get("exit") or ()),
        exit_alone=_alone(raw.get("exit_alone"), frozenset(int(x) for x in raw.get("exit") or ())),
        vars=tuple(raw.get("vars") or ()),
        # Kept as written: two spaces end a command for the room's <code> marking.
        steps=tuple(str(s) for s in raw.get("steps") or ()),
        explains=frozenset(raw.get("explains") or ()),
        corroborates=tuple(raw.get("corroborates") or ()),
        recent_within=float(raw["recent_within"]) if raw.get("recent_within") else None,
    )


@lru_cache(maxsize=1)
def load() -> Catalogue:
    text = (_DATA / "failures.yaml").read_text("utf-8")
    raw = parse_yaml(text)  # the same safe load as a bridge's file, built from events: faster
    return Catalogue(
        entries={code: _entry(code, e) for code, e in raw["codes"].items()},
        exit_meanings={
            fw: {int(k): str(v) for k, v in table.items()}
            for fw, table in raw["exit_meanings"].items()
        },
        explains={k: frozenset(v) for k, v in (raw.get("explains") or {}).items()},
        foreign_tables={str(k): str(v) for k, v in (raw.get("foreign_tables") or {}).items()},
    )
