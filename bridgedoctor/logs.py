"""`logs NAME`: a bridge's last fatal and error lines since its last start, scrubbed.

The same probes as a check (probes/service.py, probes/journal.py), without reading any config or
database: when a bridge is down, this is what an admin reads first. Its config is still read, if
it can be, for one reason only: its secret values are scrubbed from the lines by value too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from . import logline
from .diagnose import Options, lookup, unit_state
from .facts import ConfigFacts, JournalFacts, LogLine, ProbeError, ServiceFacts, exit_text
from .findings import Finding
from .knowledge import Knowledge, load
from .probes import host
from .probes.config import read_config
from .rules.logs import speaking
from .rules.service import last_exit, plural

# Lines shown: the newest ones. A crash loop says what matters in its last few lines.
MAX_LINES = 20


@dataclass
class LogsReport:
    bridge: str
    unit: str = ""
    state: str = ""  # the unit's state in a few words
    run: str = ""  # "current run" or "previous run": which run the lines are from
    lines: list[str] = field(default_factory=list)  # oldest first, each scrubbed
    truncated: bool = False  # older lines of the run were left out
    problem: str | None = None  # one sentence when nothing could be read

    @property
    def status(self) -> str:
        """ok: no error line; errors: lines shown; unknown: could not read."""
        if self.problem:
            return "unknown"
        return "errors" if self.lines else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "bridge": self.bridge,
            "status": self.status,
            "unit": self.unit,
            "state": self.state,
            "run": self.run,
            "lines": list(self.lines),
            "truncated": self.truncated,
            "problem": self.problem,
        }


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at else ""


def shown(lines: tuple[LogLine, ...], limit: int = MAX_LINES) -> tuple[list[str], bool]:
    """Error-or-worse lines (raw stderr such as panics included), newest `limit`, tracebacks
    indented under their line."""
    picked = [ln for ln in lines if logline.RANK[ln.level] >= logline.RANK["error"]]
    cut = len(picked) > limit
    out: list[str] = []
    for ln in picked[-limit:]:
        when = stamp(ln.at)
        out.append(f"{when} {ln.text}" if when else ln.text)
        out += [f"    {d.strip()}" for d in ln.detail]
    return out, cut


def state_words(svc: ServiceFacts, journal: JournalFacts | ProbeError | None) -> str:
    text = f"{svc.active_state} ({svc.sub_state})"
    if svc.restarts:
        text += f", {plural(svc.restarts, 'automatic restart')}"
    ended = last_exit(svc, journal)
    if ended is not None and not svc.running:
        text += f", last {exit_text(*ended)}"
    return text


async def recent(name: str, opts: Options, kb: Knowledge | None = None) -> LogsReport:
    kb = kb or load()
    spec = lookup(name, kb)
    if isinstance(spec, Finding):
        return LogsReport(bridge=name[:40], problem=spec.summary)
    unit = host.read_unit(opts.systemd_dir / f"{spec.service}.service", opts.root)
    report = LogsReport(bridge=spec.name, unit=f"{spec.service}.service")
    if unit is None:
        report.problem = (
            f"No systemd unit {spec.service}.service found; the bridge may be disabled."
        )
        return report
    config_dir = unit.config_dir or opts.root / spec.dirname / "config"
    cfg = await asyncio.to_thread(
        read_config, config_dir / "config.yaml", opts.root / spec.dirname
    )
    secrets = cfg.secret_values if isinstance(cfg, ConfigFacts) else ()
    svc, journal = await unit_state(unit, report.unit, secrets)
    if isinstance(svc, ProbeError):
        report.problem = f"Could not determine the state of {report.unit}: {svc.message}"
        return report
    assert isinstance(svc, ServiceFacts)
    report.state = state_words(svc, journal)
    if isinstance(journal, ProbeError):
        report.problem = f"Could not read the journal of {report.unit}: {journal.message}"
        return report
    lines, run = speaking(journal, svc)
    report.run = run
    report.lines, cut = shown(lines)
    report.truncated = cut or (isinstance(journal, JournalFacts) and journal.truncated)
    return report
