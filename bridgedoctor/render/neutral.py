"""Text a bridge chose, made harmless to show in a terminal or a Matrix room.

Table names, database_owner, device ids, file names and URI parts come from files and databases
the bridge's container writes. Shown raw, a right-to-left override could make a line read
differently from what it is (Trojan Source), a terminal escape could rewrite the screen, and a
newline could forge a line of its own. Every renderer passes its output through `neutral` (our
own text has none of these characters, so only the bridge's is changed), and probes pass single
line values through `one_line`. Each such character becomes a visible escape (`\\u202e`).

Standard library only: this module ships inside the maubot plugin.
"""

from __future__ import annotations

import functools
import unicodedata

# Not typing's TYPE_CHECKING: the SQLite reader's fork server imports this module, and
# importing typing is a tenth of its start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import ParamSpec

    P = ParamSpec("P")

# Category Cf holds the bidi controls (U+202A-202E, U+2066-2069, U+200E/F, U+061C), zero-width
# characters and the BOM; line and paragraph separators break lines like a newline does.
_SEPARATORS = ("Zl", "Zp")


def _bad(ch: str, keep_newlines: bool) -> bool:
    if ch == "\n":
        return not keep_newlines
    o = ord(ch)
    if o < 0x20 or 0x7F <= o < 0xA0:
        return True
    if o < 0x7F:
        return False
    cat = unicodedata.category(ch)
    return cat == "Cf" or cat in _SEPARATORS


def neutral(text: str, keep_newlines: bool = True) -> str:
    """Control, bidi and invisible format characters as visible escapes; newlines kept unless
    `keep_newlines` is False."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if _bad(ch, keep_newlines):
            o = ord(ch)
            out.append(
                f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"
            )
        else:
            out.append(ch)
    return "".join(out)


def one_line(text: str, limit: int = 200) -> str:
    """A value from a bridge's files or database, for one line: neutral, no newline, bounded."""
    text = neutral(text, keep_newlines=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def neutral_message(fn: Callable[P, tuple[str, str]]) -> Callable[P, tuple[str, str]]:
    """For a renderer returning a Matrix (plain body, HTML) pair: both neutralised."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> tuple[str, str]:
        plain, html = fn(*args, **kwargs)
        return neutral(plain), neutral(html)

    return wrapper
