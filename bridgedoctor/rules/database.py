"""Database rules: what the bridge's database holds, up to the crypto account the key rules prove."""

from __future__ import annotations

from ..facts import ConfigFacts, DbFacts, ProbeError, StoreScan
from ..findings import BridgeReport, Finding, Fix
from ..fixes import variable
from ..knowledge import BridgeSpec
from ..proof import candidates, in_force_key, prove
from .context import RuleContext
from .keys import key_findings
from .store import store_findings


def db_error(spec: BridgeSpec, err: ProbeError) -> Finding:
    """The database could not (or must not) be read. A config.yaml naming another bridge's
    database or role is a finding of its own: an error, whether a mistake or a bridge gone
    hostile, and never connected to."""
    if err.code == "db_foreign":
        return Finding(
            "db_foreign",
            "error",
            f"{spec.name}'s config.yaml names {err.message}: bridgedoctor did not connect, and "
            f"resets of {spec.name} are refused until it names {spec.name}'s own database.",
            fix=Fix(
                vars_yml="",
                steps=(
                    "MDAD writes the bridge's own database into config.yaml on every playbook "
                    f"run; render it again with just install-service {spec.dirname}",
                    "If nobody changed config.yaml on purpose, the bridge's container may be "
                    f"compromised: look at what else changed under /matrix/{spec.dirname}",
                ),
            ),
        )
    return Finding(err.code, "unknown", f"Could not read the {spec.name} database: {err.message}")


def db_findings(
    spec: BridgeSpec,
    cfg: ConfigFacts,
    db: DbFacts,
    ctx: RuleContext,
    report: BridgeReport,
    scan: StoreScan | ProbeError | None = None,
) -> list[Finding]:
    out: list[Finding] = []
    if db.owner is not None and db.owner == spec.program:
        out.append(
            Finding(
                "db_pre_megabridge",
                "warning",
                f"database_owner is '{db.owner}': the database is on the pre-bridgev2 schema and "
                "current releases refuse it until a release with migration support has run.",
            )
        )
    foreign = foreign_tables(spec, db, ctx)
    if foreign is not None:
        out.append(foreign)
    if db.was_migrated or db.old_tables:
        report.facts["history"] = "migrated from a pre-bridgev2 database" + (
            f" (left-over tables: {', '.join(db.old_tables[:4])})" if db.old_tables else ""
        )
    if not db.tables:
        out.append(
            Finding("db_empty", "info", "The database is empty: the bridge has not run yet.")
        )
        return out
    if not db.has_crypto_store:
        sev = "info"
        out.append(
            Finding(
                "no_crypto_store",
                sev,
                "No crypto store in the database yet"
                + (
                    "; the bridge creates one at its next start."
                    if cfg.encryption_allow
                    else " (encryption is off)."
                ),
            )
        )
        return out
    if not db.accounts:
        out.append(
            Finding(
                "no_crypto_account",
                "info",
                "The crypto store has no account yet; the bridge will create one with the "
                "configured key.",
            )
        )
        return out
    configured = cfg.pickle_key
    cands = candidates(spec, configured, list(ctx.try_keys), ctx.kb)
    in_force = in_force_key(spec, configured)
    for acct in db.accounts:
        proof = prove(acct.pickle, cands)
        report.facts["device"] = acct.device_id or "(none)"
        # With a whole-store scan, its finding replaces the one drawn from a few sampled rows.
        sampled = db if scan is None else None
        out.extend(key_findings(spec, cfg, sampled, ctx, report, proof, in_force))
        if scan is not None:
            out.extend(store_findings(spec, scan, proof, ctx))
    return out


def foreign_tables(spec: BridgeSpec, db: DbFacts, ctx: RuleContext) -> Finding | None:
    """Another program's tables in the bridge's database: the bridge refuses to start on it."""
    found = sorted(t for t in db.tables if t in ctx.cat.foreign_tables)
    if not found:
        return None
    owners = sorted({ctx.cat.foreign_tables[t] for t in found})
    return Finding(
        "foreign_tables",
        "error",
        f"The bridge's database ({db.location}) holds {' and '.join(owners)}'s tables "
        f"({', '.join(found)}): bridges refuse a database shared with another program.",
        evidence=tuple(f"table {t} (belongs to {ctx.cat.foreign_tables[t]})" for t in found),
        fix=Fix(
            vars_yml="",
            steps=(
                f"Give the bridge a database of its own: MDAD's managed PostgreSQL makes "
                f"{spec.db_name} for it; remove any "
                f"{variable(spec, 'database_name', ctx.naming, ctx.kb)} or "
                f"{variable(spec, 'database_hostname', ctx.naming, ctx.kb)} override that "
                f"points it elsewhere, then: just install-service {spec.dirname}",
            ),
        ),
    )
