"""The bridge's own last words: journal lines of its current run matched against the catalogue.

One rule for every catalogue code (data/failures.yaml): a line that matches gives a finding with
the entry's code, verdict, the scrubbed line as evidence and the entry's fix. Each code appears
once, from its newest line. Whether a matched line only confirms what a file or database rule
proved (`corroborates`) is settled in verdict.py, which sees every finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import logline
from ..catalogue import Entry
from ..facts import BridgeFacts, JournalFacts, LogLine, ProbeError, ServiceFacts
from ..findings import Finding, Fix
from ..fixes import apply_steps, fill
from .context import RuleContext

# A run younger than this that has not said anything yet may still fail the way the run before
# did: then the run before speaks for it (mautrix gives up on the appservice ping after ~35 s).
YOUNG_SECONDS = 60.0
# Evidence keeps the end of a traceback: the exception line is what explains it.
DETAIL_LINES = 3


@dataclass(frozen=True)
class Match:
    entry: Entry
    groups: dict[str, str]
    line: LogLine


def last_words(facts: BridgeFacts) -> tuple[tuple[LogLine, ...], str]:
    """The lines that speak for the bridge now and which run they are from ("current run" or
    "previous run"); the run before only while the current one is young and silent."""
    return speaking(facts.journal, facts.service)


def speaking(
    journal: JournalFacts | ProbeError | None, svc: ServiceFacts | ProbeError | None
) -> tuple[tuple[LogLine, ...], str]:
    """last_words for a journal and a unit state alone (the `logs` command has no config)."""
    if not isinstance(journal, JournalFacts):
        return (), ""
    current = journal.lines
    silent = not any(logline.RANK[line.level] >= logline.RANK["error"] for line in current)
    # age None: the next start is under way and its main process does not exist yet.
    young = (
        isinstance(svc, ServiceFacts)
        and svc.restarts > 0
        and (svc.age is None or svc.age < YOUNG_SECONDS)
    )
    if silent and young and journal.previous:
        return journal.previous, "previous run"
    return current, "current run"


def matches(facts: BridgeFacts, ctx: RuleContext) -> list[Match]:
    """Catalogue matches in the bridge's last words, newest first, one per code."""
    lines, _ = last_words(facts)
    journal = facts.journal
    now = journal.read_mono if isinstance(journal, JournalFacts) else 0
    found: list[Match] = []
    seen: set[str] = set()
    for line in reversed(lines):
        m = ctx.cat.match(line, facts.spec.framework)
        if m is None or m[0].code in seen:
            continue
        entry, groups = m
        seen.add(entry.code)
        if not _fresh(entry, line, now):
            continue
        found.append(Match(entry, groups, line))
    return found


def _fresh(entry: Entry, line: LogLine, now: int) -> bool:
    """False for a retried error whose last line is stale: the bridge got through since."""
    if entry.recent_within is None or not now or not line.mono:
        return True
    return (now - line.mono) / 1e6 <= entry.recent_within


def evidence(line: LogLine, label: str = "journal") -> tuple[str, ...]:
    tail = line.detail[-DETAIL_LINES:]
    return (f"{label}: {line.text}", *(f"  {d.strip()}" for d in tail))


def entry_fix(
    entry: Entry, facts: BridgeFacts, ctx: RuleContext, groups: dict[str, str]
) -> Fix | None:
    spec = facts.spec
    values = {**groups, **_paths(facts)}
    steps = tuple(fill(s, spec, ctx.naming, ctx.kb, values) for s in entry.steps)
    snippet = "\n".join(fill(v, spec, ctx.naming, ctx.kb, values) for v in entry.vars)
    if not steps and not snippet:
        return None
    if snippet:
        steps = (apply_steps(spec)[0], *steps)
        return Fix(vars_yml=snippet, steps=steps)
    return Fix(vars_yml="", steps=steps)


def _paths(facts: BridgeFacts) -> dict[str, str]:
    cfg = facts.config
    path = getattr(cfg, "path", None)
    return {"config_dir": str(path.parent)} if path is not None else {}


def finding(match: Match, facts: BridgeFacts, ctx: RuleContext, run: str) -> Finding:
    entry = match.entry
    values = {**match.groups, **_paths(facts)}
    return Finding(
        entry.code,
        entry.severity,
        fill(entry.summary, facts.spec, ctx.naming, ctx.kb, values),
        evidence=evidence(match.line, f"journal ({run})"),
        fix=entry_fix(entry, facts, ctx, match.groups),
    )


def findings(facts: BridgeFacts, ctx: RuleContext) -> list[Finding]:
    """One finding per catalogue code found in the bridge's last words, newest first."""
    _, run = last_words(facts)
    return [finding(m, facts, ctx, run) for m in matches(facts, ctx)]
