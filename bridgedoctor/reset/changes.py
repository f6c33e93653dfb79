"""What differs between the plan an admin confirmed and the plan as it stands now, in words.

A confirmation is good only for the plan that was shown (its digest). When the helper plans
again at confirmation and the digest differs, "its plan differs" leaves the admin guessing
whether to confirm again; naming the change ("mautrix-whatsapp was running and is stopped
now") tells them what happened on the host since. The helper remembers the plans it showed
(helper/reset_ops.py); this module only compares two of them, as the plain dicts they were
sent as. Values that could carry a key (the apply's key fields, config.yaml's hash) are named,
never shown; the others are shown as one bounded line, as the plan showed them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..render.neutral import one_line

# Field -> how it is named. Fields not listed (the plan's id, its digest) are not compared.
LABELS = {
    "bridge": "the bridge",
    "mode": "the mode",
    "unit": "the unit",
    "database": "the database",
    "data_dir": "the data directory",
    "backup_dir": "where the backup goes",
    "backed_up": "what is backed up",
    "removed": "what is removed",
    "kept": "what is kept",
    "after": "what to do afterwards",
    "backup": "the backup",
    "location": "where the backup lies",
    "backed_up_at": "when the backup was taken",
    "put_back": "what is put back",
    "lost": "what is lost",
    "config": "config.yaml's path",
    "config_sha256": "config.yaml's content",
    "key_from": "the key in config.yaml",
    "key_to": "the key to apply",
    "key_to_id": "the key to apply",
    "origin": "why that key is applied",
    "vars_yml": "the vars.yml pin",
    "pin_steps": "the steps to pin it",
}
HIDDEN = frozenset({"config_sha256", "key_from", "key_to", "key_to_id", "vars_yml"})
SHOWN_ITEMS = 2  # of a list's added or dropped entries; the rest are counted
NAMED = 3  # changes named in one sentence; the rest are counted


def what_changed(shown: Mapping[str, object], now: Mapping[str, object]) -> str:
    """The differences, most telling first (the unit's state), as one clause; "its plan
    differs" when the compared fields are all equal (the difference is in what is not named)."""
    parts: list[str] = []
    if shown.get("was_active") != now.get("was_active"):
        unit = one_line(str(now.get("unit", "the unit")), 80)
        parts.append(
            f"{unit} was running and is stopped now"
            if shown.get("was_active")
            else f"{unit} was stopped and is running now"
        )
    said: set[str] = set()
    for field, label in LABELS.items():
        old, new = shown.get(field), now.get(field)
        if old == new or label in said:
            continue
        said.add(label)
        parts.append(_one(field, label, old, new))
    if not parts:
        return "its plan differs"
    more = len(parts) - NAMED
    text = "; ".join(parts[:NAMED])
    return text + (f"; and {more} more change{'s' if more > 1 else ''}" if more > 0 else "")


def _one(field: str, label: str, old: object, new: object) -> str:
    if field in HIDDEN:
        return f"{label} changed"
    if isinstance(old, list) and isinstance(new, list):  # a plan's tuples, as sent
        return f"{label} changed ({_list_change(old, new)})"
    return f"{label} was {_value(old)} and is {_value(new)} now"


def _list_change(old: list[object], new: list[object]) -> str:
    before, after = [str(x) for x in old], [str(x) for x in new]
    added = [x for x in after if x not in before]
    dropped = [x for x in before if x not in after]
    out = []
    if added:
        out.append("now also " + _items(added))
    if dropped:
        out.append("no longer " + _items(dropped))
    return "; ".join(out) if out else "the same entries in another order"


def _items(items: list[str]) -> str:
    text = ", ".join(one_line(x, 80) for x in items[:SHOWN_ITEMS])
    rest = len(items) - SHOWN_ITEMS
    return text + (f" and {rest} more" if rest > 0 else "")


def _value(v: object) -> str:
    if v is None or v == "":
        return "empty"
    return one_line(str(v), 120)
