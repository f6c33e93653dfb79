"""Finish or undo what a crash or a failure left behind, so no bridge stays half-reset or down.

Recovery re-establishes its preconditions instead of trusting the record: before it touches the
database it stops the unit and proves it inactive (a reboot may have started it), and every
operation ends with the unit as the admin had it before. Then, per unfinished manifest:
- a reset whose backup was not verified changed nothing: it is rolled back;
- a reset past verification whose destructive transaction committed (its fence is gone, see
  dbio.py) is rolled forward without redoing it;
- one whose transaction did not commit is rolled forward only if the database (and for a full
  reset the data directory) is still exactly what the verified backup holds; otherwise the bridge
  ran and wrote since, rows no backup holds, and the reset is rolled back with nothing removed;
- a restore is rolled forward (its plan was confirmed), a committed restore transaction never redone;
- `rolling_back` goes on rolling back.
A reset that fails (not crashes) after its destructive step restores its own backup.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from . import lock, services
from .engine import (
    DESTRUCTIVE,
    RESET_STEPS,
    RESTORE_STEPS,
    STATE_AFTER,
    Ctx,
    committed,
    drive,
    record,
    stop_unit,
    unchanged_since_backup,
)
from .errors import ResetError
from .manifest import FINAL, NAME, Manifest, RecordError, all_for, keep_reserve, unfinished_dirs


@dataclass(frozen=True)
class Recovered:
    manifest: Manifest
    sentence: str  # what was found and done, for the admin
    finished: bool  # False: it is still unfinished on disk; the next command tries again


def describe(e: BaseException) -> str:
    """One phrase for any failure, never a traceback."""
    if isinstance(e, (ResetError, RecordError)):
        return str(e).rstrip(".")
    if isinstance(e, OSError) and e.errno:
        where = f" ({e.filename})" if e.filename else ""
        return f"{os.strerror(e.errno)}{where}"
    return f"{type(e).__name__}: {e}".rstrip(": ")


def _settle(m: Manifest) -> str:
    """The unit as the admin had it; a sentence only when that failed."""
    try:
        services.settle(m.unit, m.was_active)
    except ResetError as e:
        return f" {describe(e)}."
    return ""


def _save(m: Manifest) -> str:
    try:
        m.save()
    except RecordError as e:
        return f" Its record could not be updated ({e}); the next bridgedoctor command does it."
    return ""


def _remove_unverified(m: Manifest) -> None:
    """A backup that never verified is of no use and may be what filled the disk."""
    if m.kind != "reset" or "verify" in m.done_steps():
        return
    with contextlib.suppress(OSError):
        for p in m.dir.iterdir():
            if p.name not in (NAME, f".{NAME}.tmp") and p.is_file() and not p.is_symlink():
                p.unlink()


async def roll_back(m: Manifest, reason: str, ctx: Ctx | None = None) -> str:
    """Undo a reset or restore: put the reset's own backup back if its destructive step
    committed, else remove the fence (and an unverified backup); then the unit as the admin had
    it. Returns what is left to tell the admin beyond `reason` (empty when all went well)."""
    m.error, m.state = reason, "rolling_back"
    past = m.kind == "reset" and DESTRUCTIVE[m.mode] in m.done_steps()
    _remove_unverified(m)  # first: it may be what filled the disk the record needs
    try:
        m.save()
    except RecordError as e:
        # Without this decision on record, nothing may be undone: the fence and the record say
        # what the next recovery will find, and it goes forward from there. The unit goes back.
        tail = _settle(m)
        done = "was reset, and its backup is verified" if past else "was not changed"
        return (
            f" The bridge {done}; its record could not be updated ({e}), the next "
            f"bridgedoctor command finishes it.{tail}"
        )
    if past:
        ctx = ctx or Ctx.of(m, source=m)
        ctx.source = m
        try:
            stop_unit(ctx)  # again: a reboot may have started it
            if "restore_db" not in m.done_steps() and await committed(ctx, "restore_db"):
                record(ctx, "restore_db", STATE_AFTER["restore_db"])
            await drive(ctx, RESTORE_STEPS[m.mode][1:-1], final=False)
        except RecordError as e:
            # The fence could not go on record, so the database was not loaded: as when the
            # decision itself cannot be recorded, the record (rolling_back) says what the next
            # command does. The bridge as reset goes back as the admin had it; one whose data
            # directory is already the backup's, on a cleared database, must not run: stopped.
            if "restore_data" in m.done_steps():  # in memory even when its record failed
                return (
                    f" Its data directory was put back but not its database: its record could "
                    f"not be updated ({e}). The bridge is left stopped; the next bridgedoctor "
                    "command puts the rest back."
                )
            tail = _settle(m)
            return (
                f" Its backup could not be put back, its record could not be updated ({e}); "
                f"the next bridgedoctor command puts it back.{tail}"
            )
        except Exception as e:  # noqa: BLE001 - report, keep the backup
            m.state, m.error = "failed", f"{reason}; putting the backup back failed: {describe(e)}"
            return _save(m)  # half put back: left stopped for the admin
    elif ctx is not None and (m.kind == "restore" or "verify" in m.done_steps()):
        # A fence may exist from here on, on record or not (a crash right after it was made).
        try:
            stop_unit(ctx)
            await (await ctx.db()).drop_fence()
        except Exception:  # noqa: BLE001 - a leftover fence only costs an empty table; recovery drops it
            pass
        finally:
            await ctx.close()
    tail = _settle(m)
    m.state = "rolled_back"
    return tail + _save(m)


async def finish(m: Manifest) -> Recovered:
    try:
        sentence = await _finish(m)
    except Exception as e:  # noqa: BLE001 - recovery never crashes a command; it says what is left
        m = _reloaded(m)
        return Recovered(
            m,
            f"the interrupted {m.kind} {m.id} of {m.bridge} could not be finished "
            f"({describe(e)}); nothing more was changed. The next bridgedoctor command "
            "tries again.",
            False,
        )
    finished = _reloaded(m).state in FINAL
    return Recovered(m, sentence, finished)


def _reloaded(m: Manifest) -> Manifest:
    try:
        return Manifest.load(m.dir / NAME)
    except (OSError, ValueError, TypeError):
        return m


async def _finish(m: Manifest) -> str:
    what = f"the interrupted {m.kind} {m.id} of {m.bridge}"
    if m.state == "rolling_back" or (m.kind == "reset" and "verify" not in m.done_steps()):
        reason = m.error or "interrupted before the backup was verified; nothing was changed"
        needs_db = m.state == "rolling_back" and (
            m.kind == "restore" or "verify" in m.done_steps()
        )
        tail = await roll_back(m, reason, Ctx.of(m, source=m) if needs_db else None)
        if m.state != "rolled_back":
            return f"{what} could not be finished.{tail}"
        return f"{what} was rolled back ({reason.rstrip('.')}).{tail}"
    if m.kind == "restore":
        return await _finish_restore(m, what)
    ctx = Ctx.of(m)
    stop_unit(ctx)  # before the database is touched, whatever the manifest says
    dest = DESTRUCTIVE[m.mode]
    if dest not in m.done_steps() and await committed(ctx, dest):
        record(ctx, dest, STATE_AFTER[dest])
    if dest not in m.done_steps():
        why = await unchanged_since_backup(ctx)
        await ctx.close()
        if why:
            reason = f"{why}; nothing was removed, run the reset again"
            tail = await roll_back(m, reason, ctx)
            if m.state != "rolled_back":
                return f"{what} could not be finished.{tail}"
            return f"{what} was rolled back: {reason}.{tail}"
    try:
        await drive(ctx, RESET_STEPS[m.mode])
    except Exception as e:  # noqa: BLE001 - as in a run: undo, keep the backup
        reason = describe(e)
        tail = await roll_back(m, reason, ctx)
        if m.state == "rolling_back":  # the undo could not be recorded: the tail says so
            return f"{what} failed while being finished ({reason}).{tail}"
        if not ctx.past_return:  # its fenced transaction never committed: nothing to put back
            return f"{what} failed while being finished ({reason}); nothing was changed.{tail}"
        return f"{what} failed while being finished ({reason}); {_undone(m)}.{tail}"
    return f"{what} was finished: {m.state}{_note(m, ctx)}."


async def _finish_restore(m: Manifest, what: str) -> str:
    src = Manifest.load(Path(m.location) / NAME)
    ctx = Ctx.of(m, source=src)
    stop_unit(ctx)
    if "restore_db" not in m.done_steps() and await committed(ctx, "restore_db"):
        record(ctx, "restore_db", STATE_AFTER["restore_db"])
    try:
        await drive(ctx, RESTORE_STEPS[m.mode])
    except Exception as e:  # noqa: BLE001 - a half-restored bridge stays stopped; say how to retry
        m.state, m.error = "failed", describe(e)
        tail = _save(m)
        return (
            f"{what} failed while being finished ({m.error}); the bridge is left stopped. "
            f"Retry with 'bridgedoctor restore {m.bridge} {m.source}'.{tail}"
        )
    return f"{what} was finished: {m.state}{_note(m, ctx)}."


def _undone(m: Manifest) -> str:
    if m.state == "failed":
        return f"putting its backup back failed too, the bridge is left stopped ({m.location})"
    return "its backup was put back"


def _note(m: Manifest, ctx: Ctx) -> str:
    out = f" ({m.error})" if m.error else ""
    if ctx.unsaved is not None:
        out += f"; its record could not be updated ({ctx.unsaved}), the next command does it"
    return out


async def recover_locked(bridge_dir: Path) -> list[Recovered]:
    out = []
    for m in all_for(bridge_dir):
        if m.state not in FINAL:
            out.append(await finish(m))
    keep_reserve(bridge_dir)
    return out


async def recover(backup_root: Path, bridge: str | None = None) -> list[Recovered]:
    """Called at the start of every reset and restore, by `backups`, and by the helper at its
    start. A bridge whose lock is held is skipped: its holder finishes its own work."""
    out: list[Recovered] = []
    for d in unfinished_dirs(backup_root, Manifest, FINAL, bridge):
        try:
            with lock.held(d):
                out += await recover_locked(d)
        except ResetError:
            continue  # its lock is held: the holder finishes its own work
        except OSError as e:  # the lock file itself cannot be made (a full or failing disk)
            out += [
                Recovered(m, f"the interrupted {m.kind} {m.id} of {m.bridge} cannot be "
                          f"finished now ({describe(e)}); free the disk, then run "
                          f"'bridgedoctor backups {m.bridge}'.", False)
                for m in all_for(d) if m.state not in FINAL
            ]  # fmt: skip
    return out
