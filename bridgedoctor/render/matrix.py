"""Matrix messages: (plain body, HTML) pairs for the maubot plugin.

Works on the report *dicts* the helper sends over the socket (BridgeReport.to_dict(),
FleetReport.to_dict(), the `list` answer), not on the dataclasses, and imports nothing but the
standard library: this module ships inside the maubot plugin, where nothing can be installed.

HTML follows the Matrix spec's allowlist (p, b, code, pre, ul, ol, li, details, summary, br);
no tables, because CommonMark clients and maubot render none. Every piece of text from the
report is escaped. Quotes are left alone (they are only special inside attributes, and no
report text goes into an attribute), so a vars.yml snippet appears byte for byte in the HTML.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from .neutral import neutral_message

Message = tuple[str, str]  # (plain body, HTML formatted_body)
Report = Mapping[str, Any]

# Same words as render/common.py STATUS_WORD (tests keep them in step).
STATUS_WORD = {"ok": "ok", "warning": "warning", "broken": "broken", "unknown": "could not check"}
STATUS_SQUARE = {"ok": "🟩", "warning": "🟨", "broken": "🟥", "unknown": "⬜"}
SEVERITY_MARK = {"error": "🟥", "warning": "🟨", "unknown": "⬜", "info": "ℹ️"}
_RANK = {"error": 3, "unknown": 2, "warning": 1, "info": 0}
_STATUS_RANK = {"broken": 3, "unknown": 2, "warning": 1, "ok": 0}

# Heads the `check all` pin block; the same words as render/common.PIN_TITLE.
PIN_TITLE = "Pin these keys in vars.yml before the next playbook run"
# Matrix caps an event at 65536 bytes including the envelope; keep the content well below.
MAX_CONTENT_BYTES = 56_000

# CLI subcommands that the plugin offers as `!bridge <sub>` with the same arguments.
ROOM_SUBCOMMANDS = ("check", "reset", "restore", "backups", "logs")

# Shell commands inside fix steps ("...: just install-service mautrix-x  (or: ansible-...)"),
# shown as <code> so they can be copied. A command ends at two spaces, a ')' or the end.
_COMMAND_RE = re.compile(
    r"((?:just|ansible-playbook|journalctl|systemctl|docker|bridgedoctor) [^\s)][^)]*?)"
    r"(?=\s{2}|\)|$)"
)


def _e(text: object) -> str:
    return escape(str(text), quote=False)


def _status(report: Report) -> str:
    status = str(report.get("status", "unknown"))
    return status if status in STATUS_WORD else "unknown"


def _findings(report: Report) -> list[Mapping[str, Any]]:
    """Findings worst first, stable within a severity (as render/common.ordered)."""
    found = [f for f in report.get("findings") or [] if isinstance(f, Mapping)]
    return sorted(found, key=lambda f: -_RANK.get(str(f.get("severity")), 2))


def _verdict_finding(report: Report) -> Mapping[str, Any] | None:
    """The finding the verdict line says (chosen as render/common.verdict)."""
    findings = _findings(report)
    if not findings:
        return None
    head = findings[0]
    if head.get("severity") == "info" and _status(report) == "ok":
        ok = [f for f in findings if f.get("code") == "pickle_key_ok"]
        return ok[0] if ok else head
    return head


def _said(finding: Mapping[str, Any]) -> str:
    # A helper of another version may leave a field out: never an empty line.
    summary = finding.get("summary")
    if summary:
        return str(summary)
    code = finding.get("code")
    return f"no summary given (code {code})." if code else "no summary given."


def verdict(report: Report) -> str:
    """The one-line verdict, worded as render/common.verdict."""
    head = _verdict_finding(report)
    return "no problem found." if head is None else _said(head)


def first_sentence(text: str) -> str:
    """The first sentence of a summary, for one-line listings (as render/common)."""
    head, sep, _ = text.partition(". ")
    return head + "." if sep else text


def _headline(report: Report, short: bool = False) -> tuple[str, str]:
    status = _status(report)
    name, word, text = report.get("bridge", "?"), STATUS_WORD[status], verdict(report)
    if short:
        text = first_sentence(text)
    square = STATUS_SQUARE[status]
    return (
        f"{square} {name}: {word} — {text}",
        f"{square} <b>{_e(name)}</b>: {_e(word)} — {_e(text)}",
    )


def _inline_html(text: str, command: str) -> str:
    """Escape a sentence, marking `backticked` spans and shell commands up as <code>."""
    out = []
    for i, part in enumerate(text.split("`")):
        if i % 2:  # inside backticks
            out.append(f"<code>{_e(_room_command(part, command))}</code>")
            continue
        pos = 0
        for m in _COMMAND_RE.finditer(part):
            out.append(_e(part[pos : m.start()]) + f"<code>{_e(m.group(1))}</code>")
            pos = m.end()
        out.append(_e(part[pos:]))
    return "".join(out)


def _room_command(text: str, command: str) -> str:
    """`bridgedoctor check|reset|restore|backups ...` as the same command in the room."""
    for sub in ROOM_SUBCOMMANDS:
        text = text.replace(f"bridgedoctor {sub} ", f"{command} {sub} ")
    return text


def _inline_plain(text: str, command: str) -> str:
    parts = text.split("`")
    return "`".join(_room_command(p, command) if i % 2 else p for i, p in enumerate(parts))


def _code_block(snippet: str) -> tuple[str, str]:
    return (
        f"```yaml\n{snippet}\n```",
        f'<pre><code class="language-yaml">{_e(snippet)}\n</code></pre>',
    )


def _steps(steps: Sequence[str], command: str) -> tuple[list[str], str]:
    plain = [f"{i}. {_inline_plain(s, command)}" for i, s in enumerate(steps, 1)]
    items = "".join(f"<li>{_inline_html(s, command)}</li>" for s in steps)
    return plain, f"<ol>{items}</ol>" if steps else ""


def _fix(fix: Mapping[str, Any], command: str, title: str) -> tuple[list[str], list[str]]:
    plain: list[str] = []
    html: list[str] = []
    snippet = str(fix.get("vars_yml") or "")
    if snippet:
        p, h = _code_block(snippet)
        plain += [f"{title}:", p]
        html += [f"<p><b>{_e(title)}:</b></p>", h]
    steps = [str(s) for s in fix.get("steps") or []]
    if steps:
        p_steps, h_steps = _steps(steps, command)
        if not snippet:
            plain.append(f"{title}:")
            html.append(f"<p><b>{_e(title)}:</b></p>")
        plain += p_steps
        html.append(h_steps)
    return plain, html


def _evidence(report: Report, findings: Sequence[Mapping[str, Any]]) -> tuple[list[str], str]:
    """Evidence of every finding plus the printable facts, folded in one <details>."""
    plain: list[str] = []
    parts: list[str] = []
    for f in findings:
        lines = [str(e) for e in f.get("evidence") or []]
        if not lines:
            continue
        plain.append(f"Evidence ({f.get('code', '?')}):")
        plain += [f"  - {e}" for e in lines]
        items = "".join(f"<li>{_e(e)}</li>" for e in lines)
        parts.append(f"<p><b>{_e(f.get('code', '?'))}</b></p><ul>{items}</ul>")
    facts = report.get("facts") or {}
    if isinstance(facts, Mapping) and facts:
        plain.append("Facts:")
        plain += [f"  - {k}: {v}" for k, v in facts.items()]
        items = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in facts.items())
        parts.append(f"<p><b>Facts</b></p><ul>{items}</ul>")
    if not parts:
        return [], ""
    return plain, f"<details><summary>Evidence</summary>{''.join(parts)}</details>"


def _fits(plain: str, html: str) -> bool:
    return len(plain.encode()) + len(html.encode()) <= MAX_CONTENT_BYTES


@neutral_message
def bridge_report(report: Report, command: str = "!bridge") -> Message:
    """One bridge: verdict line, other findings, evidence folded in <details>, then each fix."""
    head_plain, head_html = _headline(report)
    findings = _findings(report)
    shown = verdict(report)
    # The verdict's finding (or one saying the same) is not repeated, nor a unit state folded
    # into its cause's verdict; other findings a cause explains are marked as following from it.
    others = [
        f
        for f in findings
        if _said(f) != shown
        and not (f.get("explained_by") and str(f.get("code", "")).startswith("service_"))
    ]
    plain, html = [head_plain], [f"<p>{head_html}</p>"]
    if others:
        marks = [
            ("↳" if f.get("explained_by") else SEVERITY_MARK.get(str(f.get("severity")), "⬜"), f)
            for f in others
        ]
        plain += [f"{m} {_said(f)}" for m, f in marks]
        items = "".join(f"<li>{m} {_e(_said(f))}</li>" for m, f in marks)
        html.append(f"<ul>{items}</ul>")
    fix_plain: list[str] = []
    fix_html: list[str] = []
    for f in findings:
        fix = f.get("fix")
        if f.get("explained_by"):
            continue  # fixing the cause fixes it
        if isinstance(fix, Mapping) and (fix.get("vars_yml") or fix.get("steps")):
            p, h = _fix(fix, command, "Fix")
            fix_plain += ["", *p]
            fix_html += h
    ev_plain, ev_html = _evidence(report, findings)
    full = (
        "\n".join([*plain, *([""] + ev_plain if ev_plain else []), *fix_plain]),
        "".join([*html, ev_html, *fix_html]),
    )
    if _fits(*full):
        return full
    # Never drop the fix: the evidence is what gives way.
    name = report.get("bridge")
    note = f"The evidence is too long for one message; run bridgedoctor check {name} on the host."
    return (
        "\n".join([*plain, "", note, *fix_plain]),
        "".join([*html, f"<p>{_e(note)}</p>", *fix_html]),
    )


@neutral_message
def fleet_report(fleet: Report, command: str = "!bridge") -> Message:
    """`check all`: a summary line, one line per bridge, then the pin block."""
    reports = [r for r in fleet.get("bridges") or [] if isinstance(r, Mapping)]
    if not reports:
        return info("No mautrix bridges found.")
    worst = max((_status(r) for r in reports), key=lambda s: _STATUS_RANK[s])
    counts: dict[str, int] = {}
    for r in reports:
        counts[_status(r)] = counts.get(_status(r), 0) + 1
    tally = ", ".join(
        f"{n} {STATUS_WORD[s]}"
        for s, n in sorted(counts.items(), key=lambda i: -_STATUS_RANK[i[0]])
    )
    noun = "bridge" if len(reports) == 1 else "bridges"
    summary = f"{STATUS_SQUARE[worst]} {len(reports)} {noun} checked: {tally}."
    lines = [_headline(r, short=True) for r in reports]
    plain = [summary, *(p for p, _ in lines)]
    html = [f"<p>{_e(summary)}</p>", "<ul>" + "".join(f"<li>{h}</li>" for _, h in lines) + "</ul>"]
    pin = fleet.get("pin")
    if isinstance(pin, Mapping):
        p, h = _fix(pin, command, PIN_TITLE)
        plain += ["", *p]
        html += h
    problems = [str(r.get("bridge")) for r in reports if _status(r) != "ok"]
    if problems:
        cmds = [f"{command} check {name}" for name in problems]
        plain += ["", "Details and fixes: " + " | ".join(cmds)]
        html.append(
            "<p>Details and fixes: " + " | ".join(f"<code>{_e(c)}</code>" for c in cmds) + "</p>"
        )
    return "\n".join(plain), "".join(html)


def _bridge_name(item: object) -> str:
    if isinstance(item, Mapping):
        return str(item.get("bridge") or item.get("name") or "?")
    return str(item)


@neutral_message
def bridge_list(answer: Report, command: str = "!bridge") -> Message:
    """The `list` answer: deployed bridge names (strings, or dicts with a name)."""
    names = [_bridge_name(b) for b in answer.get("bridges") or []]
    if not names:
        return info("No mautrix bridges found.")
    plain = [f"Deployed bridges ({len(names)}):", *(f"- {n}" for n in names)]
    plain.append(f"Check one with {command} check <name>, or all with {command} check all.")
    items = "".join(f"<li>{_e(n)}</li>" for n in names)
    html = (
        f"<p>Deployed bridges ({len(names)}):</p><ul>{items}</ul>"
        f"<p>Check one with <code>{_e(command)} check &lt;name&gt;</code>, "
        f"or all with <code>{_e(command)} check all</code>.</p>"
    )
    return "\n".join(plain), html


def _log_block(lines: Sequence[str]) -> tuple[str, str]:
    body = "\n".join(lines)
    # A line cannot end the block early: a run of backticks in it is longer than any fence.
    fence = "`" * max(3, max((len(r) for r in re.findall(r"`+", body)), default=0) + 1)
    return (
        f"{fence}text\n{body}\n{fence}",
        f'<pre><code class="language-text">{_e(body)}\n</code></pre>',
    )


@neutral_message
def logs_report(answer: Report, command: str = "!bridge") -> Message:
    """`logs`: the unit's state, then the last fatal and error lines in a code block."""
    name = str(answer.get("bridge") or "?")
    problem = answer.get("problem")
    if problem:
        return info(f"⬜ {name}: {problem}")
    unit, state, run = (str(answer.get(k) or "") for k in ("unit", "state", "run"))
    lines = [str(x) for x in answer.get("lines") or []]
    where = f"{unit}: {state}" if state else unit
    if not lines:
        text = f"🟩 {name}: no fatal or error line since it last started ({where})."
        return text, f"<p>{_e(text)}</p>"
    head = f"🟥 {name}: last fatal and error lines of its {run or 'current run'} ({where})"
    note = "Older lines of this run are left out." if answer.get("truncated") else ""
    check = f"{command} check {name}"
    hint = f"Diagnosis and fix: {check}"
    block = list(lines)
    plain, html = _log_block(block)
    while not _fits(plain, html) and len(block) > 1:  # never more than one event
        block = block[1:]
        note = "Older lines are left out to fit one message."
        plain, html = _log_block(block)
    return (
        "\n".join([head + ":", plain, *([note] if note else []), hint]),
        f"<p>{_e(head)}:</p>{html}"
        + (f"<p>{_e(note)}</p>" if note else "")
        + f"<p>Diagnosis and fix: <code>{_e(check)}</code></p>",
    )


@neutral_message
def error(sentence: str) -> Message:
    """A failure in one plain sentence (helper unreachable, refused, ...)."""
    return f"⚠️ {sentence}", f"<p>⚠️ {_e(sentence)}</p>"


@neutral_message
def info(sentence: str) -> Message:
    return sentence, f"<p>{_e(sentence)}</p>"


@neutral_message
def usage(lines: Iterable[tuple[str, str]], intro: str = "") -> Message:
    """A help page: (command, what it does) pairs as a list, no table."""
    pairs = list(lines)
    plain = ([intro] if intro else []) + [f"- {c} — {d}" for c, d in pairs]
    items = "".join(f"<li><code>{_e(c)}</code> — {_e(d)}</li>" for c, d in pairs)
    html = (f"<p>{_e(intro)}</p>" if intro else "") + f"<ul>{items}</ul>"
    return "\n".join(plain), html
