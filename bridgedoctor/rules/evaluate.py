"""Run the rule families over one bridge's facts, then settle them into one verdict."""

from __future__ import annotations

from ..facts import BridgeFacts, ConfigFacts, ProbeError, ServiceFacts, UnitFacts
from ..findings import BridgeReport, Finding
from . import config, database, logs, registration, service, verdict
from .context import RuleContext


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _service_fact(facts: BridgeFacts) -> str | None:
    svc = facts.service
    if isinstance(svc, ProbeError):
        return f"could not determine ({svc.message})"
    if not isinstance(svc, ServiceFacts):
        return None
    text = f"{svc.active_state} ({svc.sub_state})"
    if svc.running and svc.age is not None:
        text += f" for {_age(svc.age)}"
    if svc.restarts:
        text += f", {service.plural(svc.restarts, 'automatic restart')} since it was last started"
    return text


def _file_findings(facts: BridgeFacts, ctx: RuleContext, report: BridgeReport) -> list[Finding]:
    """Config, registration and database families (the database only if the config says where)."""
    spec, cfg = facts.spec, facts.config
    if isinstance(cfg, ProbeError):
        return [config.config_error(spec, cfg)]
    report.facts.update(config=str(cfg.path), layout=cfg.layout)
    out = config.config_findings(spec, cfg, facts, ctx)
    out += registration.findings(facts, ctx)
    if isinstance(facts.registration, ProbeError):
        report.facts["registration"] = f"could not read ({facts.registration.message})"
    if isinstance(facts.homeserver, ProbeError):
        report.facts["homeserver"] = f"could not read ({facts.homeserver.message})"
    db = facts.db
    if db is None:
        return out
    if isinstance(db, ProbeError):
        out.append(database.db_error(spec, db))
        return out
    report.facts["database"] = f"{db.kind} {db.location}"
    if db.versions:
        report.facts["schema"] = ", ".join(f"{k} v{v}" for k, v in sorted(db.versions.items()))
    assert isinstance(cfg, ConfigFacts)
    return out + database.db_findings(spec, cfg, db, ctx, report, facts.scan)


def shown_image(unit: UnitFacts) -> str | None:
    """The image the unit pins as shown to the admin, its digest cut to 12 digits (enough to
    tell builds apart); None when it pins neither tag nor digest."""
    if unit.image is None or not (unit.tag or unit.digest):
        return None
    algorithm, _, value = (unit.digest or "").partition(":")
    return (
        unit.image
        + (f":{unit.tag}" if unit.tag else "")
        + (f"@{algorithm}:{value[:12]}" if unit.digest else "")
    )


def evaluate(facts: BridgeFacts, ctx: RuleContext) -> BridgeReport:
    spec = facts.spec
    report = BridgeReport(bridge=spec.name)
    report.facts.update(
        framework=spec.framework,
        service=spec.service,
        naming=f"{ctx.naming.naming} ({ctx.naming.reason})",
    )
    found: list[Finding] = []
    if facts.unit is not None:
        image = shown_image(facts.unit)
        if image:
            report.facts["image"] = image
    else:
        found.append(service.unit_missing(spec))
    state = _service_fact(facts)
    if state:
        report.facts["unit state"] = state
    if isinstance(facts.journal, ProbeError):
        report.facts["journal"] = f"could not read ({facts.journal.message})"
    found += _file_findings(facts, ctx, report)
    found += service.findings(facts, ctx)
    report.findings = verdict.settle(
        found, logs.findings(facts, ctx), ctx, service.exit_cause(facts, ctx)
    )
    return report
