"""What `!bridge ...` asks for. Parsed here rather than with maubot subcommands, because maubot
answers unknown subcommands and missing arguments itself (help page, usage line) before any
handler runs: that would show the command set to everyone. Here nothing is said to a
non-admin except the one refusal."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bridgedoctor.protocol import BACKUP_ID_RE, BRIDGE_RE

COMMAND = "!bridge"
Action = Literal[
    "help",
    "list",
    "check",
    "check_all",
    "logs",
    "reset",
    "backups",
    "restore",
    "apply",
    "confirm",
    "cancel",
    "invalid",
]
CODE_RE = re.compile(r"^[a-z0-9]{6}$")

HELP: tuple[tuple[str, str], ...] = (
    (f"{COMMAND} list", "the mautrix bridges deployed on this server"),
    (f"{COMMAND} check <name>", "diagnose one bridge and show the vars.yml fix"),
    (
        f"{COMMAND} check <name> deep",
        "also verify every stored session against the proven key (slower)",
    ),
    (f"{COMMAND} check all", "one line per bridge, plus a block pinning every proven key"),
    (f"{COMMAND} logs <name>", "its last fatal and error lines since it last started"),
    (f"{COMMAND} reset <name> [full]", "back up, then reset its crypto store (or everything)"),
    (f"{COMMAND} backups <name>", "the reset backups kept on the host"),
    (f"{COMMAND} restore <name> <id>", "put a backup back exactly (undoes a reset or an apply)"),
    (f"{COMMAND} apply <name>", "write the proven key into config.yaml, restart, follow it"),
    (f"{COMMAND} confirm <code>", "confirm a plan (or react ✅ to it)"),
    (f"{COMMAND} cancel <code>", "drop a plan (or react ❌ to it)"),
    (f"{COMMAND} help", "this list"),
)


@dataclass(frozen=True)
class Invocation:
    action: Action
    bridge: str | None = None
    mode: str = "crypto"
    backup: str | None = None  # a backup id (restore)
    code: str | None = None  # a confirmation code (confirm, cancel)
    deep: bool = False  # check: every pickled row, not a sample
    problem: str | None = None  # for "invalid": one sentence saying what was wrong


def _name(word: str) -> str | Invocation:
    name = word.lower()
    if BRIDGE_RE.fullmatch(name):
        return name
    return Invocation(
        "invalid",
        problem=f"'{name[:40]}' is not a bridge name; {COMMAND} list shows the deployed bridges.",
    )


def _usage(text: str) -> Invocation:
    return Invocation("invalid", problem=f"Usage: {COMMAND} {text}.")


def parse(args: str | None) -> Invocation:
    """Parse the words after `!bridge` (subcommands are case-insensitive)."""
    words = (args or "").split()
    if not words or words[0].lower() == "help":
        return Invocation("help")
    sub, rest = words[0].lower(), words[1:]
    if sub == "list" and not rest:
        return Invocation("list")
    if sub == "check":
        flags = [w.lower() for w in rest[1:]]
        if len(rest) not in (1, 2) or flags not in ([], ["deep"]):
            return _usage(f"check <name> [deep], or {COMMAND} check all")
        if rest[0].lower() == "all":
            if flags:
                return _usage(f"check <name> deep: one bridge at a time ({COMMAND} list)")
            return Invocation("check_all")
        name = _name(rest[0])
        if isinstance(name, Invocation):
            return name
        return Invocation("check", bridge=name, deep=bool(flags))
    if sub == "logs":
        if len(rest) != 1:
            return _usage("logs <name>")
        name = _name(rest[0])
        return name if isinstance(name, Invocation) else Invocation("logs", bridge=name)
    if sub == "reset":
        modes = [w.lower() for w in rest[1:]]
        if not rest or len(rest) > 2 or modes not in ([], ["full"], ["crypto"]):
            return _usage("reset <name> (crypto store only), or reset <name> full (everything)")
        name = _name(rest[0])
        if isinstance(name, Invocation):
            return name
        return Invocation("reset", bridge=name, mode=modes[0] if modes else "crypto")
    if sub == "apply":
        if len(rest) != 1:
            return _usage("apply <name>")
        name = _name(rest[0])
        return name if isinstance(name, Invocation) else Invocation("apply", bridge=name)
    if sub == "backups":
        if len(rest) != 1:
            return _usage("backups <name>")
        name = _name(rest[0])
        return name if isinstance(name, Invocation) else Invocation("backups", bridge=name)
    if sub == "restore":
        if len(rest) != 2:
            return _usage(f"restore <name> <id> ({COMMAND} backups <name> lists the ids)")
        name = _name(rest[0])
        if isinstance(name, Invocation):
            return name
        if not BACKUP_ID_RE.fullmatch(rest[1]):
            return Invocation(
                "invalid",
                problem=f"'{rest[1][:40]}' is not a backup id; {COMMAND} backups {name} "
                "lists them.",
            )
        return Invocation("restore", bridge=name, backup=rest[1])
    if sub in ("confirm", "cancel"):
        if len(rest) != 1 or not CODE_RE.fullmatch(rest[0].lower()):
            return _usage(f"{sub} <code>, with the code from the plan message")
        return Invocation(sub, code=rest[0].lower())  # type: ignore[arg-type]
    return Invocation("invalid", problem=f"Unknown command; {COMMAND} help lists the commands.")
