"""`bridgedoctor apply NAME`: write the proven key into config.yaml (wired into cli/main.py).
Its undo is `bridgedoctor restore NAME ID` with the apply's id (reset/cli.py hands it here)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from ..diagnose import Options
from ..reset.cli import EXIT_OK, ask, refused
from ..reset.errors import ResetError

if TYPE_CHECKING:  # the reset machinery (asyncpg included) loads only when a command runs
    from ..reset.run import RestorePlan
    from .plan import ApplyPlan

FOLLOW = 30.0  # seconds the unit is followed after a change, as the helper's verify_seconds


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    a = sub.add_parser(
        "apply",
        parents=[common],
        help="write the proven pickle key into a bridge's config.yaml, then restart it",
        description="When a key is proven to open the bridge's crypto store but config.yaml has "
        "another, write the proven key into config.yaml (that one value, nothing else), with a "
        "backup, then restart the bridge. The next playbook run renders config.yaml again: pin "
        "the key in vars.yml (the snippet shown) to make the fix last. "
        "Undo: bridgedoctor restore NAME ID.",
    )
    a.add_argument("name", help="bridge role name")
    a.add_argument(
        "--try-key",
        action="append",
        default=[],
        metavar="KEY",
        help="another candidate key (e.g. from an old config.yaml backup)",
    )
    a.add_argument(
        "--reveal-keys", action="store_true", help="print non-public keys instead of fingerprints"
    )
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    a.add_argument(
        "--follow",
        type=float,
        default=FOLLOW,
        metavar="SECONDS",
        help=f"after the restart, watch the unit this long (default {FOLLOW:g}; 0: do not)",
    )


def follow(name: str, opts: Options, seconds: float) -> None:
    """Say how the unit runs after the change, as the room's follow-up does."""
    if seconds <= 0:
        return
    from ..render.matrix_apply import verified
    from ..verify import follow as follow_unit

    print(f"Following {name} for up to {seconds:g} s ...", flush=True)
    v = asyncio.run(follow_unit(name, opts, seconds))
    print(verified(v.to_dict(), "bridgedoctor")[0])


def run(args: argparse.Namespace) -> int:
    from . import run as runner

    opts = Options(
        root=args.root,
        systemd_dir=args.systemd_dir,
        db_host=args.db_host,
        try_keys=tuple(args.try_key),
        reveal_keys=args.reveal_keys,
    )

    def confirm(plan: ApplyPlan) -> bool:
        return ask(plan.render(), args.yes)

    try:
        r = asyncio.run(runner.apply(args.name, opts, args.backup_dir, confirm))
    except ResetError as e:
        return refused(e)
    print(f"{r.config} now holds the proven key {r.key_to}; {r.unit} restarted.")
    snippet = r.extra.get("vars_yml") or ""
    if snippet:
        print("Make it last: the next playbook run renders config.yaml again. Pin the key:")
        print("\n".join(f"    {line}" for line in snippet.splitlines()))
    print(f"Backup: {r.backup}")
    print(f"Undo: bridgedoctor restore {r.bridge} {r.id}")
    follow(r.bridge, opts, args.follow)
    return EXIT_OK


def undo(name: str, ident: str, backup_root: Path, yes: bool) -> int:
    from . import run as runner

    def confirm(plan: RestorePlan) -> bool:
        return ask(plan.render(), yes)

    try:
        r = asyncio.run(runner.undo(name, ident, backup_root, confirm))
    except ResetError as e:
        return refused(e)
    print(f"{r.config} is back as before apply {r.id}; {r.unit} restarted.")
    print(f"See how it runs: bridgedoctor logs {r.bridge}")
    return EXIT_OK
