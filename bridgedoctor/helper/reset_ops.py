"""Reset, backups and restore over the socket: plan first, then run only the plan confirmed.

The room path is two requests. `reset_plan` / `restore_plan` are read-only and answer the plan
with its digest; after the admin confirms, `reset` / `restore` carry that digest back, and the
helper re-plans and refuses if anything changed since (the unit started, a table appeared, the
backup went away). The work itself runs in a worker thread with its own event loop, because it
waits on systemctl, tar and fsync: checks keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from ..apply.record import all_for as applied_all
from ..apply.record import summary as applied
from ..diagnose import Options
from ..protocol import E_BAD_REQUEST, E_RESET, ProtocolError, Request
from ..reset import run as runner
from ..reset.changes import what_changed
from ..reset.errors import ResetError
from ..reset.manifest import FINAL, Manifest, all_for
from ..reset.plan import Mode, Plan
from ..reset.progress import Sink
from ..reset.recover import recover
from .audit import log

T = TypeVar("T")

OFF = (
    "Resets, restores and applies are turned off on this host: set allow_reset: true in the "
    "helper's config and install its reset drop-in (docs/helper.md), then restart "
    "bridgedoctor-helper."
)
PENDING = (
    "interrupted; the helper finishes it when resets are allowed, or on the host: "
    "bridgedoctor backups {name}"
)
CHANGED = "the bridge changed since the plan was shown ({what}); nothing was changed. Ask again."
# The plans this helper showed, by digest, so a refused confirmation can say what changed
# (reset/changes.py). Memory only: after a restart the refusal says only that the plan differs.
SHOWN_KEPT = 64
_shown: OrderedDict[str, dict[str, Any]] = OrderedDict()


def shown(plan: dict[str, Any]) -> dict[str, Any]:
    """Answer a plan, remembering it (the oldest of more than SHOWN_KEPT is forgotten)."""
    _shown[str(plan["digest"])] = plan
    _shown.move_to_end(str(plan["digest"]))
    while len(_shown) > SHOWN_KEPT:
        _shown.popitem(last=False)
    return plan


def confirmed(req: Request) -> dict[str, Any] | None:
    """The plan this helper showed with the confirmed digest, if it still remembers it. Taken
    on the event loop, before the work's thread starts: only the loop touches the memory."""
    return _shown.get(str(req.digest))


def refuse_changed(before: dict[str, Any] | None, now: dict[str, Any], otherwise: str) -> str:
    """The refusal of a confirmation whose plan is `now`, not `before` (the plan shown)."""
    return CHANGED.format(what=what_changed(before, now) if before is not None else otherwise)


async def in_worker(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in a thread of its own (never cancelled half-way)."""
    return await asyncio.to_thread(lambda: asyncio.run(make()))  # type: ignore[arg-type]


def _refusal(e: ResetError) -> ProtocolError:
    text = str(e)
    return ProtocolError(E_RESET, text[:1].upper() + text[1:])


def _mode(req: Request) -> Mode:
    return "full" if req.mode == "full" else "crypto"


def summary(m: Manifest) -> dict[str, Any]:
    return {
        "id": m.id,
        "bridge": m.bridge,
        "kind": m.kind,
        "mode": m.mode,
        "state": m.state,
        "created_at": m.created_at,
        "requested_by": m.requested_by,
        "location": m.location,
        "source": m.source,
        "error": m.error,
        "steps": [s["step"] for s in m.steps],
    }


async def run(
    req: Request,
    name: str,
    root: Path,
    opts: Options,
    allowed: bool,
    progress: Sink | None = None,
) -> tuple[dict[str, Any], str]:
    """`name` is the discovered bridge (never the client's string); `root` the backup_dir;
    `allowed` the allow_reset setting (listing backups is read-only and always allowed);
    `progress` gets a running reset's or restore's step and rows."""
    if req.op == "backups":
        return await _backups(name, root, allowed)
    if not allowed:
        raise ProtocolError(E_RESET, OFF)
    _check_ident(req)
    from . import apply_ops  # it builds on this module's worker and refusal wording

    try:
        if req.op in ("apply_plan", "apply"):
            return await apply_ops.run(req, name, root, opts)
        if req.backup is not None and _kind(req.backup) == "apply":
            if req.op == "restore_plan":  # the undo of an apply
                ident = req.backup
                undo = await asyncio.to_thread(apply_ops.undo_plan, name, ident, root)
                return shown(undo), "planned"
            return await apply_ops.undo(req, name, root)
        if req.op == "reset_plan":
            _, plan = await in_worker(lambda: runner.prepare(name, _mode(req), opts, root))
            return shown(plan.to_dict()), "planned"
        if req.op == "restore_plan":
            assert req.backup is not None
            ident = req.backup
            rplan = await asyncio.to_thread(runner.plan_restore, name, ident, opts, root)
            return shown(rplan.to_dict()), "planned"
        if req.op == "reset":
            return await _reset(req, name, opts, root, progress)
        if req.op == "restore":
            return await _restore(req, name, opts, root, progress)
    except ResetError as e:
        raise _refusal(e) from None
    raise ProtocolError(E_BAD_REQUEST, "The helper does not offer that operation.")


def _kind(ident: str) -> str:
    """What a backup id (protocol.BACKUP_ID_RE) backs up: crypto, full or apply."""
    return ident.split("-", 1)[1].split(".")[0]


def _check_ident(req: Request) -> None:
    """A reset's plan id names its mode, an apply's says apply: one cannot pose as the other."""
    if req.plan is None:
        return
    if _kind(req.plan) != ("apply" if req.op == "apply" else req.mode):
        raise ProtocolError(E_BAD_REQUEST, f"The plan id does not name a plan for {req.op}.")


async def _backups(name: str, root: Path, allowed: bool) -> tuple[dict[str, Any], str]:
    """Listing finishes what a crash left (when resets are allowed: the unit then has the
    rights); otherwise an unfinished one says where to finish it."""
    notes: list[str] = []
    if allowed:
        notes = [r.sentence for r in await in_worker(lambda: recover(root, name))]
    items = []
    for m in all_for(root / name):
        if m.kind != "reset":
            continue
        item = summary(m)
        if m.state not in FINAL:
            item["error"] = PENDING.format(name=name)
        items.append(item)
    items += [applied(r) for r in applied_all(root / name)]
    items.sort(key=lambda b: str(b["id"]))
    return {"bridge": name, "backups": items, "recovered": notes}, f"{len(items)} backups"


async def _reset(
    req: Request, name: str, opts: Options, root: Path, progress: Sink | None
) -> tuple[dict[str, Any], str]:
    mode = _mode(req)
    before = confirmed(req)

    def confirm(plan: Plan) -> bool:
        if plan.digest != req.digest:
            raise ResetError(refuse_changed(before, plan.to_dict(), "its plan differs"))
        return True

    log.warning("reset of %s (%s) confirmed by %s", name, mode, req.requested_by)
    m = await in_worker(
        lambda: runner.reset(name, mode, opts, root, confirm, req.requested_by, req.plan, progress)
    )
    return {**summary(m), "after": m.extra.get("after", [])}, "done"


async def _restore(
    req: Request, name: str, opts: Options, root: Path, progress: Sink | None
) -> tuple[dict[str, Any], str]:
    assert req.backup is not None
    ident = req.backup
    before = confirmed(req)

    def confirm(plan: runner.RestorePlan) -> bool:
        if plan.digest != req.digest:
            raise ResetError(refuse_changed(before, plan.to_dict(), "the restore plan differs"))
        return True

    log.warning("restore of %s from %s confirmed by %s", name, ident, req.requested_by)
    m = await in_worker(
        lambda: runner.restore(name, ident, opts, root, confirm, req.requested_by, progress)
    )
    return summary(m), "done"
