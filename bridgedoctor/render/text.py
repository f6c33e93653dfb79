"""Terminal text: verdict first, then evidence, then the fix."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from ..findings import BridgeReport, Fix, FleetReport
from .common import PIN_TITLE, STATUS_WORD, first_sentence, ordered, verdict
from .neutral import neutral

if TYPE_CHECKING:  # the logs command loads it
    from ..logs import LogsReport

WIDTH = 100


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent)


def _fix(fix: Fix, indent: str) -> list[str]:
    out = []
    if fix.vars_yml:
        out.append(f"{indent}vars.yml:")
        out.extend(f"{indent}    {line}" for line in fix.vars_yml.splitlines())
    for i, step in enumerate(fix.steps, 1):
        out.append(_wrap(f"{i}. {step}", indent))
    return out


def bridge(report: BridgeReport) -> str:
    lines = [f"{report.bridge}: {STATUS_WORD[report.status].upper()} - {verdict(report)}"]
    if report.facts:
        lines.append("  Facts")
        width = max(len(k) for k in report.facts)
        lines.extend(f"    {k.ljust(width)}  {v}" for k, v in report.facts.items())
    for f in ordered(report):
        cause = f" (explained by {f.explained_by})" if f.explained_by else ""
        lines.append(f"  [{f.severity}] {f.code}{cause}")
        lines.append(_wrap(f.summary, "    "))
        if f.evidence:
            lines.append("    Evidence:")
            lines.extend(_wrap(e, "      ") for e in f.evidence)
        if f.fix and (f.fix.vars_yml or f.fix.steps) and not f.explained_by:
            lines.append("    Fix:")
            lines.extend(_fix(f.fix, "      "))
    return neutral("\n".join(lines))


def fleet(report: FleetReport) -> str:
    if not report.reports:
        return "No mautrix bridges found."
    width = max(len(r.bridge) for r in report.reports)
    lines = [
        f"{r.bridge.ljust(width)}  {STATUS_WORD[r.status]:<15}  {first_sentence(verdict(r))}"
        for r in report.reports
    ]
    if report.pin:
        lines += ["", PIN_TITLE + ":"]
        lines.extend(_fix(report.pin, "  "))
    problems = [r.bridge for r in report.reports if r.status != "ok"]
    if problems:
        lines += ["", "Details and fixes: bridgedoctor check " + " | ".join(problems)]
    return neutral("\n".join(lines))


def logs(report: LogsReport) -> str:
    if report.problem:
        return neutral(f"{report.bridge}: {report.problem}")
    where = f"{report.unit}: {report.state}"
    if not report.lines:
        return f"{report.bridge}: no fatal or error line since it last started ({where})."
    out = [f"{report.bridge}: last fatal and error lines of its {report.run} ({where})"]
    out += [f"  {line}" for line in report.lines]
    if report.truncated:
        out.append("  (older lines of this run are left out)")
    out.append(f"Diagnosis and fix: bridgedoctor check {report.bridge}")
    return neutral("\n".join(out))
