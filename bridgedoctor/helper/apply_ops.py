"""Apply over the socket: `apply_plan` (read-only) answers the plan and its digest; `apply`
carries the digest back, the helper plans again and refuses unless it matches. The undo is a
`restore` of the apply's id (reset_ops hands those ids here). Only with allow_reset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..apply import run as apply_run
from ..apply.errors import ApplyError
from ..apply.plan import ApplyPlan
from ..apply.record import ApplyRecord, summary
from ..diagnose import Options
from ..protocol import Request
from ..reset.run import RestorePlan
from .audit import log
from .reset_ops import confirmed, in_worker, refuse_changed, shown


def result(r: ApplyRecord) -> dict[str, Any]:
    return {
        **summary(r),
        "unit": r.unit,
        "config": r.config,
        "key_to": r.key_to,
        "vars_yml": r.extra.get("vars_yml", ""),
        "pin_steps": r.extra.get("pin_steps", []),
    }


async def run(req: Request, name: str, root: Path, opts: Options) -> tuple[dict[str, Any], str]:
    """`name` is the discovered bridge; `root` the backup_dir. The caller checked allow_reset
    and turns an ApplyError (a ResetError) into a `reset_refused` answer."""
    if req.op == "apply_plan":
        _, plan, _ = await in_worker(lambda: apply_run.prepare(name, opts, root))
        return shown(plan.to_dict()), "planned"
    before = confirmed(req)

    def confirm(plan: ApplyPlan) -> bool:
        if plan.digest != req.digest:
            raise ApplyError(refuse_changed(before, plan.to_dict(), "the apply plan differs"))
        return True

    log.warning("apply to %s confirmed by %s", name, req.requested_by)
    r = await in_worker(
        lambda: apply_run.apply(name, opts, root, confirm, req.requested_by, req.plan)
    )
    return result(r), "done"


def undo_plan(name: str, ident: str, root: Path) -> dict[str, Any]:
    return apply_run.undo_plan(name, ident, root).to_dict()


async def undo(req: Request, name: str, root: Path) -> tuple[dict[str, Any], str]:
    assert req.backup is not None
    ident = req.backup
    before = confirmed(req)

    def confirm(plan: RestorePlan) -> bool:
        if plan.digest != req.digest:
            raise ApplyError(refuse_changed(before, plan.to_dict(), "the restore plan differs"))
        return True

    log.warning("undo of apply %s to %s confirmed by %s", ident, name, req.requested_by)
    r = await in_worker(lambda: apply_run.undo(name, ident, root, confirm, req.requested_by))
    return {**result(r), "source": r.id}, "done"
