"""Config rules: what config.yaml says, read before any database is opened."""

from __future__ import annotations

from ..facts import BridgeFacts, ConfigFacts, ProbeError
from ..findings import Finding, Fix
from ..fixes import key_fix, variable, yaml_str
from ..knowledge import BridgeSpec
from .context import RuleContext


def config_error(spec: BridgeSpec, err: ProbeError) -> Finding:
    return Finding(
        err.code if err.code in ("config_missing", "config_refused") else "config_unreadable",
        "unknown",
        f"Cannot check {spec.name}: {err.message}",
        fix=Fix(
            vars_yml="",
            steps=(
                "MDAD rewrites config.yaml on every playbook run; render it again with "
                f"just install-service {spec.dirname}",
            ),
        ),
    )


def config_findings(
    spec: BridgeSpec, cfg: ConfigFacts, facts: BridgeFacts, ctx: RuleContext
) -> list[Finding]:
    out: list[Finding] = []
    if cfg.layout != spec.framework:
        out.append(
            Finding(
                "config_layout_unexpected",
                "warning",
                f"config.yaml is in the {cfg.layout} layout, but MDAD renders {spec.name} as "
                f"{spec.framework}; the roles or the image may be out of date.",
                fix=Fix(vars_yml="", steps=("just roles", "just setup-all")),
            )
        )
    if cfg.env_config_prefix:
        out.append(
            Finding(
                "env_override_possible",
                "info",
                f"env_config_prefix is {cfg.env_config_prefix!r}: an environment variable "
                f"{cfg.env_config_prefix}ENCRYPTION__PICKLE_KEY would override the configured key.",
            )
        )
    if cfg.layout == "bridgev2" and cfg.pickle_key == "":
        out.append(
            Finding(
                "pickle_key_empty",
                "error",
                "encryption.pickle_key is empty: the bridge panics with 'CryptoPickleKey not set'.",
                fix=key_fix(spec, yaml_str(spec.default_key or ""), ctx.naming, ctx.kb),
            )
        )
    if cfg.layout == "bridgev2" and cfg.pickle_key == "generate" and cfg.encryption_allow:
        unsaved = "--no-update" if facts.unit is None or facts.unit.no_update else "its config"
        out.append(
            Finding(
                "pickle_key_generate",
                "warning",
                "encryption.pickle_key is 'generate': under MDAD the bridge never saves the key "
                f"it generates ({unsaved}), so every start uses a new random key and the crypto "
                "store becomes unreadable from the second start on.",
                fix=key_fix(
                    spec, yaml_str(spec.default_key or "mautrix.bridge.e2ee"), ctx.naming, ctx.kb
                ),
            )
        )
    dp = double_puppet_shared_secret(spec, cfg, ctx)
    if dp is not None:
        out.append(dp)
    return out


def double_puppet_shared_secret(
    spec: BridgeSpec, cfg: ConfigFacts, ctx: RuleContext
) -> Finding | None:
    """bridgev2 dropped shared-secret login: double_puppet.secrets must be `as_token:<token>`."""
    if cfg.layout != "bridgev2":
        return None
    plain = [server for server, form in cfg.double_puppet if form == "shared_secret"]
    if not plain:
        return None
    custom = variable(spec, "double_puppet_secrets_custom", ctx.naming, ctx.kb)
    return Finding(
        "double_puppet_shared_secret",
        "warning",
        f"double_puppet.secrets holds a plain shared secret for {', '.join(plain)}: bridgev2 "
        "bridges only accept the 'as_token:<token>' form, so double puppeting fails with "
        "M_UNKNOWN_TOKEN.",
        evidence=tuple(
            f"double_puppet.secrets[{s}]: a plain shared secret (not as_token:...)" for s in plain
        ),
        fix=Fix(
            vars_yml="matrix_appservice_double_puppet_enabled: true",
            steps=(
                "Add the snippet to inventory/host_vars/<your matrix domain>/vars.yml: MDAD then "
                "fills double_puppet.secrets with the as_token: form.",
                f"Remove the plain secret from {custom} if you set one there.",
                "Re-render every bridge: just setup-all",
            ),
        ),
    )
