"""Matrix messages of the plugin's watch: what changed since the last look, in one message.

Same rules as render/matrix.py (standard library only, ships in the .mbp; escaped text; lists, no
tables). Input: the bridge reports of a `check_all` answer, with the status each had before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .matrix import STATUS_SQUARE, STATUS_WORD, Message, first_sentence, verdict
from .matrix import _e as esc
from .matrix import _status as status_of
from .neutral import neutral_message

Report = Mapping[str, Any]
_RANK = {"broken": 3, "unknown": 2, "warning": 1, "ok": 0}
HELPER_BACK = "The bridgedoctor helper answers again."


def _word(status: str, before: str) -> str:
    # "ok" after a problem is news of its own: say it plainly.
    return "healthy again" if status == "ok" and before != "ok" else STATUS_WORD[status]


def _line(report: Report, before: str) -> tuple[str, str]:
    status = status_of(report)
    name, word = report.get("bridge", "?"), _word(status, before)
    text = first_sentence(verdict(report))
    was = f" (was {STATUS_WORD.get(before, before)})"
    square = STATUS_SQUARE[status]
    return (
        f"{square} {name}: {word} — {text}{was}",
        f"{square} <b>{esc(name)}</b>: {esc(word)} — {esc(text)}{esc(was)}",
    )


@neutral_message
def changes(
    changed: Sequence[tuple[Report, str]], command: str = "!bridge", helper_back: bool = False
) -> Message:
    """One bridge changed: its verdict line; several: a tally, then one line each. Always ends
    with the command that shows the details."""
    lines = [_line(r, before) for r, before in changed]
    names = [str(r.get("bridge", "?")) for r, _ in changed]
    cmds = [f"{command} check {n}" for n in names]
    plain: list[str] = [HELPER_BACK] if helper_back else []
    html: list[str] = [f"<p>{esc(HELPER_BACK)}</p>"] if helper_back else []
    if len(lines) == 1:
        plain.append(lines[0][0])
        html.append(f"<p>{lines[0][1]}</p>")
    elif lines:
        counts: dict[str, int] = {}
        for r, before in changed:
            word = _word(status_of(r), before)
            counts[word] = counts.get(word, 0) + 1
        worst = max((status_of(r) for r, _ in changed), key=lambda s: _RANK[s])
        tally = ", ".join(f"{n} {w}" for w, n in counts.items())
        head = f"{STATUS_SQUARE[worst]} {len(lines)} bridges changed: {tally}."
        plain += [head, *(p for p, _ in lines)]
        html += [
            f"<p>{esc(head)}</p>",
            "<ul>" + "".join(f"<li>{h}</li>" for _, h in lines) + "</ul>",
        ]
    if cmds:
        plain.append("Details: " + " | ".join(cmds))
        html.append("<p>Details: " + " | ".join(f"<code>{esc(c)}</code>" for c in cmds) + "</p>")
    return "\n".join(plain), "".join(html)


@neutral_message
def helper_lost(sentence: str) -> Message:
    """The watch could not reach the helper: said once, until it answers again."""
    text = f"⬜ The watch could not check the bridges: {sentence} I will say when it works again."
    return text, f"<p>{esc(text)}</p>"
