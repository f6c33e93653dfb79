"""Registration rules: do config.yaml, registration.yaml and the homeserver agree?

MDAD renders config.yaml and registration.yaml from the same variables and lists the registration
in Synapse's app_service_config_files, mounted into its container as
/matrix-mautrix-<b>-registration.yaml (mdad.md §2.1 "Homeserver side"). Synapse reads
registrations only when it starts. Tokens are compared as digests (probes/config.token_digest).
"""

from __future__ import annotations

import time

from ..facts import BridgeFacts, ConfigFacts, HomeserverFacts, RegistrationFacts
from ..findings import Finding, Fix
from ..fixes import variable
from ..probes.registration import container_path
from .context import RuleContext


def _restart_synapse() -> str:
    return (
        "Synapse reads registrations only when it starts: restart it with "
        "just start-group synapse  (or: systemctl restart matrix-synapse)"
    )


def token_mismatch(
    facts: BridgeFacts, cfg: ConfigFacts, reg: RegistrationFacts, ctx: RuleContext
) -> Finding | None:
    a, b = cfg.appservice, reg.appservice
    if a is None:
        return None
    differ = [
        name
        for name, mine, theirs in (
            ("as_token", a.as_token, b.as_token),
            ("hs_token", a.hs_token, b.hs_token),
        )
        if mine and theirs and mine != theirs
    ]
    if not differ:
        return None
    spec = facts.spec
    ext = variable(spec, "configuration_extension_yaml", ctx.naming, ctx.kb)
    return Finding(
        "registration_token_mismatch",
        "error",
        f"{' and '.join(differ)} {'differ' if len(differ) > 1 else 'differs'} between config.yaml "
        "and registration.yaml: the homeserver "
        "knows the bridge by the registration's tokens, so it rejects the bridge's "
        f"{'as_token' if 'as_token' in differ else 'requests'}.",
        evidence=tuple(
            f"{name}: config.yaml {getattr(a, name)}, registration.yaml {getattr(b, name)}"
            for name in differ
        ),
        fix=Fix(
            vars_yml="",
            steps=(
                f"If {ext} sets appservice.as_token or hs_token, remove them: MDAD derives both "
                "files' tokens from matrix_homeserver_generic_secret_key.",
                f"Re-render both files from the same tokens: just install-service {spec.dirname}",
                _restart_synapse(),
            ),
        ),
    )


def not_loaded(
    facts: BridgeFacts, reg: RegistrationFacts, hs: HomeserverFacts, ctx: RuleContext
) -> Finding | None:
    spec = facts.spec
    inside = container_path(spec.dirname)
    problem = ""
    evidence = [f"{hs.config}: app_service_config_files = {list(hs.app_service_files)}"]
    mounted = dict(hs.mounts).get(inside)
    if inside not in hs.app_service_files:
        problem = f"Synapse does not list {inside} in app_service_config_files ({hs.config})"
    elif hs.mounts and mounted is None:
        problem = f"Synapse lists {inside}, but matrix-synapse.service does not mount it"
    elif mounted is not None and mounted != reg.path:
        problem = f"Synapse mounts {inside} from {mounted}, not from {reg.path}"
        evidence.append(f"matrix-synapse.service: {mounted} -> {inside}")
    elif hs.started_at is not None and reg.mtime > hs.started_at + 1:
        changed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reg.mtime))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hs.started_at))
        problem = (
            f"{reg.path} changed at {changed}, after Synapse started ({started}): Synapse still "
            "has the old registration"
        )
    if not problem:
        return None
    return Finding(
        "registration_not_loaded",
        "error",
        f"The homeserver has not loaded this bridge's registration: {problem}.",
        evidence=tuple(evidence),
        fix=Fix(
            vars_yml="",
            steps=(
                f"Make sure {variable(spec, 'enabled', ctx.naming, ctx.kb)}: true is in vars.yml, "
                "then let the playbook list and mount the registration: just install-service synapse",
                _restart_synapse(),
            ),
        ),
    )


def msc4190_mismatch(
    facts: BridgeFacts, cfg: ConfigFacts, reg: RegistrationFacts, ctx: RuleContext
) -> Finding | None:
    if cfg.msc4190 is None or reg.msc4190 is None or cfg.msc4190 == reg.msc4190:
        return None
    spec = facts.spec
    on = variable(spec, "msc4190_enabled", ctx.naming, ctx.kb)
    ext = variable(spec, "configuration_extension_yaml", ctx.naming, ctx.kb)
    return Finding(
        "msc4190_mismatch",
        "error",
        f"MSC4190 is {'on' if reg.msc4190 else 'off'} in registration.yaml (io.element.msc4190) "
        f"but {'on' if cfg.msc4190 else 'off'} in config.yaml (encryption.msc4190): the homeserver "
        "and the bridge disagree on how the bridge bot logs in.",
        evidence=(
            f"config.yaml encryption.msc4190: {str(cfg.msc4190).lower()}",
            f"registration.yaml io.element.msc4190: {str(reg.msc4190).lower()}",
        ),
        fix=Fix(
            vars_yml="",
            steps=(
                f"MDAD renders both from {on}; remove any encryption.msc4190 from {ext}.",
                f"Re-render both files: just install-service {spec.dirname}",
                _restart_synapse(),
            ),
        ),
    )


def findings(facts: BridgeFacts, ctx: RuleContext) -> list[Finding]:
    cfg, reg, hs = facts.config, facts.registration, facts.homeserver
    if not isinstance(cfg, ConfigFacts) or not isinstance(reg, RegistrationFacts):
        return []
    out = [token_mismatch(facts, cfg, reg, ctx)]
    if cfg.layout == "bridgev2":
        out.append(msc4190_mismatch(facts, cfg, reg, ctx))
    if isinstance(hs, HomeserverFacts):
        out.append(not_loaded(facts, reg, hs, ctx))
    return [f for f in out if f is not None]
