"""vars.yml snippets in the MDAD variable naming the admin's checkout understands."""

from __future__ import annotations

import json
from datetime import date, timedelta

from .findings import Fix, Variant
from .knowledge import BridgeSpec, Knowledge
from .naming import NamingDecision


def yaml_str(value: str) -> str:
    # JSON strings are valid YAML double-quoted scalars, escapes included.
    return json.dumps(value, ensure_ascii=False)


def _day_before(iso: str) -> str:
    return (date.fromisoformat(iso) - timedelta(days=1)).isoformat()


def _variable_line(prefix: str, key_text: str) -> str:
    return f"{prefix}bridge_encryption_pickle_key: {key_text}"


def _extension_block(prefix: str, key_text: str) -> str:
    return (
        f"# Merge into an existing {prefix}configuration_extension_yaml if you have one.\n"
        f"{prefix}configuration_extension_yaml: |\n"
        f"  encryption:\n"
        f"    pickle_key: {key_text}"
    )


def key_variants(
    spec: BridgeSpec, key_text: str, decision: NamingDecision, kb: Knowledge
) -> tuple[Variant, ...]:
    """Every snippet form that sets this bridge's pickle key, for the naming(s) decided."""
    if spec.key_setting == "none":
        return ()
    rename = kb.rename_date
    out: list[Variant] = []
    render = _variable_line if spec.key_setting == "variable" else _extension_block
    if decision.naming in ("current", "both"):
        out.append(
            Variant(
                "current",
                f"MDAD checkouts from {rename} on",
                render(spec.prefix_current, key_text),
            )
        )
    legacy = spec.prefix_legacy
    if legacy and decision.naming in ("legacy", "both"):
        until = _day_before(rename)
        since = spec.variable_since if spec.key_setting == "variable" else None
        span = f"from {since} to {until}" if since and since < rename else f"before {rename}"
        out.append(Variant("legacy", f"MDAD checkouts {span}", render(legacy, key_text)))
        if spec.key_setting == "variable" and spec.extension_since and since and since < rename:
            out.append(
                Variant(
                    "legacy-extension",
                    f"MDAD checkouts from {spec.extension_since} to {_day_before(since)} "
                    "(no variable yet)",
                    _extension_block(legacy, key_text),
                )
            )
    return tuple(out)


def join_variants(variants: tuple[Variant, ...]) -> str:
    if len(variants) == 1:
        return variants[0].vars_yml
    return "\n\n".join(f"# {v.applies}:\n{v.vars_yml}" for v in variants)


def apply_steps(spec: BridgeSpec) -> tuple[str, ...]:
    service = spec.dirname
    return (
        "Add the snippet to inventory/host_vars/<your matrix domain>/vars.yml.",
        f"Re-render the config and restart the bridge: just install-service {service}"
        f"  (or: ansible-playbook -i inventory/hosts setup.yml --tags=install-{service},start)",
        f"Watch it start: journalctl -fu {spec.service}",
    )


def key_fix(
    spec: BridgeSpec, key_text: str, decision: NamingDecision, kb: Knowledge
) -> Fix | None:
    variants = key_variants(spec, key_text, decision, kb)
    if not variants:
        return None
    steps = apply_steps(spec)
    if decision.naming == "both":
        steps = (f"Use the form for your MDAD checkout ({decision.reason}).",) + steps
    return Fix(vars_yml=join_variants(variants), steps=steps, variants=variants)


class _Var:
    """`{var:NAME}` in a catalogue step: the bridge's variable NAME in the admin's naming era."""

    def __init__(self, spec: BridgeSpec, decision: NamingDecision, kb: Knowledge) -> None:
        self.spec, self.decision, self.kb = spec, decision, kb

    def __format__(self, name: str) -> str:
        return variable(self.spec, name, self.decision, self.kb)


def variable(spec: BridgeSpec, name: str, decision: NamingDecision, kb: Knowledge) -> str:
    """One bridge variable's name; both forms, labelled, when the era is unclear."""
    current = spec.prefix_current + name
    legacy = spec.prefix_legacy + name if spec.prefix_legacy else None
    if legacy is None or decision.naming == "current":
        return current
    if decision.naming == "legacy":
        return legacy
    return f"{current} (MDAD checkouts before {kb.rename_date}: {legacy})"


class _Values(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "?"  # a placeholder the log line did not fill: shown as unknown, never guessed


def fill(
    template: str,
    spec: BridgeSpec,
    decision: NamingDecision,
    kb: Knowledge,
    values: dict[str, str] | None = None,
) -> str:
    """A catalogue text with its placeholders: {bridge} {dirname} {service} {db_name}
    {config_dir} {var:NAME}, and the named groups a log line matched."""
    known = {
        "bridge": spec.name,
        "dirname": spec.dirname,
        "service": spec.service,
        "db_name": spec.db_name,
        "config_dir": f"/matrix/{spec.dirname}/config",
        **(values or {}),
    }
    return template.format_map(_Values(known, var=_Var(spec, decision, kb)))
