"""Run the steps of a reset or restore under its manifest.

Each step is recorded in the manifest only after it has finished, so a crash leaves the manifest
at most one step behind reality. Preconditions are re-established, never trusted from the record:
whenever a step that touches the database or the data directory is still to run, the unit is
stopped and proven inactive first (a reboot may have started it since it was recorded stopped),
and `start` always puts the unit back as the admin had it.

The one step of each operation that cannot be repeated blindly, its destructive database
transaction, is fenced (dbio.FENCE): the fence's token is recorded before the transaction and the
transaction removes it, so recovery knows whether it committed even when the bridge wrote in
between. Any write failure of the manifest before that point aborts (the fence must be on record);
after it, the operation goes on to its end and the missing record is reported (`ctx.unsaved`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..dbpin import DbPin
from ..diagnose import Options
from . import backup, covered, crypto, full, paths, safetar, services
from .dbio import Db, MissingDatabase, file_sum, open_db, snapshot
from .errors import ResetError
from .manifest import Manifest, RecordError, State, has_reserve, now
from .progress import Progress
from .target import Bridge, resolve

# Test hook at the process boundary: the process dies right after the named step has finished
# and before the manifest records it, the worst moment for a crash. Documented in docs/reset.md.
CRASH_ENV = "BRIDGEDOCTOR_CRASH_AT"

RESET_STEPS = {
    "crypto": ("stop", "backup", "verify", "apply", "start"),
    "full": ("stop", "backup", "verify", "clear_db", "clear_data", "start"),
}
# Full: the data directory first, so the last destructive step is the fenced database one.
RESTORE_STEPS = {
    "crypto": ("stop", "restore_db", "start"),
    "full": ("stop", "restore_data", "restore_db", "start"),
}
# A reset's point of no return: its fenced transaction.
DESTRUCTIVE = {"crypto": "apply", "full": "clear_db"}
STATE_AFTER: dict[str, State] = {
    "verify": "backed_up",
    "apply": "applied",
    "clear_db": "applied",
    "restore_db": "applied",
}
UNIT_STEPS = ("stop", "start")


def crashpoint(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os._exit(137)


def options_of(m: Manifest) -> Options:
    o = m.extra["options"]
    pins = {b: DbPin(**p) for b, p in (o.get("db_pins") or {}).items()}
    return Options(
        root=Path(o["root"]), systemd_dir=Path(o["systemd_dir"]), db_host=o["db_host"],
        db_pins=pins,
    )  # fmt: skip


def options_dict(opts: Options) -> dict[str, Any]:
    return {
        "root": str(opts.root), "systemd_dir": str(opts.systemd_dir), "db_host": opts.db_host,
        "db_pins": {b: asdict(p) for b, p in opts.db_pins.items()},
    }  # fmt: skip


@dataclass
class Ctx:
    m: Manifest
    bridge: Bridge
    source: Manifest | None = None  # for a restore: the reset whose backup is put back
    progress: Progress = field(default_factory=lambda: Progress(None))
    _db: Db | None = field(default=None, repr=False)
    # The manifest write that failed after the point of no return (the work went on).
    unsaved: RecordError | None = None
    # A restore began replacing the data directory (every check before it had passed).
    data_written: bool = False
    # Whether the record reserve existed when this run began (manifest.keep_reserve).
    reserve: bool = False

    @classmethod
    def of(cls, m: Manifest, source: Manifest | None = None) -> Ctx:
        return cls(m, resolve(m.bridge, options_of(m)), source)

    async def db(self) -> Db:
        if self._db is None:
            try:
                self._db = await open_db(self.bridge.db)
            except MissingDatabase as e:
                raise ResetError(f"{e}.") from None
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def last_fenced(self) -> str:
        """After this step has committed, the operation only goes forward."""
        return DESTRUCTIVE[self.m.mode] if self.m.kind == "reset" else "restore_db"

    @property
    def past_return(self) -> bool:
        return self.last_fenced in self.m.done_steps()


def fence_token(m: Manifest, step: str) -> str:
    return f"{m.id}:{step}"


def fenced(ctx: Ctx, step: str) -> bool:
    """Which steps are one destructive transaction (or file rename) with a fence."""
    if step in ("apply", "clear_db"):
        return True
    if step != "restore_db":
        return False
    t = ctx.bridge.db
    if ctx.m.mode == "crypto" or not isinstance(t, full.SqliteTarget):
        return True
    # A SQLite file inside the data directory comes back with the data tar, not here.
    return not t.path.is_relative_to(ctx.bridge.data_dir) and t.path.is_file()


async def fence_stands(ctx: Ctx, step: str) -> bool:
    """Whether the fence set for `step` is still there: its transaction did not commit."""
    try:
        return await (await ctx.db()).has_fence(fence_token(ctx.m, step))
    except ResetError:
        return False  # a SQLite file removed by a full reset took its fence with it


async def _stands(ctx: Ctx, step: str) -> bool:
    """After a fenced step failed: True only if the fence is provably still there."""
    await ctx.close()  # the failed connection may be unusable
    try:
        return await fence_stands(ctx, step)
    except Exception:  # noqa: BLE001 - unknown counts as committed: undoing is then safe
        return False


async def committed(ctx: Ctx, step: str) -> bool:
    """For recovery: did the fenced transaction of `step` commit before the crash?"""
    if ctx.m.extra.get("fence") != fence_token(ctx.m, step):
        return False  # the fence was never on record, so the transaction never began
    return not await fence_stands(ctx, step)


def stop_unit(ctx: Ctx) -> None:
    """Stop the unit and prove it, then check the bridge's paths did not move meanwhile (the
    container could, until it was gone; reset/paths.py starts the unit again on refusal)."""
    services.stop(ctx.m.unit)
    ctx.bridge.after_stop(whole_tree=ctx.m.mode == "full", was_active=ctx.m.was_active)


def record(ctx: Ctx, step: str, state: State | None = None) -> None:
    try:
        ctx.m.step(step, state)
    except RecordError as e:
        if not ctx.past_return:
            raise
        ctx.unsaved = e


async def drive(ctx: Ctx, steps: tuple[str, ...], final: bool = True) -> None:
    """Run what is not done yet of `steps`; `final`: then the operation is done."""
    m = ctx.m
    try:
        for index, step in enumerate(steps, 1):
            if step == "stop":
                if any(s not in m.done_steps() for s in steps if s not in UNIT_STEPS):
                    ctx.progress.step(step, index, len(steps))
                    stop_unit(ctx)  # whatever the manifest says
                    crashpoint(step)
                    record(ctx, step)
                continue
            if step == "start":
                ctx.progress.step(step, index, len(steps))
                services.settle(m.unit, m.was_active)
                crashpoint(step)
                record(ctx, step)
                continue
            if step in m.done_steps():
                continue
            if ctx.reserve and not ctx.past_return and not has_reserve(m.dir.parent):
                raise ResetError(
                    f"no space left in {m.dir.parent} (the room kept for the record had to be "
                    "used)"
                )
            ctx.progress.step(step, index, len(steps))
            if not fenced(ctx, step):
                await STEP[step](ctx)
            else:
                await (await ctx.db()).set_fence(fence_token(m, step))
                m.extra["fence"] = fence_token(m, step)
                m.save()  # on record before the transaction, or no transaction
                try:
                    await STEP[step](ctx)
                except Exception:
                    if not await _stands(ctx, step):  # it committed after all (or may have)
                        m.steps.append({"step": step, "at": now()})
                    raise
            crashpoint(step)
            record(ctx, step, STATE_AFTER.get(step))
        if final:
            m.state = "done"
            try:
                m.save()
            except RecordError as e:
                ctx.unsaved = e  # every step has run; only the record is missing
    finally:
        await ctx.close()


async def _backup(ctx: Ctx) -> None:
    m, dest = ctx.m, ctx.m.dir
    db = await ctx.db()
    if m.mode == "crypto":
        # No snapshot: a crypto reset is verified file by file against the dump and never
        # compares whole-database digests (a sorted pass over every table, a third of the time).
        m.tables = await crypto.backup(db, dest, ctx.progress)
        return
    m.snapshot = {t: {"rows": s.rows, "sha256": s.sha256} for t, s in (await snapshot(db)).items()}
    info = await full.backup_db(db, dest)
    m.tables, m.extra["db"] = info.pop("files", {}), info
    data = ctx.bridge.data_dir
    m.data_dir = str(data)
    m.data_digest = backup.dir_digest(data)
    m.data_tar_sha256 = backup.tar_dir(data, dest / "data.tar")
    db_path = getattr(ctx.bridge.db, "path", None)
    if db_path is not None and not db_path.is_relative_to(data):
        m.extra["db"]["sqlite_sha256"] = backup.copy_file(db_path, dest / full.SQLITE_COPY)


async def _verify(ctx: Ctx) -> None:
    m, db = ctx.m, await ctx.db()
    if m.mode == "crypto":
        await crypto.verify(db, m.dir, m.tables)
        return
    await full.verify_db(db, m.dir, {"files": m.tables})
    backup.verify_tar(m.dir / "data.tar", m.data_tar_sha256, Path(m.data_dir))
    sqlite_sha = m.extra.get("db", {}).get("sqlite_sha256")
    db_path = getattr(ctx.bridge.db, "path", None)
    if sqlite_sha is not None and db_path is not None:
        backup.verify_copy(m.dir / full.SQLITE_COPY, sqlite_sha, db_path)
    now = {t: {"rows": s.rows, "sha256": s.sha256} for t, s in (await snapshot(db)).items()}
    if now != m.snapshot:
        raise ResetError("the database changed while it was backed up; aborted.")


async def unchanged_since_backup(ctx: Ctx) -> str | None:
    """For recovery before the point of no return: None if the verified backup still describes
    the bridge exactly (so going on loses nothing), else why not."""
    m = ctx.m
    for rec in m.tables.values():
        if file_sum(m.dir / rec["file"]) != (rec["rows"], rec["sha256"]):
            return f"the backup file {rec['file']} no longer reads back as verified"
    if m.mode == "full":
        if backup.dir_digest(Path(m.data_dir)) != m.data_digest:
            return "the data directory changed after it was backed up (the bridge ran meanwhile)"
        try:
            backup.verify_tar_sha(m.dir / "data.tar", m.data_tar_sha256)
        except ResetError:
            return "the backup data.tar no longer reads back as verified"
    db = await ctx.db()
    changed = "the database changed after it was backed up (the bridge ran meanwhile)"
    if m.mode == "crypto":
        # Exactly the rows the delete would remove must be the backed-up ones; the bridge's
        # other tables may have moved on, the delete does not touch them.
        for rec in m.tables.values():
            if await db.dump_sum(rec["table"], rec["where"]) != (rec["rows"], rec["sha256"]):
                return changed
        return None
    now = {t: {"rows": s.rows, "sha256": s.sha256} for t, s in (await snapshot(db)).items()}
    return changed if now != m.snapshot else None


async def _apply(ctx: Ctx) -> None:
    db = await ctx.db()
    async with db.transaction():
        await crypto.apply(db, await db.tables())
        await db.drop_fence()


async def _clear_db(ctx: Ctx) -> None:
    t = ctx.bridge.db
    if isinstance(t, full.SqliteTarget):
        await ctx.close()
        full.clear_sqlite(t)  # the file goes first, and its fence with it
    else:
        await full.clear_db(await ctx.db())  # DROP OWNED takes the fence too


async def _clear_data(ctx: Ctx) -> None:
    kept = covered.clear_covered(ctx.bridge.data_dir, ctx.m.dir / "data.tar")
    if kept:
        shown = ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else "")
        ctx.m.error = (
            f"kept what the bridge wrote in {ctx.bridge.data_dir} after its database was "
            f"cleared (it ran meanwhile): {shown}"
        )


async def _restore_db(ctx: Ctx) -> None:
    src = ctx.source
    assert src is not None
    t = ctx.bridge.db
    if src.mode == "full" and isinstance(t, full.SqliteTarget):
        # Outside the data directory the store has a copy of its own (inside, the data tar
        # brought it back). A store a full reset removed has no fence to set: the rename is
        # then done again on recovery, with the same copy.
        copy = src.dir / full.SQLITE_COPY
        if copy.exists() and not t.path.is_relative_to(ctx.bridge.data_dir):
            await ctx.close()
            _replace_file(copy, t.path)
        return
    db = await ctx.db()
    async with db.transaction():
        if src.mode == "crypto":
            await crypto.restore(db, src.dir, src.tables, ctx.progress)
        else:
            await full.restore_db(db, src.dir, {**src.extra["db"], "files": src.tables})
        await db.drop_fence()
        if src.mode == "full":
            await _check_restored(db, src)


async def _check_restored(db: Db, src: Manifest) -> None:
    """Inside a full restore's transaction: every table must be the backup's, or nothing
    commits. (A crypto restore's files are checked as they stream in, dbio.load.)"""
    present = set(await db.tables())
    for table in sorted(present | set(src.snapshot)):
        now = None
        if table in present:
            s = await db.digest(table)
            now = {"rows": s.rows, "sha256": s.sha256}
        if now != src.snapshot.get(table):
            raise ResetError(f"the restored table {table} differs from its backup; aborted.")


def _replace_file(copy: Path, dest: Path) -> None:
    """Put a SQLite file back in one rename (the old file's fence goes with it), written and
    renamed below a descriptor of its directory, never through a link (reset/paths.py)."""
    tmp = f".{dest.name}.bridgedoctor"
    with safetar.dir_fd(dest.parent) as dirfd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dirfd)  # left by a crash
        paths.copy_new(copy, dest.parent / tmp)
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest.name + suffix, dir_fd=dirfd)
        os.rename(tmp, dest.name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        os.fsync(dirfd)


async def _restore_data(ctx: Ctx) -> None:
    src = ctx.source
    assert src is not None
    await ctx.close()  # a SQLite database is replaced by the untar
    tar = src.dir / "data.tar"
    backup.verify_tar_sha(tar, src.data_tar_sha256)
    full.check_files(src.dir, {**src.extra.get("db", {}), "files": src.tables})
    ctx.data_written = True
    backup.untar_into(tar, ctx.bridge.data_dir)
    if backup.dir_digest(ctx.bridge.data_dir) != src.data_digest:
        raise ResetError("the restored data directory differs from the backup.", touched=True)


STEP = {
    "backup": _backup,
    "verify": _verify,
    "apply": _apply,
    "clear_db": _clear_db,
    "clear_data": _clear_data,
    "restore_db": _restore_db,
    "restore_data": _restore_data,
}
