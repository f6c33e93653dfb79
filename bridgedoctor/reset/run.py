"""Entry points: prepare a plan, run a reset, run a restore (each under the bridge's lock)."""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..diagnose import Options
from . import backup, crypto, lock, services
from .engine import RESET_STEPS, RESTORE_STEPS, Ctx, drive, options_dict
from .errors import ResetError
from .manifest import FINAL, Manifest, RecordError, all_for, has_reserve, now
from .plan import Mode, Plan, digest_of, make
from .progress import Progress, Sink
from .recover import describe, recover_locked, roll_back
from .target import Bridge, resolve

Confirm = Callable[[Plan], bool]
# The plan is shown and confirmed before the lock is taken (planning never writes); under the
# lock it is made again, after any interrupted reset was finished, and must be the same.
CHANGED = "the bridge changed while the plan was being confirmed; nothing was changed. Plan again."


async def prepare(
    name: str, mode: Mode, opts: Options, backup_root: Path, ident: str | None = None
) -> tuple[Bridge, Plan]:
    """Everything read-only: where the bridge is, what it holds, whether the backup fits.
    `ident` re-plans under the id of a plan shown before (so its digest can match)."""
    bridge = resolve(name, opts)
    return bridge, await _plan(bridge, mode, backup_root, ident)


async def _plan(bridge: Bridge, mode: Mode, backup_root: Path, ident: str | None) -> Plan:
    if ident is not None and (backup_root / bridge.name / ident).exists():
        raise ResetError(f"backup {ident} of {bridge.name} already exists; plan again.")
    from ..dbpin import IdentityRefused
    from . import full
    from .dbio import MissingDatabase, PgDb, UnreadableStore, open_db

    try:
        db = await open_db(bridge.db, read_only=True)
    except MissingDatabase as e:
        raise ResetError(f"{e}; nothing was changed.", usage=True) from None
    except (IdentityRefused, UnreadableStore) as e:
        raise ResetError(f"cannot use {bridge.db.location}: {e}", usage=True) from None
    except Exception as e:  # noqa: BLE001 - any connect failure is bad input here
        msg = f"cannot open {bridge.db.location} ({type(e).__name__})."
        raise ResetError(msg, usage=True) from None
    try:
        tables = await db.tables()
        recovery_key = await crypto.has_recovery_key(db, tables)
        if mode == "crypto":
            need = await db.size([t for t in tables if t in crypto.CLEARED])
        else:
            need = await db.size(None) + backup.tree_size(bridge.data_dir)
            if isinstance(db, PgDb):  # what the backup step would refuse: say so before a stop
                await full.check_owner(db)
                await full.dumper_for(db)
    finally:
        await db.close()
    bridge_dir = backup_root / bridge.name
    # Planning writes nothing, not even the backup directory: measure where it would go.
    backup.ensure_space(_existing(bridge_dir), need)
    return make(
        bridge.name,
        mode,
        bridge.unit,
        _was_active(bridge, bridge_dir),
        bridge.db.location,
        bridge.data_dir,
        bridge_dir,
        tables,
        ident,
        recovery_key,
    )


def _was_active(bridge: Bridge, bridge_dir: Path) -> bool:
    """Whether the unit runs, as it will once any interrupted reset or restore is recovered
    (recovery puts it back as the admin had it before that one). A unit the last operation
    left stopped because it failed half-way counts as the admin had it before that one: the
    restore that finishes the job starts it again."""
    ops = all_for(bridge_dir)
    pending = [m for m in ops if m.state not in FINAL]
    if pending:
        return pending[0].was_active
    if services.is_active(bridge.unit):
        return True
    if not ops:
        return False
    last = max(ops, key=lambda m: m.created_at)  # restores sort by their backup's name
    return last.state == "failed" and last.was_active


def _existing(path: Path) -> Path:
    """The nearest existing ancestor: the file system a directory not yet made would be on."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def requester() -> str:
    try:
        return f"{getpass.getuser()} (uid {os.getuid()})"
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


async def reset(
    name: str,
    mode: Mode,
    opts: Options,
    backup_root: Path,
    confirm: Confirm,
    requested_by: str | None = None,
    plan_id: str | None = None,
    progress: Sink | None = None,
) -> Manifest:
    """`progress` gets the step and rows so far while it runs (reset/progress.py)."""
    bridge = resolve(name, opts)
    bridge_dir = backup_root / bridge.name
    shown = await _plan(bridge, mode, backup_root, plan_id)
    if not confirm(shown):
        raise ResetError("not confirmed; nothing was changed.")
    with _locked(bridge_dir):
        await _recovered(bridge_dir)
        plan = await _plan(bridge, mode, backup_root, shown.id)
        if plan.digest != shown.digest:
            raise ResetError(CHANGED)
        m = Manifest(
            id=plan.id,
            kind="reset",
            bridge=bridge.name,
            mode=mode,
            requested_by=requested_by or requester(),
            created_at=now(),
            location=str(plan.backup_dir),
            unit=bridge.unit,
            was_active=plan.was_active,
            database=bridge.db.location,
            engine="sqlite" if hasattr(bridge.db, "path") else "postgres",
            data_dir=str(bridge.data_dir),
            extra={
                "options": options_dict(opts),
                "plan": plan.render(),
                "after": list(plan.after),
            },
        )
        _start_record(m)
        ctx = Ctx(m, bridge, progress=Progress(progress), reserve=has_reserve(bridge_dir))
        try:
            await drive(ctx, RESET_STEPS[mode])
        except Exception as e:  # noqa: BLE001 - whatever failed, leave no half-reset bridge
            reason = describe(e)
            changed = ctx.past_return
            tail = await roll_back(m, reason, ctx)
            raise ResetError(_after_rollback(m, reason, changed) + tail, touched=changed) from e
        _unsaved_note(m, ctx)
        return m


@contextlib.contextmanager
def _locked(bridge_dir: Path) -> Iterator[None]:
    try:
        bridge_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with lock.held(bridge_dir):
            yield
    except OSError as e:
        raise ResetError(f"cannot use {bridge_dir} ({describe(e)}); nothing was changed.") from e


async def _recovered(bridge_dir: Path) -> None:
    """Recover first; refuse to start anything new over an operation still unfinished."""
    for r in await recover_locked(bridge_dir):
        if not r.finished:
            raise ResetError(f"{r.sentence} Nothing new was started.")


def _start_record(m: Manifest) -> None:
    """The operation's directory and first manifest: nothing is stopped before they exist."""
    try:
        m.dir.mkdir(mode=0o700)
        m.save()
    except OSError as e:
        with contextlib.suppress(OSError):
            for p in m.dir.iterdir():
                p.unlink()
            m.dir.rmdir()
        raise ResetError(f"{describe(e)}; nothing was changed.") from e


def _unsaved_note(m: Manifest, ctx: Ctx) -> None:
    """Done, but the last records could not be written: say so with the result (m.error)."""
    if ctx.unsaved is not None:
        note = f"its record could not be updated ({ctx.unsaved}); the next command does it"
        m.error = f"{m.error}; {note}" if m.error else note


@dataclass(frozen=True)
class RestorePlan:
    bridge: str
    backup: str
    mode: str
    unit: str
    was_active: bool
    location: str
    backed_up_at: str
    put_back: str
    lost: str
    database: str = ""  # what the restore writes, shown before it is confirmed
    data_dir: str = ""

    @property
    def digest(self) -> str:
        return digest_of(asdict(self))

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "digest": self.digest}

    def render(self) -> str:
        start = "start it" if self.was_active else "leave it stopped (it is not running now)"
        fate = "not touched" if self.mode == "crypto" else "replaced by the backup's"
        return (
            f"Restore {self.bridge} from {self.backup} ({self.mode}): stop {self.unit}, put back "
            f"{self.put_back} from {self.location}, then {start}. Lost: {self.lost}.\n"
            f"  database:       {self.database}\n"
            f"  data directory: {self.data_dir} ({fate})"
        )


def plan_restore(name: str, ident: str, opts: Options, backup_root: Path) -> RestorePlan:
    """Read-only: the backup to put back, and what putting it back means."""
    bridge = resolve(name, opts)
    return _restore_plan(bridge, _source(bridge, ident, backup_root))


def _source(bridge: Bridge, ident: str, backup_root: Path) -> Manifest:
    """The reset whose verified backup `ident` names."""
    bridge_dir = backup_root / bridge.name
    src = next((m for m in all_for(bridge_dir) if m.id == ident and m.kind == "reset"), None)
    if src is None:
        raise ResetError(f"no backup {ident} of {bridge.name} in {bridge_dir}.", usage=True)
    if "verify" not in src.done_steps():
        raise ResetError(f"backup {ident} was never completed and verified; cannot restore.")
    return src


def _restore_plan(bridge: Bridge, src: Manifest) -> RestorePlan:
    crypto = src.mode == "crypto"
    return RestorePlan(
        bridge=bridge.name,
        backup=src.id,
        mode=src.mode,
        unit=bridge.unit,
        was_active=_was_active(bridge, Path(src.location).parent),
        location=src.location,
        backed_up_at=src.created_at,
        put_back="the crypto rows" if crypto else "the whole database and data directory",
        lost=(
            "the crypto device and keys the bridge made since the reset"
            if crypto
            else "every login, portal and message the bridge stored since the reset"
        ),
        database=bridge.db.location,
        data_dir=str(bridge.data_dir),
    )


def _after_rollback(m: Manifest, reason: str, changed: bool) -> str:
    reason = reason.rstrip(".")
    if m.state == "failed":
        return (
            f"reset failed ({reason}) and putting the backup back failed too; the bridge is left "
            f"stopped. The backup is intact in {m.location}: "
            f"bridgedoctor restore {m.bridge} {m.id}."
        )
    if m.state != "rolled_back":  # the undo could not be recorded: roll_back's tail says how
        return f"reset failed ({reason})."
    if changed:
        return f"reset failed ({reason}); its backup was put back, the bridge is as before."
    running = f" {m.unit} is running again." if m.was_active else ""
    if reason.lower().endswith("nothing was changed"):
        return reason + "." + running
    return f"reset failed ({reason}); nothing was changed.{running}"


async def restore(
    name: str,
    ident: str,
    opts: Options,
    backup_root: Path,
    confirm: Callable[[RestorePlan], bool],
    requested_by: str | None = None,
    progress: Sink | None = None,
) -> Manifest:
    bridge = resolve(name, opts)
    bridge_dir = backup_root / bridge.name
    shown = _restore_plan(bridge, _source(bridge, ident, backup_root))
    if not confirm(shown):
        raise ResetError("not confirmed; nothing was changed.")
    with _locked(bridge_dir):
        await _recovered(bridge_dir)
        src = _source(bridge, ident, backup_root)
        plan = _restore_plan(bridge, src)
        if plan.digest != shown.digest:
            raise ResetError(CHANGED)
        op_dir = bridge_dir / f"{src.id}.restore-{now().replace(':', '')}"
        m = Manifest(
            id=op_dir.name,
            kind="restore",
            bridge=bridge.name,
            mode=src.mode,
            requested_by=requested_by or requester(),
            created_at=now(),
            location=src.location,
            unit=bridge.unit,
            was_active=plan.was_active,
            database=bridge.db.location,
            source=src.id,
            extra={"options": options_dict(opts), "op_dir": str(op_dir)},
        )
        _start_record(m)
        ctx = Ctx(m, bridge, src, Progress(progress), reserve=has_reserve(bridge_dir))
        try:
            await drive(ctx, RESTORE_STEPS[src.mode])
        except Exception as e:  # noqa: BLE001
            reason = describe(e)
            if not (ctx.past_return or ctx.data_written):
                # Nothing was written (a refusal after the stop, a failed load that rolled
                # back): the unit goes back as it was.
                tail = await roll_back(m, reason, ctx)
                verb = "refused" if isinstance(e, ResetError) and not e.touched else "failed"
                if not reason.endswith("nothing was changed"):
                    reason += "; nothing was changed"
                raise ResetError(f"restore {verb} ({reason}).{tail}") from e
            m.state, m.error = "failed", reason
            with contextlib.suppress(RecordError):
                m.save()
            raise ResetError(
                f"restore failed ({reason}); the bridge is left stopped, half restored. Retry "
                f"with 'bridgedoctor restore {bridge.name} {src.id}'.",
                touched=True,
            ) from e
        _unsaved_note(m, ctx)
        return m
