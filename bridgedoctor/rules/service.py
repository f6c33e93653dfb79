"""Service rules: the bridge's systemd unit. Is it up, stopped, failed, or restarting in a loop?

MDAD's bridge units say Restart=always, RestartSec=30: a bridge that dies at start spends most
of its time in "activating (auto-restart)" and NRestarts grows. A run counts as up once it has
lasted UP_AFTER seconds; earlier restarts are then history, not a finding.
"""

from __future__ import annotations

from typing import Literal

from .. import logline
from ..facts import BridgeFacts, JournalFacts, ProbeError, ServiceFacts, exit_text
from ..findings import Finding, Fix
from ..fixes import fill
from ..knowledge import BridgeSpec
from .context import RuleContext
from .logs import entry_fix, last_words

UP_AFTER = 60.0
State = Literal["up", "starting", "crash_loop", "failed", "stopped", "unknown"]
CODES = {
    "crash_loop": "service_crash_loop",
    "failed": "service_failed",
    "stopped": "service_stopped",
}


def unit_missing(spec: BridgeSpec) -> Finding:
    return Finding(
        "unit_missing",
        "info",
        f"No systemd unit {spec.service}.service found; the bridge may be disabled.",
    )


def state(svc: ServiceFacts) -> State:
    if svc.load_state != "loaded":
        return "unknown"
    if svc.active_state == "failed":
        return "failed"
    if svc.active_state in ("inactive", "deactivating"):
        return "stopped"
    young = svc.age is None or svc.age < UP_AFTER
    if svc.active_state == "activating":
        return "crash_loop" if svc.sub_state == "auto-restart" or svc.restarts else "starting"
    if svc.active_state in ("active", "reloading"):
        if svc.restarts and young:
            return "crash_loop"
        return "starting" if young else "up"
    return "unknown"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def last_exit(svc: ServiceFacts, journal: object = None) -> tuple[str, int] | None:
    """How the newest run ended: systemctl's ExecMain*, or, once the next start has begun and
    systemd forgot them, its journal message about the exit."""
    if svc.exit_code and svc.exit_status is not None:
        return svc.exit_code, svc.exit_status
    if isinstance(journal, JournalFacts):
        return journal.last_exit
    return None


def exit_words(ended: tuple[str, int] | None, framework: str, ctx: RuleContext) -> str:
    """'last exit status 16 (the homeserver rejected ...)', or '' before any exit."""
    if ended is None:
        return ""
    code, status = ended
    meaning = ctx.cat.meaning(status, framework) if code == "exited" else None
    return f"last {exit_text(code, status)}" + (f" ({meaning})" if meaning else "")


def sentence(svc: ServiceFacts, framework: str, ctx: RuleContext, journal: object = None) -> str:
    """The unit's state in one sentence, as folded into the verdict of its cause."""
    s = state(svc)
    ended = last_exit(svc, journal)
    last = exit_words(ended, framework, ctx)
    if s == "crash_loop":
        return (
            f"{svc.unit} keeps restarting: {plural(svc.restarts, 'automatic restart')}"
            + (f", {last}" if last else "")
            + "."
        )
    if s == "failed":
        return (
            f"{svc.unit} has failed ({svc.result}"
            + (f", {last}" if last else "")
            + ") and systemd no longer restarts it."
        )
    if s == "stopped":
        return f"{svc.unit} is stopped" + (f" ({last})" if last else "") + "."
    return ""


def _steps(spec: BridgeSpec, s: State) -> tuple[str, ...]:
    read = f"Read its last lines: bridgedoctor logs {spec.name}"
    if s == "stopped":
        return (
            f"Start it: systemctl start {spec.service}  (or: just start-group {spec.dirname})",
            read,
        )
    return (
        read,
        f"Once the cause is fixed, restart it: systemctl restart {spec.service}",
    )


def findings(facts: BridgeFacts, ctx: RuleContext) -> list[Finding]:
    """service_crash_loop, service_failed or service_stopped, with the bridge's last fatal line.

    A last fatal line that matches nothing in the catalogue is shown as it is (scrubbed):
    never hidden, never guessed at."""
    svc = facts.service
    if not isinstance(svc, ServiceFacts):
        return []
    s = state(svc)
    if s not in CODES:
        return []
    framework = facts.spec.framework
    summary = sentence(svc, framework, ctx, facts.journal)
    lines, run = last_words(facts)
    last = logline.worst_last(lines)
    evidence = [f"systemd: {svc.active_state} ({svc.sub_state}), result {svc.result or '-'}"]
    if last is not None:
        evidence.append(f"last fatal line ({run}): {last.text}")
        evidence += [f"  {d.strip()}" for d in last.detail[-3:]]
        if ctx.cat.match(last, framework) is None:
            summary += f" Its last fatal line matches nothing bridgedoctor knows: {last.text}"
    elif isinstance(facts.journal, JournalFacts):
        evidence.append(f"journal ({run}): no error or fatal line")
    elif isinstance(facts.journal, ProbeError):
        evidence.append(f"journal: could not determine ({facts.journal.message})")
    severity = "warning" if s == "stopped" else "error"
    return [
        Finding(
            CODES[s],
            severity,  # type: ignore[arg-type]
            summary,
            evidence=tuple(evidence),
            fix=Fix(vars_yml="", steps=_steps(facts.spec, s)),
        )
    ]


def exit_cause(facts: BridgeFacts, ctx: RuleContext) -> Finding | None:
    """The failure an exit status names on its own (exit 16: the token), for when the bridge's
    last words are not at hand or match nothing."""
    svc = facts.service
    if not isinstance(svc, ServiceFacts) or state(svc) not in ("crash_loop", "failed"):
        return None
    ended = last_exit(svc, facts.journal)
    if ended is None or ended[0] != "exited":
        return None
    entry = ctx.cat.by_exit(ended[1], facts.spec.framework)
    if entry is None:
        return None
    return Finding(
        entry.code,
        entry.severity,
        fill(entry.summary, facts.spec, ctx.naming, ctx.kb),
        evidence=(f"systemd: {exit_text(*ended)} (what {entry.code} exits with)",),
        fix=entry_fix(entry, facts, ctx, {}),
    )
