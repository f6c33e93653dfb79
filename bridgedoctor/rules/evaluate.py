"""Run the rule families over one bridge's facts, in the order their findings depend on."""

from __future__ import annotations

from ..facts import BridgeFacts, ProbeError
from ..findings import BridgeReport
from . import config, database, service
from .context import RuleContext


def evaluate(facts: BridgeFacts, ctx: RuleContext) -> BridgeReport:
    spec = facts.spec
    report = BridgeReport(bridge=spec.name)
    report.facts.update(
        framework=spec.framework,
        service=spec.service,
        naming=f"{ctx.naming.naming} ({ctx.naming.reason})",
    )
    if facts.unit is not None:
        if facts.unit.tag:
            report.facts["image"] = f"{facts.unit.image}:{facts.unit.tag}"
    else:
        report.findings.append(service.unit_missing(spec))
    cfg = facts.config
    if isinstance(cfg, ProbeError):
        report.findings.append(config.config_error(spec, cfg))
        return report
    report.facts.update(config=str(cfg.path), layout=cfg.layout)
    report.findings.extend(config.config_findings(spec, cfg, facts, ctx))
    db = facts.db
    if db is None:
        return report
    if isinstance(db, ProbeError):
        report.findings.append(database.db_error(spec, db))
        return report
    report.facts["database"] = f"{db.kind} {db.location}"
    if db.versions:
        report.facts["schema"] = ", ".join(f"{k} v{v}" for k, v in sorted(db.versions.items()))
    report.findings.extend(database.db_findings(spec, cfg, db, ctx, report, facts.scan))
    return report
