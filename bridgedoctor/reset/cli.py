"""`reset`, `backups` and `restore` subcommands (wired into cli/main.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dbpin import DbPin, parse_pins
from ..diagnose import Options
from ..render.neutral import neutral
from .errors import ResetError
from .plan import DEFAULT_BACKUP_ROOT

if TYPE_CHECKING:  # the reset machinery loads when a reset command runs, not for `check`
    from .plan import Plan

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    r = sub.add_parser(
        "reset",
        parents=[common],
        help="back up, then reset a bridge's crypto store (or everything)",
        description="Stop the bridge, back up and verify, reset, start. Undo with 'restore'.",
    )
    r.add_argument("name", help="bridge role name")
    r.add_argument("--mode", choices=("crypto", "full"), default="crypto")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    b = sub.add_parser("backups", parents=[common], help="list a bridge's reset backups")
    b.add_argument("name", help="bridge role name")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    s = sub.add_parser("restore", parents=[common], help="put a reset backup back exactly")
    s.add_argument("name", help="bridge role name")
    s.add_argument("id", help="backup id, as 'bridgedoctor backups NAME' lists it")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def add_db_name(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db-name",
        action="append",
        type=_pin,
        default=[],
        metavar="BRIDGE=DATABASE[:ROLE]",
        help="a custom setup's database (and role) for BRIDGE, when not MDAD's "
        "matrix_mautrix_<bridge>; resets touch no other database (repeatable)",
    )


def _pin(value: str) -> tuple[str, DbPin]:
    try:
        ((bridge, pin),) = parse_pins([value], "--db-name").items()
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).rstrip(".")) from None
    return bridge, pin


def common_parser() -> argparse.ArgumentParser:
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument("--root", type=Path, default=Path("/matrix"), help="MDAD base data path")
    c.add_argument(
        "--db-host", metavar="auto|HOST[:PORT]|DIR[:PORT]", default="auto", help="as for check"
    )
    c.add_argument("--systemd-dir", type=Path, default=Path("/etc/systemd/system"))
    c.add_argument(
        "--backup-dir",
        type=Path,
        default=DEFAULT_BACKUP_ROOT,
        help=f"where backups go, one directory per bridge (default {DEFAULT_BACKUP_ROOT})",
    )
    add_db_name(c)
    return c


def ask(text: str, yes: bool) -> bool:
    if yes:
        return True
    print(neutral(text))
    if not sys.stdin.isatty():
        sys.stderr.write("bridgedoctor: not a terminal; re-run with --yes to confirm.\n")
        return False
    try:
        return input("Type 'yes' to continue: ").strip() == "yes"
    except EOFError:
        return False


def run(args: argparse.Namespace) -> int:
    from . import run as runner

    opts = Options(
        root=args.root,
        systemd_dir=args.systemd_dir,
        db_host=args.db_host,
        db_pins=dict(args.db_name),
    )
    root: Path = args.backup_dir
    try:
        if args.command == "backups":
            return _backups(args.name, root, args.json)
        if args.command == "reset":

            def confirm(plan: Plan) -> bool:
                return ask(plan.render(), args.yes)

            m = asyncio.run(
                runner.reset(
                    args.name, args.mode, opts, root, confirm, progress=_terminal("reset", args)
                )
            )
            print(f"Reset {m.bridge} ({m.mode}) done. Backup: {m.location}")
            print(f"Undo: bridgedoctor restore {m.bridge} {m.id}")
            if m.mode == "full":
                print("Now log in to the remote network again (the bridge's login command).")
            _note(m.error)
            return EXIT_OK
        if args.id.partition("-")[2].startswith("apply"):  # the undo of `bridgedoctor apply`
            from ..apply.cli import undo

            return undo(args.name, args.id, root, args.yes)
        m = asyncio.run(
            runner.restore(
                args.name,
                args.id,
                opts,
                root,
                lambda p: ask(p.render(), args.yes),
                progress=_terminal("restore", args),
            )
        )
        print(f"Restored {m.bridge} from {m.source}.")
        _note(m.error)
        return EXIT_OK
    except ResetError as e:
        return refused(e)


def refused(e: ResetError) -> int:
    """A refusal as the CLI says it: one neutralised line on stderr; exit 2 for bad input,
    else 1."""
    sys.stderr.write(f"bridgedoctor: {neutral(str(e), keep_newlines=False)}\n")
    return EXIT_USAGE if e.usage else EXIT_REFUSED


def _terminal(kind: str, args: argparse.Namespace) -> Callable[[dict[str, Any]], None] | None:
    """Progress lines on stderr, when a person is watching it (not in logs or pipes)."""
    if not sys.stderr.isatty():
        return None
    from ..render.matrix_reset import progress

    def show(state: dict[str, Any]) -> None:
        sys.stderr.write(progress(kind, args.name, state)[0] + "\n")

    return show


def _note(text: str) -> None:
    if text:
        # It may name files the bridge wrote: neutralised like every bridge-chosen text.
        print(neutral(f"Note: {text[:1].upper()}{text[1:]}.", keep_newlines=False))


def _backups(name: str, root: Path, as_json: bool) -> int:
    """List a bridge's backups, after finishing whatever a crash left unfinished (a host
    without the helper has no other moment that would bring a stopped bridge back)."""
    from ..diagnose import lookup
    from ..findings import Finding
    from ..knowledge import load
    from . import lock
    from .manifest import all_for
    from .recover import recover

    spec = lookup(name, load())
    if isinstance(spec, Finding):
        sys.stderr.write(f"bridgedoctor: {spec.summary}\n")
        return EXIT_USAGE
    bridge_dir = root / spec.name
    if lock.is_held(bridge_dir):
        notes, pending = [f"a reset or restore of {spec.name} is running now."], False
    else:
        results = asyncio.run(recover(root, spec.name))
        notes = [r.sentence for r in results]
        pending = any(not r.finished for r in results)
    from ..apply.record import all_for as applies

    items: list[Any] = [m for m in all_for(bridge_dir) if m.kind == "reset"]
    items += applies(bridge_dir)
    items.sort(key=lambda m: m.id)
    out = sys.stderr if as_json else sys.stdout
    for note in notes:
        out.write(
            neutral(f"bridgedoctor: {note[:1].upper()}{note[1:]}", keep_newlines=False) + "\n"
        )
    if as_json:
        keys = ("id", "mode", "state", "created_at", "requested_by", "location")
        print(json.dumps([{k: getattr(m, k) for k in keys} for m in items], indent=2))
    else:
        if not items:
            print(f"No backups of {spec.name} in {bridge_dir}.")
        for m in items:
            print(f"{m.id}  {m.mode:6}  {m.state:12}  {m.requested_by}  {m.location}")
    return EXIT_REFUSED if pending else EXIT_OK
