"""bridgedoctor CLI. Exit codes: 0 all ok, 1 a problem found, 2 could not check or bad usage."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import sys
import threading
from pathlib import Path

from .. import __version__
from ..apply import cli as apply_cli
from ..diagnose import Options, check, check_all, inventory
from ..facts import ProbeError
from ..findings import exit_code
from ..render import text
from ..reset import cli as reset_cli

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, exit 2, no usage dump
        sys.stderr.write(f"bridgedoctor: {message}. See 'bridgedoctor --help'.\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bridgedoctor",
        description="Diagnose mautrix bridges deployed with matrix-docker-ansible-deploy.",
        epilog="Exit codes: 0 all checked bridges ok, 1 a problem was found, "
        "2 could not check (bad usage, unknown bridge, unreadable input), "
        "120 the answer could not be written (its reader went away).",
    )
    p.add_argument("--version", action="version", version=f"bridgedoctor {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser(
        "check",
        help="check one bridge, or all",
        description="Diagnose a bridge: its systemd unit and its last log lines since it started, "
        "config.yaml against registration.yaml and Synapse, its database, and which pickle key "
        "opens its crypto store; lead with the cause and name the vars.yml fix.",
    )
    c.add_argument(
        "name", help="bridge role name (gmessages, slack, meta-instagram, ...) or 'all'"
    )
    c.add_argument("--root", type=Path, default=Path("/matrix"), help="MDAD base data path")
    c.add_argument(
        "--db-host",
        metavar="auto|HOST[:PORT]|DIR[:PORT]",
        default="auto",
        help="connect here instead of the host in the bridge's database URI; a path is a "
        "Unix-socket directory; the port defaults to the URI's. auto (default): for URIs naming "
        "matrix-postgres, MDAD's socket directory <root>/postgres/run if it has a socket, else "
        "the matrix-postgres container's address (docker inspect)",
    )
    c.add_argument(
        "--systemd-dir",
        type=Path,
        default=Path("/etc/systemd/system"),
        help="where the bridges' unit files are",
    )
    c.add_argument(
        "--naming",
        choices=("current", "legacy", "auto"),
        default="auto",
        help="MDAD variable naming: current (matrix_bridge_mautrix_*, from 2026-07-16), legacy "
        "(matrix_mautrix_*), or auto (from the image tag the unit pins)",
    )
    c.add_argument(
        "--try-key",
        action="append",
        default=[],
        metavar="KEY",
        help="another candidate pickle key (repeatable)",
    )
    c.add_argument(
        "--reveal-keys",
        action="store_true",
        help="print non-public pickle keys instead of their fingerprints",
    )
    c.add_argument(
        "--inventory",
        type=Path,
        metavar="DIR",
        help="your MDAD inventory directory (holding host_vars/): read host_vars/*/vars.yml to "
        "tell whether each proven key is pinned, instead of warning that it could not look",
    )
    reset_cli.add_db_name(c)
    c.add_argument(
        "--deep",
        action="store_true",
        help="verify every pickled row of the crypto store (Olm and Megolm sessions, secrets) "
        "against the proven key, not a sample; reports rows under other keys (one bridge)",
    )
    c.add_argument("--json", action="store_true", help="machine-readable output")
    g = sub.add_parser(
        "logs",
        help="a bridge's last fatal and error lines since it last started",
        description="Show a bridge's last fatal and error lines since its unit last started "
        "(from journalctl, secrets scrubbed), with the unit's state. Exit codes: 0 no error "
        "line, 1 error lines shown, 2 could not read.",
    )
    g.add_argument("name", help="bridge role name (gmessages, slack, meta-instagram, ...)")
    g.add_argument("--root", type=Path, default=Path("/matrix"), help="MDAD base data path")
    g.add_argument(
        "--systemd-dir",
        type=Path,
        default=Path("/etc/systemd/system"),
        help="where the bridges' unit files are",
    )
    g.add_argument("--json", action="store_true", help="machine-readable output")
    common = reset_cli.common_parser()
    reset_cli.add_parsers(sub, common)
    apply_cli.add_parser(sub, common)
    return p


def _options(args: argparse.Namespace) -> Options:
    return Options(
        root=args.root,
        systemd_dir=args.systemd_dir,
        db_host=args.db_host,
        naming=args.naming,
        try_keys=tuple(args.try_key),
        reveal_keys=args.reveal_keys,
        inventory=args.inventory,
        db_pins=dict(args.db_name),
        deep=args.deep,
    )


async def _run_check(args: argparse.Namespace) -> int:
    opts = _options(args)
    if args.name == "all" and opts.deep:
        sys.stderr.write(
            "bridgedoctor: --deep reads every row of one store; name the bridge: "
            "bridgedoctor check NAME --deep.\n"
        )
        return EXIT_USAGE
    if opts.inventory is not None:
        inv = await inventory(opts)
        if isinstance(inv, ProbeError):  # asked for and unusable: say so rather than guess
            sys.stderr.write(f"bridgedoctor: --inventory: {inv.message}\n")
            return EXIT_USAGE
    if args.name == "all":
        fleet = await check_all(opts)
        print(json.dumps(fleet.to_dict(), indent=2) if args.json else text.fleet(fleet))
        return exit_code(fleet.reports)
    report = await check(args.name, opts)
    print(json.dumps(report.to_dict(), indent=2) if args.json else text.bridge(report))
    return exit_code([report])


async def _run_logs(args: argparse.Namespace) -> int:
    from .. import logs  # only this command reads logs

    report = await logs.recent(args.name, Options(root=args.root, systemd_dir=args.systemd_dir))
    print(json.dumps(report.to_dict(), indent=2) if args.json else text.logs(report))
    return {"ok": 0, "errors": 1}.get(report.status, 2)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors: return, don't raise
        return int(e.code or 0)
    if not args.root.is_dir():
        sys.stderr.write(f"bridgedoctor: {args.root} is not a directory; pass --root.\n")
        return EXIT_USAGE
    if args.command == "apply":
        return apply_cli.run(args)
    if args.command not in ("check", "logs"):
        return reset_cli.run(args)
    try:
        return asyncio.run(_run_check(args) if args.command == "check" else _run_logs(args))
    except KeyboardInterrupt:
        return 130


# Commands that write nothing but stdout and stderr: nothing of theirs is left to finalize.
READ_ONLY = ("check", "logs")
EXIT_UNFLUSHED = 120  # what Python's own exit gives when stdout cannot be flushed


def run() -> None:
    """The console script and `python -m`: main(), then, after a read-only command, an exit
    without the interpreter's teardown. A check loads some 300 modules, and tearing them down
    took 20 to 60 ms, as long as checking a whole fleet (docs/PERFORMANCE.md); monitoring runs
    `check` every few minutes. Resets, restores and applies exit the usual way."""
    argv = sys.argv[1:]
    try:
        code = main(argv)
    except BrokenPipeError:  # `bridgedoctor check all | head`: the answer's reader is gone
        code = EXIT_UNFLUSHED
    if argv[:1] and argv[0] in READ_ONLY:
        exit_at_once(code)
    sys.exit(code)


def exit_at_once(code: int) -> None:
    """os._exit after what an exit must still do: the atexit handlers (they stop the SQLite
    reader's fork server and its readers, and flush logging) and stdout and stderr. A thread
    still running, or a Python without the handlers' runner, gets the usual exit."""
    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    if threading.active_count() > 1 or run_handlers is None:
        sys.exit(code)
    run_handlers()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a reader that went away (`| head`)
        os._exit(EXIT_UNFLUSHED)
    os._exit(code)


if __name__ == "__main__":
    run()
