"""Matrix messages for apply and for the follow-up after any change: the plan to confirm, the
report, and what the unit did afterwards.

Same rules as render/matrix.py (standard library only, ships in the .mbp; escaped text; lists,
no tables). The vars.yml pin comes first in the plan and in the report: writing config.yaml
fixes the bridge until the next playbook run renders it again; the pin is what makes it last.
Input is what the helper answers: ApplyPlan.to_dict(), the apply summary, the verify answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .matrix import SEVERITY_MARK, Message, _code_block, _steps
from .matrix import _e as esc
from .matrix_reset import _confirm_line
from .neutral import neutral_message

Data = Mapping[str, Any]
PIN_HEAD = (
    "Make it last: pin the key in vars.yml (the next playbook run renders config.yaml again)"
)


def _pin(data: Data, command: str) -> tuple[list[str], str]:
    snippet = str(data.get("vars_yml") or "")
    if not snippet:
        return [], ""
    p, h = _code_block(snippet)
    steps = [str(s) for s in data.get("pin_steps") or []]
    s_plain, s_html = _steps(steps, command)
    return [f"{PIN_HEAD}:", p, *s_plain], f"<p><b>{esc(PIN_HEAD)}:</b></p>{h}{s_html}"


@neutral_message
def apply_plan(plan: Data, code: str, seconds: float, command: str = "!bridge") -> Message:
    name, unit = plan.get("bridge", "?"), plan.get("unit", "?")
    head = (
        f"⚠️ Write the proven key into the config.yaml of {name}? Nothing happens until you "
        "confirm."
    )
    start = "restart" if plan.get("was_active") else "start (it is not running now)"
    steps = [
        f"back up {plan.get('config', '?')} to {plan.get('backup_dir', '?')} and verify the copy",
        f"change encryption.pickle_key from {plan.get('key_from', '?')} to "
        f"{plan.get('key_to', '?')} ({plan.get('origin', '?')}); nothing else in the file changes",
        f"{start} {unit} and follow it, then say how it runs",
    ]
    undo = f"{command} restore {name} {plan.get('id', '?')}"
    pin_plain, pin_html = _pin(plan, command)
    c_plain, c_html = _confirm_line(code, seconds, command)
    plain = [head, *pin_plain, "Then, now:", *(f"{i}. {s}" for i, s in enumerate(steps, 1))]
    plain += [f"Undo: {undo}", c_plain]
    html = (
        f"<p><b>{esc(head)}</b></p>{pin_html}<p>Then, now:</p>"
        f"<ol>{''.join(f'<li>{esc(s)}</li>' for s in steps)}</ol>"
        f"<p>Undo: <code>{esc(undo)}</code></p>{c_html}"
    )
    return "\n".join(plain), html


@neutral_message
def apply_done(result: Data, command: str = "!bridge") -> Message:
    name, ident = result.get("bridge", "?"), result.get("id", "?")
    head = (
        f"✅ {name}: config.yaml now holds the proven key {result.get('key_to', '?')}; "
        f"{result.get('unit', '?')} restarted. Following it now."
    )
    where = f"Backup {ident} in {result.get('location', '?')}."
    undo = f"{command} restore {name} {ident}"
    pin_plain, pin_html = _pin(result, command)
    plain = [head, *pin_plain, where, f"Undo: {undo}"]
    html = f"<p><b>{esc(head)}</b></p>{pin_html}<p>{esc(where)} Undo: <code>{esc(undo)}</code></p>"
    return "\n".join(plain), html


@neutral_message
def verified(answer: Data, command: str = "!bridge") -> Message:
    """The follow-up: up, still failing (its last fatal line and the finding that explains it),
    or not running."""
    name, state = answer.get("bridge", "?"), answer.get("state")
    seconds = answer.get("seconds", 0)
    span = f"{seconds:g} s" if isinstance(seconds, (int, float)) else f"{seconds} s"
    check = f"{command} check {name}"
    if state == "up":
        text = f"🟩 {name} is up: running for {span}, no fatal line."
        return text, f"<p>{esc(text)}</p>"
    if state != "failing":
        why = str(answer.get("detail") or "it is not running")
        text = f"⬜ {name} is not running after the change: {why}. Details: {check}"
        return text, f"<p>{esc(text[: -len(check)])}<code>{esc(check)}</code></p>"
    fatal = str(answer.get("fatal") or "no fatal line in its journal")
    plain = [f"🟥 {name} is still failing: {fatal}"]
    html = f"<p>🟥 <b>{esc(name)}</b> is still failing: <code>{esc(fatal)}</code></p>"
    finding = answer.get("finding")
    if isinstance(finding, Mapping) and finding.get("summary"):
        mark = SEVERITY_MARK.get(str(finding.get("severity")), "⬜")
        plain.append(f"{mark} {finding.get('summary')}")
        html += f"<p>{mark} {esc(finding.get('summary'))}</p>"
    plain.append(f"Details and the fix: {check}")
    html += f"<p>Details and the fix: <code>{esc(check)}</code></p>"
    return "\n".join(plain), html
