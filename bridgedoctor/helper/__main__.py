"""`bridgedoctor-helper --config FILE`.

Exit codes: 0 stopped by a signal; 78 (EX_CONFIG) a bad config or a setup the helper cannot
start with (one sentence on stderr). The unit has RestartPreventExitStatus=78: systemd does not
retry what only the admin can fix, so the unit fails once with that sentence in its journal.
Anything else (1, a crash) is restarted by Restart=on-failure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .. import __version__
from .audit import log, setup_logging
from .config import DEFAULT_CONFIG, ConfigError, load, prepare_dirs
from .listen import StartupError
from .server import Helper

EXIT_CONFIG = 78


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, EX_CONFIG, no usage dump
        sys.stderr.write(f"bridgedoctor-helper: {message}.\n")
        raise SystemExit(EXIT_CONFIG)


def _fail(message: str) -> int:
    sys.stderr.write(f"bridgedoctor-helper: {message}\n")
    return EXIT_CONFIG


async def _serve(helper: Helper) -> None:
    await helper.start()
    await helper.run_until_signal()


def main(argv: list[str] | None = None) -> int:
    p = _Parser(
        prog="bridgedoctor-helper",
        description="Answer bridgedoctor's maubot plugin over a local Unix socket.",
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config file")
    p.add_argument("--version", action="version", version=f"bridgedoctor-helper {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{install,uninstall}")
    i = sub.add_parser(
        "install",
        help="set the helper up on this MDAD host (idempotent; docs/helper.md)",
        description="Write the token, config, unit and tmpfiles entry, start the helper, check "
        "that it answers, and print the vars.yml lines for maubot and the plugin settings. "
        "Running it again changes nothing.",
    )
    i.add_argument("--root", type=Path, default=Path("/matrix"), help="MDAD base data path")
    i.add_argument(
        "--allow-reset",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="turn resets from the room on (config and unit drop-in) or off; default: as before",
    )
    sub.add_parser("uninstall", help="stop the helper and remove what install added")
    args = p.parse_args(argv)
    if args.command is not None:
        from .install import run

        return run(args.command, getattr(args, "root", Path("/matrix")), args.allow_reset
                   if args.command == "install" else None)  # fmt: skip
    setup_logging()
    try:
        cfg = load(args.config)
        prepare_dirs(cfg)
        helper = Helper(cfg)
    except ConfigError as e:
        return _fail(str(e))
    try:
        asyncio.run(_serve(helper))
    except StartupError as e:
        return _fail(str(e))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        log.info("interrupted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
