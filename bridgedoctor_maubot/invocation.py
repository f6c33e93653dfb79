"""What `!bridge ...` asks for. Parsed here rather than with maubot subcommands, because maubot
answers unknown subcommands and missing arguments itself (help page, usage line) before any
handler runs: that would show the command set to everyone. Here nothing is said to a
non-admin except the one refusal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridgedoctor.protocol import BRIDGE_RE

COMMAND = "!bridge"
Action = Literal["help", "list", "check", "check_all", "invalid"]

HELP: tuple[tuple[str, str], ...] = (
    (f"{COMMAND} list", "the mautrix bridges deployed on this server"),
    (f"{COMMAND} check <name>", "diagnose one bridge and show the vars.yml fix"),
    (f"{COMMAND} check all", "one line per bridge, plus a block pinning every proven key"),
    (f"{COMMAND} help", "this list"),
)


@dataclass(frozen=True)
class Invocation:
    action: Action
    bridge: str | None = None
    problem: str | None = None  # for "invalid": one sentence saying what was wrong


def parse(args: str | None) -> Invocation:
    """Parse the words after `!bridge` (subcommands are case-insensitive)."""
    words = (args or "").split()
    if not words or words[0].lower() == "help":
        return Invocation("help")
    sub, rest = words[0].lower(), words[1:]
    if sub == "list" and not rest:
        return Invocation("list")
    if sub == "check":
        if len(rest) != 1:
            return Invocation(
                "invalid", problem=f"Usage: {COMMAND} check <name>, or {COMMAND} check all."
            )
        name = rest[0].lower()
        if name == "all":
            return Invocation("check_all")
        if not BRIDGE_RE.fullmatch(name):
            return Invocation(
                "invalid",
                problem=f"'{name[:40]}' is not a bridge name; {COMMAND} list shows the "
                "deployed bridges.",
            )
        return Invocation("check", bridge=name)
    return Invocation("invalid", problem=f"Unknown command; {COMMAND} help lists the commands.")
