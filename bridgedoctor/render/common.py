"""Shared wording for every renderer."""

from __future__ import annotations

from ..findings import BridgeReport, Finding, Status

STATUS_WORD: dict[Status, str] = {
    "ok": "ok",
    "warning": "warning",
    "broken": "broken",
    "unknown": "could not check",
}
# Heads the `check all` pin block (same words in render/matrix.py, which cannot import this).
PIN_TITLE = "Pin these keys in vars.yml before the next playbook run"
_RANK = {"error": 3, "unknown": 2, "warning": 1, "info": 0}


def ordered(report: BridgeReport) -> list[Finding]:
    """Findings worst first, stable within a severity."""
    return sorted(report.findings, key=lambda f: -_RANK[f.severity])


def verdict(report: BridgeReport) -> str:
    """The one-line verdict: the worst finding's summary, or a plain 'ok'."""
    findings = ordered(report)
    if not findings:
        return "no problem found."
    head = findings[0]
    if head.severity == "info" and report.status == "ok":
        ok = [f for f in findings if f.code == "pickle_key_ok"]
        return (ok[0] if ok else head).summary
    return head.summary


def first_sentence(text: str) -> str:
    """The first sentence of a summary, for one-line listings."""
    head, sep, _ = text.partition(". ")
    return head + "." if sep else text
