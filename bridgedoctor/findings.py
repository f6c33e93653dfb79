"""Findings: what the rules concluded, ready for any renderer (terminal, JSON, Matrix HTML)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "error", "unknown"]
Status = Literal["ok", "warning", "broken", "unknown"]

# Worst first: the status of a bridge is its worst finding.
_RANK: dict[Severity, int] = {"error": 3, "unknown": 2, "warning": 1, "info": 0}
_STATUS: dict[Severity, Status] = {
    "error": "broken",
    "unknown": "unknown",
    "warning": "warning",
    "info": "ok",
}


@dataclass(frozen=True)
class Variant:
    """One form of a vars.yml snippet, for one range of MDAD checkouts."""

    naming: Literal["current", "legacy", "legacy-extension"]
    applies: str  # e.g. "MDAD checkouts from 2026-07-16 on"
    vars_yml: str


@dataclass(frozen=True)
class Fix:
    vars_yml: str  # what to paste; several labelled forms when the naming is ambiguous
    steps: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    summary: str
    evidence: tuple[str, ...] = ()
    fix: Fix | None = None
    # The code of the finding that causes this one; its verdict already says so.
    explained_by: str | None = None


@dataclass
class BridgeReport:
    bridge: str
    findings: list[Finding] = field(default_factory=list)
    # Short printable facts for the evidence block (paths, device, versions); never secrets.
    facts: dict[str, str] = field(default_factory=dict)
    # vars.yml lines (or a comment) that pin this bridge's proven key; joined by `check all`.
    pin: str | None = None

    @property
    def status(self) -> Status:
        if not self.findings:
            return "ok"
        worst = max(self.findings, key=lambda f: _RANK[f.severity])
        return _STATUS[worst.severity]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bridge": self.bridge,
            "status": self.status,
            "findings": [finding_dict(f) for f in self.findings],
            "facts": dict(self.facts),
        }


def finding_dict(f: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {"code": f.code, "severity": f.severity, "summary": f.summary}
    if f.evidence:
        out["evidence"] = list(f.evidence)
    if f.explained_by:
        out["explained_by"] = f.explained_by
    out["fix"] = (
        {
            "vars_yml": f.fix.vars_yml,
            "steps": list(f.fix.steps),
            "variants": [
                {"naming": v.naming, "applies": v.applies, "vars_yml": v.vars_yml}
                for v in f.fix.variants
            ],
        }
        if f.fix
        else None
    )
    return out


@dataclass
class FleetReport:
    reports: list[BridgeReport]
    pin: Fix | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bridges": [r.to_dict() for r in self.reports]}
        if self.pin:
            out["pin"] = {"vars_yml": self.pin.vars_yml, "steps": list(self.pin.steps)}
        return out


def exit_code(reports: list[BridgeReport]) -> int:
    """0: all ok; 1: a problem was found; 2: nothing wrong found but something could not be checked."""
    statuses = {r.status for r in reports}
    if statuses & {"broken", "warning"}:
        return 1
    if "unknown" in statuses or not reports:
        return 2
    return 0
