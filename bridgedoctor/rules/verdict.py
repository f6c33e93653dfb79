"""One verdict: the answer leads with the cause that explains the others.

The families report what each sees; this step relates their findings:
- a line the bridge logged that confirms what a file or the database proved (`corroborates` in
  data/failures.yaml) becomes evidence of that finding rather than a second one;
- a finding caused by another (`explains`) is marked `explained_by` its root cause, and the
  unit's state ("keeps restarting: 7 restarts, last exit status 16") is folded into the root's
  verdict, so a crash loop reads as its cause;
- the crash loop's cause is the one the bridge's last words name; failing those, the one its
  exit status names alone (exit 16: the token); failing that, a proven cause from the files or
  the database; failing all, the crash loop stands alone with its unknown last line.
Findings that explain nothing else and are explained by nothing come worst first (a cause before
an unrelated finding of its severity), then what the causes explain. The first is the verdict.
"""

from __future__ import annotations

from dataclasses import replace

from ..findings import Finding
from .context import RuleContext

SERVICE_CODES = ("service_crash_loop", "service_failed", "service_stopped")
_RANK = {"error": 3, "unknown": 2, "warning": 1, "info": 0}


def _said(line: str) -> str:
    """An evidence line without its label ("journal (current run): ..." -> "...")."""
    return line.split(": ", 1)[-1].strip()


def _merge_evidence(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    known = {_said(e) for e in a}
    return a + tuple(e for e in b if _said(e) not in known)


def corroborate(
    found: list[Finding], heard: list[Finding], ctx: RuleContext
) -> tuple[list[Finding], list[str]]:
    """Fold each heard finding into the finding it confirms, if any. Returns the findings and
    the codes the bridge's last words point at, newest first."""
    out = list(found)
    pointed: list[str] = []
    for h in heard:
        entry = ctx.cat.entries.get(h.code)
        targets = (entry.corroborates if entry else ()) + (h.code,)
        index = next(
            (i for t in targets for i, f in enumerate(out) if f.code == t),
            None,
        )
        if index is None:
            out.append(h)
            pointed.append(h.code)
        else:
            # The bridge failing on it now makes it as grave as the failure it names.
            worse = max(out[index].severity, h.severity, key=lambda sev: _RANK[sev])
            out[index] = replace(
                out[index],
                severity=worse,
                evidence=_merge_evidence(out[index].evidence, h.evidence),
            )
            pointed.append(out[index].code)
    return out, pointed


def _explains(cause: Finding, effect: Finding, ctx: RuleContext) -> bool:
    return (
        cause is not effect
        and cause.severity == "error"
        and effect.code in ctx.cat.explained(cause.code)
    )


def _service_cause(
    findings: list[Finding], service: Finding, pointed: list[str], ctx: RuleContext
) -> Finding | None:
    by_code = {f.code: f for f in findings}
    for code in pointed:  # the bridge's last words first
        f = by_code.get(code)
        if f is not None and _explains(f, service, ctx):
            return f
    return next((f for f in findings if _explains(f, service, ctx)), None)


def settle(
    found: list[Finding],
    heard: list[Finding],
    ctx: RuleContext,
    exit_cause: Finding | None = None,
) -> list[Finding]:
    """`found`: findings of the file, database and unit rules, in family order; `heard`: those
    of the bridge's last words, newest first; `exit_cause`: what the exit status names alone."""
    findings, pointed = corroborate(found, heard, ctx)
    service = next((f for f in findings if f.code in SERVICE_CODES), None)
    cause: Finding | None = None
    if service is not None:
        cause = _service_cause(findings, service, pointed, ctx)
        if (
            cause is None
            and exit_cause is not None
            and exit_cause.code not in {f.code for f in findings}
        ):
            findings.append(exit_cause)
            cause = exit_cause if _explains(exit_cause, service, ctx) else None

    # Each finding's direct cause (the first present that explains it), then its root.
    direct: dict[int, int] = {}
    for i, effect in enumerate(findings):
        if service is not None and effect is service:
            if cause is not None:
                direct[i] = findings.index(cause)
            continue
        for j, c in enumerate(findings):
            if _explains(c, effect, ctx) and direct.get(j) != i:
                direct[i] = j
                break

    def root(i: int) -> int:
        seen = {i}
        while i in direct and direct[i] not in seen:
            i = direct[i]
            seen.add(i)
        return i

    roots = {i: root(i) for i in direct}
    settled = list(findings)
    for i, r in roots.items():
        settled[i] = replace(settled[i], explained_by=findings[r].code)
        # The root's verdict tells the whole story: the unit's state and the lines behind it.
        root_f = settled[r]
        summary = root_f.summary
        if findings[i] is service:  # "… keeps restarting: 7 automatic restarts, last exit …"
            summary += " " + service.summary.split(". ")[0].rstrip(".") + "."
        settled[r] = replace(
            root_f,
            summary=summary,
            evidence=_merge_evidence(root_f.evidence, findings[i].evidence),
        )
    causes = set(roots.values())
    first = [(i, f) for i, f in enumerate(settled) if i not in roots]
    # Worst first, as every renderer shows them; a cause before an unrelated finding of the
    # same severity. Equal ones keep their family order.
    first.sort(key=lambda p: (-_RANK[p[1].severity], p[0] not in causes))
    return [f for _, f in first] + [f for i, f in enumerate(settled) if i in roots]
