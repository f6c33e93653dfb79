"""Key rules: which pickle key opens the stored crypto account, and what to pin or reset."""

from __future__ import annotations

from .. import pickle
from ..facts import ConfigFacts, DbFacts
from ..findings import BridgeReport, Finding, Fix
from ..fixes import apply_steps, key_fix, yaml_str
from ..knowledge import BridgeSpec
from ..proof import KeyProof, sessions_opened
from .context import RuleContext
from .prevention import pin_lines, prevention_findings

_SESSION_LABEL = {
    "olm_session": "Olm sessions",
    "megolm_inbound": "inbound Megolm sessions",
    "megolm_outbound": "outbound Megolm sessions",
    "secret": "stored secrets",
}


def _attempt_lines(proof: KeyProof, ctx: RuleContext) -> tuple[str, ...]:
    lines = []
    for a in proof.attempts:
        result = {
            pickle.Verdict.OPENS: "opens the account",
            pickle.Verdict.WRONG_KEY: "MAC mismatch",
            pickle.Verdict.BAD_PLAINTEXT: "MAC matches but the content is not a valid account",
        }[a.verdict]
        lines.append(f"{ctx.show(a.candidate.key)} ({a.candidate.origin}): {result}")
    return tuple(lines)


def key_findings(
    spec: BridgeSpec,
    cfg: ConfigFacts,
    sampled: DbFacts | None,
    ctx: RuleContext,
    report: BridgeReport,
    proof: KeyProof,
    in_force: str | None,
) -> list[Finding]:
    if proof.corrupt:
        return [
            Finding(
                "pickle_corrupt",
                "error",
                f"The stored crypto account is not a libolm pickle: {proof.corrupt}.",
            )
        ]
    evidence = _attempt_lines(proof, ctx)
    # A broken key only stops the bridge when encryption is on; otherwise it is a trap for later.
    severity = "error" if cfg.encryption_allow else "warning"
    if proof.opened_by is None:
        if proof.mac_only:
            return [
                Finding(
                    "pickle_unsupported",
                    "error",
                    f"Key {ctx.show(proof.mac_only[0].candidate.key)} passes the MAC check but the "
                    "account inside is not one this libolm understands: the store was written by a "
                    "newer libolm (a downgraded image?).",
                    evidence=evidence,
                )
            ]
        return [_unknown_key(spec, cfg, ctx, evidence, severity)]
    key = proof.opened_by.key
    acct = proof.account
    if acct:
        report.facts["identity"] = f"ed25519 {acct.ed25519}, account v{acct.version}"
    out: list[Finding] = []
    if in_force is not None and key == in_force:
        out.append(
            Finding(
                "pickle_key_ok",
                "info",
                f"The {proof.opened_by.origin} pickle key {ctx.show(key)} opens the stored "
                "crypto account (MAC verified).",
                evidence=evidence,
            )
        )
        prevention, needs_pin = prevention_findings(spec, key, cfg.homeserver_domain, ctx)
        out.extend(prevention)
    else:
        out.append(_mismatch(spec, cfg, ctx, key, proof, evidence, severity))
        needs_pin = spec.key_setting != "none"
    if needs_pin:
        report.pin = pin_lines(spec, ctx, key)
    if sampled is not None:
        out.extend(_session_findings(sampled, key, ctx))
    return out


def _mismatch(
    spec: BridgeSpec,
    cfg: ConfigFacts,
    ctx: RuleContext,
    key: str,
    proof: KeyProof,
    evidence: tuple[str, ...],
    severity: str,
) -> Finding:
    configured = (
        ctx.show(cfg.pickle_key)
        if cfg.pickle_key not in (None, "generate")
        else repr(cfg.pickle_key)
    )
    origin = proof.opened_by.origin if proof.opened_by else ""
    summary = (
        f"Pickle key mismatch: the config has {configured}, but the crypto account was "
        f"encrypted with {ctx.show(key)} ({origin})."
    )
    if severity == "error":
        summary += " The bridge fails with 'the supplied account key is invalid'."
    else:
        summary += " Encryption is off now; enabling it would fail until the key is set."
    fix = key_fix(spec, ctx.snippet_key(key), ctx.naming, ctx.kb)
    if fix is None:
        summary += (
            f" MDAD cannot set the key of {spec.name} (it is compiled into the bridge), so this "
            "store was written by a different build; restore the matching image or reset crypto."
        )
    return Finding("pickle_key_mismatch", severity, summary, evidence=evidence, fix=fix)  # type: ignore[arg-type]


def _unknown_key(
    spec: BridgeSpec, cfg: ConfigFacts, ctx: RuleContext, evidence: tuple[str, ...], severity: str
) -> Finding:
    why = []
    if cfg.pickle_key == "generate":
        why.append(
            "the config says 'generate', so the key that encrypted the account was random and "
            "never saved"
        )
    if spec.generate_era:
        a, b = spec.generate_era
        why.append(
            f"MDAD rendered 'generate' for {spec.name} from {a} to {b}; stores created then "
            "were encrypted with a random key that was never saved"
        )
    summary = (
        f"No known key opens the {spec.name} crypto account ({len(evidence)} candidates tried): "
        "the key is lost."
    )
    if why:
        summary += " Likely cause: " + "; ".join(why) + "."
    summary += (
        " The way out is a crypto reset (clear the crypto tables, keep portals and logins); "
        "nothing is changed until you ask for it. If you know the old key, retry with --try-key."
    )
    steps = [
        "If you have an old config.yaml backup, look for encryption.pickle_key there and try it "
        f"on the host: bridgedoctor check {spec.name} --try-key '<old key>'",
        f"Otherwise reset the crypto store: `bridgedoctor reset {spec.name}` (it backs up and "
        "verifies first; portals, logins and messages stay, the bridge creates a new device; "
        f"`bridgedoctor restore {spec.name} <id>` undoes it).",
    ]
    pin = None
    if cfg.pickle_key == "generate":
        pin = key_fix(
            spec, yaml_str(spec.default_key or "mautrix.bridge.e2ee"), ctx.naming, ctx.kb
        )
    if pin:
        steps.append("Before the reset, pin a stable key with the snippet, so this cannot recur.")
        steps.append(apply_steps(spec)[1])
    return Finding(
        "pickle_key_unknown",
        severity,  # type: ignore[arg-type]
        summary,
        evidence=evidence,
        fix=Fix(
            vars_yml=pin.vars_yml if pin else "",
            steps=tuple(steps),
            variants=pin.variants if pin else (),
        ),
    )


def _session_findings(db: DbFacts, key: str, ctx: RuleContext) -> list[Finding]:
    opened = sessions_opened(db.samples, key)
    bad = {k: v for k, v in opened.items() if v[0] < v[1]}
    if not bad:
        return []
    parts = [f"{v[1] - v[0]} of {v[1]} sampled {_SESSION_LABEL[k]}" for k, v in bad.items()]
    return [
        Finding(
            "sessions_other_key",
            "warning",
            f"The account opens with {ctx.show(key)}, but " + ", ".join(parts) + " do not: "
            "part of the store was written with another key and cannot be decrypted.",
        )
    ]
