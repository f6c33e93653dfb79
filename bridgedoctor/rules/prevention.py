"""Prevention rules: a bridge that works today, but that the next playbook run or upgrade would
lock out of its crypto store.

MDAD rewrites config.yaml on every run from vars.yml and its defaults (mdad.md §2.1). A store that
opens with a key other than the one MDAD's defaults render keeps working only while config.yaml
keeps that key, that is, only if vars.yml pins it. With the admin's inventory at hand the pin is
read and judged exactly; without it, the warning says it could not look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..facts import InventoryFacts, ProbeError, VarsFile, VarsValue
from ..findings import Finding, Fix
from ..fixes import join_variants, key_variants
from ..knowledge import BridgeSpec
from .context import RuleContext

PinState = Literal["pinned", "other", "absent", "cannot_judge"]
_NOT_LITERAL = {
    "template": "a Jinja expression, not a literal",
    "vault": "encrypted with Ansible Vault, not a literal",
    "other": "not a plain string",
    "unparsable": "an extension YAML that does not parse as written (Jinja around it?)",
}


@dataclass(frozen=True)
class Pin:
    state: PinState
    where: str = ""  # "<file> line N: <variable>"
    value: VarsValue | None = None
    note: str = ""  # why it cannot be judged, or why a pin found is not read


def select_files(inv: InventoryFacts, domain: str | None) -> tuple[list[VarsFile], str]:
    """The host_vars files that describe this server: by matrix_domain when there are several."""
    files = list(inv.files)
    named = [f for f in files if f.domain and f.domain.kind == "literal"]
    if domain:
        matched = [f for f in named if f.domain and f.domain.text == domain]
        if matched:
            return matched, ""
        if len(files) == 1 and files[0] in named:
            return [], f"the inventory's only host is not this server (matrix_domain {domain})"
    if len(files) == 1:
        return files, ""
    return [], (
        f"the inventory has {len(files)} hosts and none sets matrix_domain to this server's "
        f"domain ({domain or 'unknown'})"
    )


def _lookup(spec: BridgeSpec, f: VarsFile, prefix: str) -> tuple[VarsValue, str] | None:
    """The pickle key the file sets for this bridge under one naming, and where. An extension
    YAML that sets encryption.pickle_key wins: MDAD merges it over the rendered config."""
    names = [f"{prefix}configuration_extension_yaml"]
    if spec.key_setting == "variable":
        names.append(f"{prefix}bridge_encryption_pickle_key")
    for name in names:
        value = f.values.get(name)
        if value is not None:
            return value, f"{f.path} line {value.line}: {name}"
    return None


def _state(value: VarsValue, key: str) -> PinState:
    if value.kind != "literal":
        return "cannot_judge"
    return "pinned" if value.text == key else "other"


def judge(spec: BridgeSpec, key: str, inv: InventoryFacts, domain: str | None, era: str) -> Pin:
    """What the inventory pins for this bridge, against the proven `key`. `era` is the MDAD
    naming decided for the admin's checkout: current, legacy, or both (unknown)."""
    files, why = select_files(inv, domain)
    if not files:
        return Pin("cannot_judge", note=why)
    prefixes = {"current": spec.prefix_current, "legacy": spec.prefix_legacy}
    read = [p for e, p in prefixes.items() if p and era in (e, "both")]
    unread = [p for e, p in prefixes.items() if p and p not in read]
    found: list[tuple[VarsValue, str]] = []
    for f in files:
        found += [hit for p in read if (hit := _lookup(spec, f, p))]
    distinct = {(v.kind, v.text) for v, _ in found}
    if len(distinct) > 1:
        where = "; ".join(w for _, w in found)
        return Pin(
            "cannot_judge", note=f"the inventory sets it more than once, differently ({where})"
        )
    if found:
        value, where = found[0]
        note = _NOT_LITERAL.get(value.kind, "")
        return Pin(_state(value, key), where, value, f"it is {note}" if note else "")
    stray = [hit for f in files for p in unread if (hit := _lookup(spec, f, p))]
    if stray:
        checkout = "from 2026-07-16 on" if era == "current" else "before 2026-07-16"
        return Pin(
            "absent",
            note=f"{stray[0][1]} uses the other MDAD naming, which your checkout ({checkout}) "
            "does not read",
        )
    return Pin("absent")


def _snippet(spec: BridgeSpec, key: str, ctx: RuleContext) -> Fix | None:
    variants = key_variants(spec, ctx.snippet_key(key), ctx.naming, ctx.kb)
    if not variants:
        return None
    steps = [
        "Add the snippet to inventory/host_vars/<your matrix domain>/vars.yml. Nothing needs "
        "restarting now: config.yaml already has this key, and the pin keeps it there at every "
        "playbook run.",
    ]
    if ctx.naming.naming == "both":
        steps.insert(0, f"Use the form for your MDAD checkout ({ctx.naming.reason}).")
    return Fix(vars_yml=join_variants(variants), steps=tuple(steps), variants=variants)


def prevention_findings(
    spec: BridgeSpec, key: str, domain: str | None, ctx: RuleContext
) -> tuple[list[Finding], bool]:
    """For a bridge whose configured key opens its store today: the findings, and whether the
    bridge belongs in the `check all` pin block."""
    if spec.key_setting == "none":
        return [], False  # compiled in: nothing MDAD renders can change it
    default = spec.default_key
    shown, shown_default = ctx.show(key), ctx.show(default or "")
    inv = ctx.inventory if isinstance(ctx.inventory, InventoryFacts) else None
    pin = judge(spec, key, inv, domain, ctx.naming.naming) if inv else None
    if pin is not None and pin.state == "pinned":
        return [
            Finding(
                "pickle_key_pinned",
                "info",
                f"vars.yml pins the proven key {shown} ({pin.where}).",
            )
        ], False
    if pin is not None and pin.state == "other":
        assert pin.value is not None
        return [
            Finding(
                "pickle_key_pin_wrong",
                "warning",
                f"{spec.name} works now, but breaks at the next playbook run: {pin.where} pins "
                f"{ctx.show(pin.value.text)}, while the crypto store opens only with {shown}. "
                "The run would render the pinned key and the bridge would fail with 'the "
                "supplied account key is invalid'. Correct the pin before the next run.",
                fix=_snippet(spec, key, ctx),
            )
        ], True
    if pin is not None and pin.state == "cannot_judge":
        what = f"{pin.where}: {pin.note}" if pin.where else pin.note
        return [
            Finding(
                "pickle_key_pin_unknown",
                "info",
                f"Cannot judge the pickle-key pin of {spec.name} in the inventory ({what}); make "
                f"sure it renders {shown}, the key that opens the store.",
            )
        ], False
    if key == default:
        return [], False  # MDAD's defaults render this very key: nothing to pin
    if pin is None:
        if ctx.inventory is None:
            looked = (
                "No inventory was given, so vars.yml was not read: if it already pins this key, "
                "pass --inventory (or set inventory in the helper config) to confirm it."
            )
        else:
            why = ctx.inventory.message if isinstance(ctx.inventory, ProbeError) else ""
            looked = f"The inventory could not be read, so vars.yml was not checked: {why}"
    else:
        looked = "vars.yml does not pin it" + (f": {pin.note}" if pin.note else "") + "."
    return [
        Finding(
            "pickle_key_unpinned",
            "warning",
            f"{spec.name} works only because config.yaml still holds {shown}, the key its crypto "
            f"store opens with; MDAD's defaults render {shown_default}. An upgrade or a playbook "
            "run without a pin will lock the bridge out of its store ('the supplied account key "
            "is invalid'). Pin the key in vars.yml now.",
            evidence=(looked,),
            fix=_snippet(spec, key, ctx),
        )
    ], True


def pin_lines(spec: BridgeSpec, ctx: RuleContext, key: str) -> str:
    """This bridge's part of the `check all` pin block."""
    variants = key_variants(spec, ctx.snippet_key(key), ctx.naming, ctx.kb)
    return f"# {spec.name}: proven key {ctx.show(key)}\n" + join_variants(variants)
