"""The operations, each bounded to what the helper itself discovered on the host."""

from __future__ import annotations

import asyncio
from typing import Any

from .. import logs, verify
from ..diagnose import BRIDGE_TIMEOUT, Options, check, check_all
from ..knowledge import Knowledge
from ..probes import host
from ..protocol import E_UNKNOWN_BRIDGE, ProtocolError, Request
from ..reset.progress import Sink
from . import reset_ops
from .config import HelperConfig


def options(cfg: HelperConfig, deep: bool = False) -> Options:
    # try_keys and reveal_keys stay at their defaults: a chat client never gets key material.
    return Options(
        root=cfg.root,
        systemd_dir=cfg.systemd_dir,
        db_host=cfg.db_host,
        naming=cfg.naming,
        inventory=cfg.inventory,
        db_pins=cfg.databases,
        # check_all answers for every bridge within the request's own time limit.
        bridge_timeout=min(BRIDGE_TIMEOUT, cfg.request_timeout * 0.8),
        deep=deep,
    )


async def discovered(cfg: HelperConfig, kb: Knowledge) -> list[str]:
    return await asyncio.to_thread(host.discover, cfg.root, cfg.systemd_dir, kb)


async def run(
    req: Request, cfg: HelperConfig, kb: Knowledge, progress: Sink | None = None
) -> tuple[dict[str, Any], str]:
    """The result object and a short outcome for the audit line. `progress` (reset and restore
    only) gets the running step and rows."""
    if req.op == "list":
        names = await discovered(cfg, kb)
        return {"bridges": names}, "ok"
    if req.op == "check_all":
        fleet = await check_all(options(cfg), kb)
        statuses = sorted({r.status for r in fleet.reports})
        return fleet.to_dict(), ",".join(statuses) or "empty"
    names = await discovered(cfg, kb)
    # Use our own string, never the client's: only names from discovery reach path building.
    name = next((n for n in names if n == req.bridge), None)
    if name is None:
        raise ProtocolError(E_UNKNOWN_BRIDGE, "No such bridge is deployed on this host.")
    if req.op == "check":
        report = await check(name, options(cfg, req.deep), kb)
        return report.to_dict(), report.status
    if req.op == "logs":
        lines = await logs.recent(name, options(cfg), kb)
        return lines.to_dict(), lines.status
    if req.op == "verify":  # read-only: follow the unit after a change
        followed = await verify.follow(name, options(cfg), cfg.verify_seconds, kb)
        return followed.to_dict(), followed.state
    return await reset_ops.run(req, name, cfg.backup_dir, options(cfg), cfg.allow_reset, progress)
