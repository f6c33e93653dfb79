"""Finish or roll back what a crash left behind, so no bridge stays half-reset.

Rule: a reset whose backup was not yet verified has changed nothing in the database, so it is
rolled back (the unit is started again if it was running). A reset past verification is rolled
forward: its remaining steps are idempotent. A restore is always rolled forward.
"""

from __future__ import annotations

from pathlib import Path

from . import backup, services
from .engine import RESET_STEPS, RESTORE_STEPS, Ctx, drive
from .errors import ResetError
from .manifest import FINAL, Manifest, all_for


async def rollback(m: Manifest, reason: str) -> None:
    """After a failure: untouched → restart; touched → put our own backup back, then restart."""
    m.error = reason
    if "verify" in m.done_steps() and any(s in m.done_steps() for s in ("apply", "clear_db")):
        try:
            await drive(Ctx.of(m, source=m), RESTORE_STEPS[m.mode][1:-1])
        except Exception as e:  # noqa: BLE001 - report, leave stopped, keep the backup
            m.state, m.error = "failed", f"{reason}; rollback failed: {type(e).__name__}"
            m.save()
            return
    m.state = "rolled_back"
    m.save()
    if m.was_active and not services.is_active(m.unit):
        services.start(m.unit)


async def finish(m: Manifest) -> Manifest:
    if m.kind == "restore":
        src = Manifest.load(Path(m.location) / "manifest.json")
        await drive(Ctx.of(m, source=src), RESTORE_STEPS[m.mode])
    elif "verify" in m.done_steps():
        await drive(Ctx.of(m), RESET_STEPS[m.mode])
    else:
        m.error = "interrupted before the backup was verified; nothing was changed"
        m.state = "rolled_back"
        m.save()
        if m.was_active and not services.is_active(m.unit):
            services.start(m.unit)
    return m


async def recover_locked(bridge_dir: Path) -> list[Manifest]:
    done = []
    for m in all_for(bridge_dir):
        if m.state not in FINAL:
            done.append(await finish(m))
    return done


async def recover(backup_root: Path, bridge: str | None = None) -> list[Manifest]:
    """Called at the start of every reset/restore and by the helper daemon at its start."""
    out: list[Manifest] = []
    if not backup_root.is_dir():
        return out
    for d in sorted(backup_root.iterdir()):
        if not d.is_dir() or (bridge and d.name != bridge):
            continue
        try:
            with backup.lock(d):
                out += await recover_locked(d)
        except ResetError:
            continue  # another process holds the lock and will finish its own work
    return out
