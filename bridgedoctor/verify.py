"""Follow a bridge's unit after a change (reset, restore, apply): is it up, or still failing?

Built on the check's own probes (probes/service.py for `systemctl show`, probes/journal.py for
the bridge's scrubbed journal lines): the unit is sampled for a bounded time, and a restart, a
failure or a stop ends the watch at once. "Up" means running the whole time, the same process,
and no fatal line since it started. "Still failing" names its last fatal line (or error line,
when it died without one) and the finding a fresh check puts first: the one that explains it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from . import logline
from .diagnose import Options, check, lookup
from .facts import ConfigFacts, JournalFacts, LogLine, ProbeError, ServiceFacts
from .findings import Finding, finding_dict
from .knowledge import Knowledge, load
from .probes import host, journal, service
from .probes.config import read_config

POLL_SECONDS = 0.5
State = Literal["up", "failing", "stopped", "unknown"]


@dataclass(frozen=True)
class Verification:
    bridge: str
    unit: str
    state: State
    seconds: int  # how long it has been running (up), or was followed
    fatal: str = ""  # the bridge's last fatal (or error) line, scrubbed
    restarts: int = 0  # automatic restarts seen while following
    detail: str = ""  # the unit's state in words, or why it could not be followed
    finding: Finding | None = None  # failing: what a fresh check says first

    def to_dict(self) -> dict[str, Any]:
        f = self.finding
        return {
            "bridge": self.bridge,
            "unit": self.unit,
            "state": self.state,
            "seconds": self.seconds,
            "fatal": self.fatal,
            "restarts": self.restarts,
            "detail": self.detail,
            "finding": (
                {k: v for k, v in finding_dict(f).items() if k in ("code", "severity", "summary")}
                if f
                else None
            ),
        }


def broke(first: ServiceFacts, now: ServiceFacts) -> bool:
    """Restarted, failed or stopped since `first`. Still starting (ExecStartPre) is not broken."""
    return (
        now.restarts > first.restarts
        or now.active_state in ("failed", "inactive", "deactivating")
        or now.sub_state in ("auto-restart", "failed", "dead")
        or (first.running and now.main_start_mono != first.main_start_mono)
    )


def last_words(journal: JournalFacts | ProbeError | None) -> str:
    """The last fatal line of the current run (else of the run before), else the last error."""
    if not isinstance(journal, JournalFacts):
        return ""
    for floor in ("fatal", "error"):
        for lines in (journal.lines, journal.previous):
            found = [ln for ln in lines if logline.RANK[ln.level] >= logline.RANK[floor]]
            if found:
                return found[-1].text
    return ""


def fatal_lines(lines: tuple[LogLine, ...]) -> list[LogLine]:
    return [ln for ln in lines if logline.RANK[ln.level] >= logline.RANK["fatal"]]


def judge(
    samples: list[ServiceFacts], journal: JournalFacts | ProbeError | None
) -> tuple[State, str]:
    """(state, detail) from the samples taken while following and the journal read after."""
    first, last = samples[0], samples[-1]
    words = f"{last.active_state} ({last.sub_state})"
    if any(broke(first, s) for s in samples[1:]) or not last.running:
        if last.active_state == "inactive" and last.result == "success":
            return "stopped", words
        return "failing", words
    if isinstance(journal, JournalFacts) and fatal_lines(journal.lines):
        return "failing", words
    return "up", words


async def follow(
    name: str,
    opts: Options,
    seconds: float,
    kb: Knowledge | None = None,
    poll: float = POLL_SECONDS,
) -> Verification:
    """Sample the unit for up to `seconds` (less if it breaks), then judge it."""
    kb = kb or load()
    spec = lookup(name, kb)
    unit_name = f"{name}.service"
    if isinstance(spec, Finding):
        return Verification(name[:40], unit_name, "unknown", 0, detail=spec.summary)
    unit_name = f"{spec.service}.service"
    unit = host.read_unit(opts.systemd_dir / unit_name, opts.root)
    base = opts.root / spec.dirname
    config_dir = unit.config_dir if unit and unit.config_dir else base / "config"
    cfg = await asyncio.to_thread(read_config, config_dir / "config.yaml", base)
    secrets = cfg.secret_values if isinstance(cfg, ConfigFacts) else ()
    started = time.monotonic()
    samples: list[ServiceFacts] = []
    while True:
        now = await service.show(unit_name)
        if isinstance(now, ProbeError):
            return Verification(spec.name, unit_name, "unknown", 0, detail=now.message)
        samples.append(now)
        if broke(samples[0], now) or time.monotonic() - started >= seconds:
            break
        await asyncio.sleep(poll)
    last = samples[-1]
    lines = await journal.read(last, known_secrets=secrets)
    state, detail = judge(samples, lines)
    restarts = last.restarts - samples[0].restarts
    if state == "up":
        ran = int(last.age if last.age is not None else seconds)
        return Verification(spec.name, unit_name, "up", ran, detail=detail)
    finding = None
    if state == "failing":  # a check's findings lead with the cause (rules/verdict.py)
        report = await check(spec.name, opts, kb)
        finding = next((f for f in report.findings if f.severity != "info"), None)
    return Verification(
        spec.name,
        unit_name,
        state,
        int(time.monotonic() - started),
        fatal=last_words(lines),
        restarts=restarts,
        detail=detail,
        finding=finding,
    )
