"""Matrix messages for reset, restore and backups: the plan to confirm, the report, the list.

Same rules as render/matrix.py (standard library only, ships in the .mbp; escaped text; lists,
no tables). Input is what the helper answers: Plan.to_dict(), RestorePlan.to_dict(), manifest
summaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .matrix import Message, info
from .matrix import _e as esc
from .neutral import neutral_message

CONFIRM_KEY = "✅"
CANCEL_KEY = "❌"
Data = Mapping[str, Any]


def _items(values: Sequence[object]) -> tuple[list[str], str]:
    return [f"   - {v}" for v in values], "".join(f"<li>{esc(v)}</li>" for v in values)


def duration(seconds: float) -> str:
    """ "5 minutes", "90 seconds", "1 second": whole minutes when it is whole minutes."""
    n, unit = (round(seconds / 60), "minute") if seconds % 60 == 0 else (round(seconds), "second")
    return f"{n} {unit}" + ("" if n == 1 else "s")


def _confirm_line(code: str, seconds: float, command: str) -> tuple[str, str]:
    span = duration(seconds)
    return (
        f"Confirm within {span}: react {CONFIRM_KEY} to this message, or send "
        f"{command} confirm {code}. {CANCEL_KEY} cancels. Only you can confirm.",
        f"<p><b>Confirm within {esc(span)}</b>: react {CONFIRM_KEY} to this message, or send "
        f"<code>{esc(command)} confirm {esc(code)}</code>. {CANCEL_KEY} cancels. "
        "Only you can confirm.</p>",
    )


def _touches(database: object, data_dir: object, fate: str) -> tuple[list[str], str]:
    """What the plan touches, shown outside any fold: the admin confirms these two places."""
    return (
        [f"Database: {database}", f"Data directory: {data_dir} ({fate})"],
        f"<p>Database: <code>{esc(database)}</code><br>"
        f"Data directory: <code>{esc(data_dir)}</code> ({esc(fate)})</p>",
    )


@neutral_message
def reset_plan(plan: Data, code: str, seconds: float, command: str = "!bridge") -> Message:
    """The plan, verdict first: what stops, what is backed up where, removed, kept, after, undo."""
    name, mode, unit = plan.get("bridge", "?"), plan.get("mode", "?"), plan.get("unit", "?")
    backed = [str(b) for b in plan.get("backed_up") or []]
    removed = [str(r) for r in plan.get("removed") or []]
    after = [str(a) for a in plan.get("after") or []]
    start = "start" if plan.get("was_active") else "leave stopped (it is not running now):"
    undo = f"{command} restore {name} {plan.get('id', '?')}"
    head = f"⚠️ Reset {name} ({mode})? Nothing happens until you confirm."
    fate = "emptied" if mode == "full" else "not emptied"
    t_plain, t_html = _touches(plan.get("database", "?"), plan.get("data_dir", "?"), fate)
    steps = [
        f"stop {unit} and check it is inactive",
        f"back up to {plan.get('backup_dir', '?')} and verify the backup (row counts, sha256) "
        "before anything is removed",
        f"remove: {'; '.join(removed)}",
        f"{start} {unit}",
    ]
    b_plain, b_html = _items(backed)
    a_plain, a_html = _items(after)
    c_plain, c_html = _confirm_line(code, seconds, command)
    plain = [head, *t_plain, *(f"{i}. {s}" for i, s in enumerate(steps, 1))]
    plain += ["Backed up:", *b_plain, f"Kept: {plan.get('kept', '')}", "Afterwards:", *a_plain]
    plain += [f"Undo: {undo}", c_plain]
    html = (
        f"<p><b>{esc(head)}</b></p>{t_html}"
        f"<ol>{''.join(f'<li>{esc(s)}</li>' for s in steps)}</ol>"
        f"<details><summary>Backed up ({len(backed)})</summary><ul>{b_html}</ul>"
        f"<p>Kept: {esc(plan.get('kept', ''))}</p></details>"
        f"<p>Afterwards:</p><ul>{a_html}</ul>"
        f"<p>Undo: <code>{esc(undo)}</code></p>{c_html}"
    )
    return "\n".join(plain), html


@neutral_message
def restore_plan(plan: Data, code: str, seconds: float, command: str = "!bridge") -> Message:
    name, unit = plan.get("bridge", "?"), plan.get("unit", "?")
    head = f"⚠️ Restore {name} from {plan.get('backup', '?')}? Nothing happens until you confirm."
    start = "start it" if plan.get("was_active") else "leave it stopped (it is not running now)"
    steps = [
        f"stop {unit} and check it is inactive",
        f"put back {plan.get('put_back', '?')} from {plan.get('location', '?')} "
        f"(backed up {plan.get('backed_up_at', '?')}) and check it matches the backup",
        start,
    ]
    lost = f"Lost: {plan.get('lost', '')}."
    fate = "not touched" if plan.get("mode") == "crypto" else "replaced by the backup's"
    t_plain, t_html = _touches(plan.get("database", "?"), plan.get("data_dir", "?"), fate)
    c_plain, c_html = _confirm_line(code, seconds, command)
    plain = [head, *t_plain, *(f"{i}. {s}" for i, s in enumerate(steps, 1)), lost, c_plain]
    html = (
        f"<p><b>{esc(head)}</b></p>{t_html}<ol>{''.join(f'<li>{esc(s)}</li>' for s in steps)}</ol>"
        f"<p>{esc(lost)}</p>{c_html}"
    )
    return "\n".join(plain), html


@neutral_message
def reset_done(result: Data, command: str = "!bridge") -> Message:
    name, ident = result.get("bridge", "?"), result.get("id", "?")
    head = f"✅ {name}: {result.get('mode', '?')} reset done."
    where = f"Backup {ident}, verified, in {result.get('location', '?')}."
    undo = f"{command} restore {name} {ident}"
    after = [str(a) for a in result.get("after") or []]
    a_plain, a_html = _items(after)
    plain = [head, where, "Now:", *a_plain, f"Undo: {undo}"]
    html = (
        f"<p><b>{esc(head)}</b> {esc(where)}</p><p>Now:</p><ul>{a_html}</ul>"
        f"<p>Undo: <code>{esc(undo)}</code></p>"
    )
    return "\n".join(plain), html


@neutral_message
def restore_done(result: Data, command: str = "!bridge") -> Message:
    name = result.get("bridge", "?")
    head = f"✅ {name}: restored from {result.get('source', '?')}."
    check = f"{command} check {name}"
    return (
        f"{head} Check it with {check}.",
        f"<p><b>{esc(head)}</b> Check it with <code>{esc(check)}</code>.</p>",
    )


_BACKUP_FIELDS = ("id", "mode", "state", "requested_by", "location")


@neutral_message
def backups(answer: Data, command: str = "!bridge") -> Message:
    name = answer.get("bridge", "?")
    items = [b for b in answer.get("backups") or [] if isinstance(b, Mapping)]
    if not items:
        return info(f"No reset backups of {name} on this host.")
    lines = []
    for b in items:
        # An older helper may leave a field out: "?" then, never "None".
        f = {k: b.get(k) if b.get(k) is not None else "?" for k in _BACKUP_FIELDS}
        line = f"{f['id']} — {f['mode']}, {f['state']}, by {f['requested_by']}, in {f['location']}"
        if b.get("error"):
            line += f" ({b.get('error')})"
        lines.append(line)
    restorable = [b for b in items if "verify" in (b.get("steps") or [])]
    hint = (
        f"Put one back with {command} restore {name} <id>."
        if restorable
        else "None of them completed a verified backup, so none can be restored."
    )
    plain = [f"Reset backups of {name} ({len(items)}):", *(f"- {x}" for x in lines), hint]
    html = (
        f"<p>Reset backups of <b>{esc(name)}</b> ({len(items)}):</p>"
        f"<ul>{''.join(f'<li>{esc(x)}</li>' for x in lines)}</ul><p>{esc(hint)}</p>"
    )
    return "\n".join(plain), html


@neutral_message
def ended(kind: str, bridge: str, why: str) -> Message:
    """A plan that will not run: cancelled or expired. Says that nothing was changed."""
    return info(f"{kind.capitalize()} of {bridge} {why}; nothing was changed.")


def progress(kind: str, bridge: str, state: Data, done: str = "") -> Message:
    """One line for a running reset or restore, edited as the helper reports: the step, and the
    rows so far in a long one. `done` ends it ("finished", "stopped")."""
    step, steps = state.get("index", "?"), state.get("steps", "?")
    line = f"{kind.capitalize()} of {bridge}, step {step} of {steps}: {state.get('doing', '…')}"
    if (
        "table" in state
        and state.get("rows") is not None
        and state.get("step")
        in (
            "backup",
            "restore_db",
        )
    ):
        of = state.get("of")
        total = (
            f" of {'about ' if state.get('approx') else ''}{of:,}" if isinstance(of, int) else ""
        )
        line += f", {state['table']}: {state['rows']:,}{total} rows"
    head = f"{'⏳' if not done else '✔️'} {line}" + (f" ({done})" if done else "")
    return head, f"<p>{esc(head)}</p>"
